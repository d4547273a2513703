"""The builder that plans, renders and writes a music corpus, resuming what exists."""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import Callable, Sequence

from .. import midi_styles as ms
from .chorales import chorale_piece, list_chorales
from .common import (ANALYSIS_VERSION, CACHE_DIR, CHORALE_TEMPO, MANIFEST_COLUMNS, SETTINGS_FILE, MusicCorpusError,
                     default_warn, require, seeded_rng)
from .options import MusicCorpusOptions, package_versions
from .planning import (PlannedItem, assign_piece_keys, assign_target_tonics, generate_labelled_piece, split_groups,
                       transpose_interval)
from .rendering import resolve_soundfonts
from .workers import Workers, analyse_job, piece_job, render_job, write_text_atomic


class MusicCorpusBuilder:
    """Plans, renders and writes one corpus; :func:`build_music_corpus` is the usual entry."""

    def __init__(self, output_dir: str | os.PathLike, options: MusicCorpusOptions,
                 warn: Callable[[str], None] | None = None, echo: Callable[[str], None] | None = None):
        self.output_dir = Path(output_dir).expanduser().resolve()
        self.options = options.checked()
        self.warn = warn or default_warn
        self.echo = echo or (lambda message: print(message, file=sys.stderr))
        self.soundfonts = resolve_soundfonts(self.options.soundfonts)
        self.stats: dict = {}

    # ---------------------------------------------------------------- chorales

    def _cache_path(self) -> Path:
        return self.output_dir / CACHE_DIR / "bach_chorales.json"

    def _load_cache(self) -> dict:
        path = self._cache_path()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        if data.get("version") != ANALYSIS_VERSION or data.get("music21") != package_versions()["music21"]:
            return {}
        return data.get("chorales", {})

    def _save_cache(self, cache: dict) -> None:
        path = self._cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {"version": ANALYSIS_VERSION, "music21": package_versions()["music21"], "chorales": cache}
        write_text_atomic(path, json.dumps(payload, sort_keys=True, separators=(",", ":")))

    def select_chorales(self, workers: Workers) -> list[dict]:
        """Analysed chorales with a label, half major, half minor where possible.

        Candidates are visited in a seeded order and analysed in batches (cached) until both
        modes have their quota, so a small corpus does not analyse all of them.
        """
        wanted = int(self.options.chorales)
        if wanted == 0:
            return []
        names = list_chorales()
        order = sorted(names)
        seeded_rng(self.options.seed, "chorale-order").shuffle(order)
        quota = {"major": (wanted + 1) // 2, "minor": wanted // 2}
        cache = self._load_cache()
        chosen: dict[str, list[dict]] = {"major": [], "minor": []}
        spare: list[dict] = []  # ok chorales over their mode's quota, in visiting order
        rejected: Counter = Counter()
        # batches big enough to keep the workers busy, small enough not to analyse far more than needed
        batch = max(2 * workers.jobs, min(4 * workers.jobs, wanted + 2))
        position = 0
        while position < len(order) and any(len(chosen[m]) < quota[m] for m in quota):
            names_now = order[position:position + batch]
            position += len(names_now)
            missing = [n for n in names_now if n not in cache]
            if missing:
                for info in workers.map(analyse_job, missing):
                    if info["status"] == "error":
                        raise MusicCorpusError(info["reason"])
                    cache[info["name"]] = info
                self._save_cache(cache)
            for name in names_now:
                info = cache[name]
                if info["status"] != "ok":
                    rejected[info["reason"]] += 1
                elif len(chosen[info["mode"]]) < quota[info["mode"]]:
                    chosen[info["mode"]].append(info)
                else:
                    spare.append(info)
        # a mode short of its quota is made up with the other mode
        short = sum(quota[m] - len(chosen[m]) for m in quota)
        result = chosen["major"] + chosen["minor"] + spare[:short]
        self.stats["chorales_analysed"] = position
        self.stats["chorales_rejected"] = dict(rejected)
        if len(result) < wanted:
            self.warn(f"only {len(result)} of {len(names)} chorales have a reliable key label "
                      f"(asked for {wanted}); using them all")
        return sorted(result, key=lambda info: info["name"])

    # ---------------------------------------------------------------- plan

    def plan(self, chorales: Sequence[dict]) -> list[PlannedItem]:
        opts = self.options
        items: list[PlannedItem] = []
        if chorales:
            short = {c["name"]: c["name"].split("/")[-1] for c in chorales}
            splits = split_groups([short[c["name"]] for c in chorales], [c["mode"] for c in chorales],
                                  opts.split_fractions, opts.seed, "chorale")
            triples = [(c["name"], c["mode"], splits[short[c["name"]]]) for c in chorales]
            tonics = assign_target_tonics(triples, opts.transpositions, opts.seed)
            for c in chorales:
                for target in tonics[c["name"]]:
                    shift = transpose_interval(c["tonic"], target)
                    items.append(PlannedItem(
                        id=f"chorale/{short[c['name']]}_t{shift:+d}", source="chorale", split=splits[short[c["name"]]],
                        group=short[c["name"]], soundfont="", origin=c["name"], tonic=target, mode=c["mode"],
                        transpose=shift,
                    ))
        if opts.pieces:
            styles = list(opts.styles)
            index_style = [(i, styles[i % len(styles)]) for i in range(opts.pieces)]
            groups = [f"{style}_{i:05d}" for i, style in index_style]
            splits = split_groups(groups, [s for _, s in index_style], opts.split_fractions, opts.seed, "generated")
            keys = assign_piece_keys([(i, s, splits[g]) for (i, s), g in zip(index_style, groups)], opts.seed)
            for (i, style), group in zip(index_style, groups):
                tonic, mode = keys[i]
                items.append(PlannedItem(
                    id=f"generated/{style}/{group}", source="generated", split=splits[group], group=group,
                    soundfont="", origin=style, tonic=tonic, mode=mode, index=i,
                ))
        # soundfonts in turn within each source, in id order
        names = [p.name for p in self.soundfonts]
        result = []
        for source in ("chorale", "generated"):
            these = sorted((it for it in items if it.source == source), key=lambda it: it.id)
            for j, it in enumerate(these):
                result.append(PlannedItem(**{**asdict(it), "soundfont": names[j % len(names)]}))
        ids = [it.id for it in result]
        if len(set(ids)) != len(ids):  # cannot happen: chorale names and indices are unique
            raise MusicCorpusError("duplicate item ids in the plan")
        return sorted(result, key=lambda it: it.id)

    def pieces(self, items: Sequence[PlannedItem], chorales: dict[str, dict], workers: Workers | None = None,
               ) -> dict[str, ms.Piece]:
        """The piece of every item (generated ones in parallel: they are redrawn to fit their key)."""
        opts = self.options
        generated = [it for it in items if it.source == "generated"]
        args = [(it.origin, opts.seed, it.id, opts.piece_seconds, it.tonic, it.mode) for it in generated]
        made = (workers or Workers(1)).map(piece_job, args, chunksize=16)
        result = {it.id: piece for it, piece in zip(generated, made)}
        result.update({it.id: self.piece_of(it, chorales) for it in items if it.source == "chorale"})
        return result

    def piece_of(self, item: PlannedItem, chorales: dict[str, dict]) -> ms.Piece:
        opts = self.options
        rng = seeded_rng(opts.seed, "item", item.id)
        if item.source == "chorale":
            ensemble, programs = rng.choice(list(ms.SATB_ENSEMBLES.items()))
            tempo = rng.randint(*CHORALE_TEMPO)
            return chorale_piece(chorales[item.origin], transpose=item.transpose, programs=programs, tempo=tempo,
                                 seconds=opts.chorale_seconds, rng=rng, ensemble=ensemble)
        return generate_labelled_piece(item.origin, opts.seed, item.id, seconds=opts.piece_seconds, tonic=item.tonic,
                                       mode=item.mode)

    # ---------------------------------------------------------------- settings

    def _check_settings(self) -> None:
        path = self.output_dir / SETTINGS_FILE
        settings = self.options.settings(self.soundfonts)
        if path.is_file() and not self.options.overwrite:
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except ValueError:
                old = None
            if old != settings:
                changed = sorted(k for k in set(settings) | set(old or {}) if (old or {}).get(k) != settings.get(k))
                raise MusicCorpusError(
                    f"{self.output_dir} holds a music corpus built with other settings ({', '.join(changed)}); "
                    "use a new output folder, the same settings, or overwrite (--overwrite) to rebuild"
                )
        self.output_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(path, json.dumps(settings, indent=1, sort_keys=True) + "\n")

    # ---------------------------------------------------------------- build

    def build(self) -> Path:
        opts = self.options
        self._check_settings()
        jobs = opts.jobs or os.cpu_count() or 1
        workers = Workers(jobs)
        clock = time.monotonic()
        timings = self.stats.setdefault("timings", {})

        def lap(name: str) -> None:
            nonlocal clock
            now = time.monotonic()
            timings[name] = round(now - clock, 2)
            clock = now

        try:
            chorales = self.select_chorales(workers)
            lap("chorale_analysis_s")
            by_name = {c["name"]: c for c in chorales}
            items = self.plan(chorales)
            pieces = self.pieces(items, by_name, workers)
            lap("plan_s")
            sf_paths = {p.name: os.fspath(p) for p in self.soundfonts}
            todo = []
            for it in items:
                wav = self.output_dir / it.path
                mid = wav.with_suffix(".mid") if opts.midi else None
                if opts.overwrite or not wav.is_file() or (mid is not None and not mid.is_file()):
                    todo.append((it.id, pieces[it.id], sf_paths[it.soundfont], os.fspath(wav),
                                 os.fspath(mid) if mid else None, int(opts.sample_rate), int(opts.render_rate)))
            # longest first keeps the workers busy to the end
            todo.sort(key=lambda job: (-job[1].seconds * max(1, sum(len(t.notes) for t in job[1].tracks)), job[0]))
            failures: dict[str, str] = {}
            bar = None
            if opts.progress and todo:
                from tqdm import tqdm

                bar = tqdm(total=len(todo), unit="file", desc="music corpus", file=sys.stderr)
            for item_id, error in workers.unordered(render_job, todo):
                if error is not None:
                    failures[item_id] = error
                    self.warn(f"{item_id}: {error}")
                if bar is not None:
                    bar.update(1)
            if bar is not None:
                bar.close()
            lap("render_s")
        finally:
            workers.close()
        self.stats.update(rendered=len(todo) - len(failures), kept=len(items) - len(todo), failed=len(failures),
                          jobs=jobs)
        manifest = self._write_manifest([it for it in items if it.id not in failures], pieces)
        lap("manifest_s")
        if failures:
            shown = "; ".join(f"{k}: {v}" for k, v in sorted(failures.items())[:5])
            raise MusicCorpusError(
                f"{len(failures)} of {len(items)} item(s) failed ({shown}); the manifest lists the others; "
                "rerun the same command to retry them", manifest=manifest, failures=failures)
        return manifest

    def _write_manifest(self, items: Sequence[PlannedItem], pieces: dict[str, ms.Piece]) -> Path:
        import soundfile as sf

        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(MANIFEST_COLUMNS)
        total = 0.0
        for it in items:
            piece = pieces[it.id]
            info = sf.info(os.fspath(self.output_dir / it.path))
            seconds = info.frames / info.samplerate
            total += seconds
            writer.writerow([
                it.path, it.id, it.source, it.key, piece.style, ";".join(piece.tags),
                ";".join(str(p) for p in piece.programs), it.soundfont, f"{piece.tempo:g}", it.split, "music",
                f"{seconds:.3f}", it.group, it.transpose,
            ])
        manifest = self.output_dir / "manifest.csv"
        write_text_atomic(manifest, buffer.getvalue())
        self.stats.update(items=len(items), hours=total / 3600.0,
                          keys=len({it.key for it in items}), splits=dict(Counter(it.split for it in items)))
        return manifest


def build_music_corpus(output_dir: str | os.PathLike, *, seed: int | None = None, seconds: float | None = None,
                       options: MusicCorpusOptions | None = None, warn: Callable[[str], None] | None = None,
                       **settings) -> Path:
    """Build (or resume) a music corpus in ``output_dir``; returns the manifest's path.

    Settings are :class:`MusicCorpusOptions` fields, given as keywords or as ``options``
    (keywords win; ``seed`` defaults to 0, or to ``options.seed``); ``seconds`` sets both
    ``chorale_seconds`` and ``piece_seconds``. Raises :class:`MusicCorpusError` for bad settings, missing packages,
    a folder built with other settings, or failed items (after writing the manifest of
    the rest).
    """
    base = asdict(options) if options is not None else {}
    base.update(settings)
    if seed is not None or options is None:
        base["seed"] = 0 if seed is None else seed
    if seconds is not None:
        base.setdefault("chorale_seconds", seconds)
        base.setdefault("piece_seconds", seconds)
        if "chorale_seconds" not in settings:
            base["chorale_seconds"] = seconds
        if "piece_seconds" not in settings:
            base["piece_seconds"] = seconds
    unknown = sorted(set(base) - set(MusicCorpusOptions.__dataclass_fields__))
    if unknown:
        raise TypeError(f"unknown setting(s): {', '.join(unknown)}")
    for module in ("pretty_midi", "music21", "tinysoundfont"):
        require(module)
    return MusicCorpusBuilder(output_dir, MusicCorpusOptions(**base), warn=warn).build()
