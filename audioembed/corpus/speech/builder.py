"""The builder that plans, renders and writes a speech corpus, resuming what exists."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from .common import MANIFEST, PRETRAIN_MANIFEST, SETTINGS_FILE, SPLITS, CorpusError, Warn, default_warn
from .engines import Engine, default_engines
from .options import SpeechCorpusOptions
from .planning import CorpusPlan, PlannedUtterance, plan_speech_corpus
from .prompts import read_prompts
from .recordings import real_recordings, real_row, render_real
from .rendering import render_batch, utterance_row, write_manifest
from .speakers import Speaker, default_speakers, resolve_speakers


@dataclass
class BuildSummary:
    manifest: Path
    pretrain_manifest: Path
    utterances: int
    seconds: float
    #: files synthesised in this run (the rest existed)
    synthesised: int
    #: speakers per split
    speakers: dict[str, list[str]]
    #: sentences per split
    sentences: dict[str, int]
    utterances_per_split: dict[str, int]
    real: int
    real_seconds: float
    #: id -> reason for every utterance that could not be made
    failed: dict[str, str]
    wall_seconds: float

    def lines(self) -> list[str]:
        out = [
            f"{self.utterances} utterances, {self.seconds / 3600:.2f} h of audio "
            f"({self.synthesised} synthesised in this run) in {self.wall_seconds:.1f} s",
        ]
        for split in SPLITS:
            out.append(
                f"  {split:<5}: {self.utterances_per_split.get(split, 0)} utterances, "
                f"{len(self.speakers.get(split, []))} speakers, {self.sentences.get(split, 0)} sentences"
            )
        if self.real:
            out.append(f"  real recordings for pre-training: {self.real} ({self.real_seconds / 3600:.2f} h)")
        if self.failed:
            out.append(f"  FAILED: {len(self.failed)} (rerun to retry)")
        out.append(f"manifest: {self.manifest}")
        out.append(f"pre-training manifest: {self.pretrain_manifest}")
        return out


class SpeechCorpusBuilder:
    """Plans, synthesises and writes a speech corpus; :func:`build_speech_corpus` wraps it."""

    def __init__(
        self,
        output_dir: str | os.PathLike,
        *,
        prompts_path: str | os.PathLike,
        seed: int = 0,
        options: SpeechCorpusOptions | None = None,
        engines: Mapping[str, Engine] | None = None,
        warn: Warn | None = None,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.prompts_path = Path(prompts_path)
        self.seed = int(seed)
        self.options = (options or SpeechCorpusOptions()).checked()
        self.engines = dict(default_engines() if engines is None else engines)
        self.warn = warn or default_warn

    def speakers(self) -> list[Speaker]:
        if self.options.speaker_list:
            return resolve_speakers(self.options.speaker_list, self.engines)
        return default_speakers(self.options.speakers, self.engines, self.warn)

    def plan(self) -> CorpusPlan:
        prompts = read_prompts(self.prompts_path)
        speakers = self.speakers()

        def controls(speaker: Speaker) -> tuple[bool, bool]:
            return self.engines[speaker.engine].controls(speaker.voice)

        return plan_speech_corpus(prompts, speakers, self.seed, self.options, controls, self.warn)

    def _check_settings(self) -> None:
        settings = self.options.audio_settings(self.seed)
        path = self.output_dir / SETTINGS_FILE
        if path.is_file() and not self.options.overwrite:
            try:
                old = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                old = None
            if old is not None and old != settings:
                changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
                raise CorpusError(
                    f"{self.output_dir} was built with other audio settings ({', '.join(changed)} differ); "
                    "use a new output folder, the same settings, or overwrite (--overwrite) to re-synthesise"
                )
        self.output_dir.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".partial")
        tmp.write_text(json.dumps(settings, indent=1, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def run(self) -> BuildSummary:
        started = time.monotonic()
        plan = self.plan()
        real_items = real_recordings(self.options.real_dir, self.warn) if self.options.real_dir else []
        self._check_settings()
        jobs = self.options.jobs or os.cpu_count() or 1
        failed: dict[str, str] = {}
        seconds: dict[str, float] = {}
        synthesised = 0
        real_done: dict[int, tuple[str, float]] = {}
        progress = None
        if self.options.progress:
            from tqdm import tqdm

            progress = tqdm(total=len(plan.utterances) + len(real_items), unit="utt", desc="speech corpus",
                            dynamic_ncols=True)
        overwrite = self.options.overwrite
        # one task per batch of one engine's utterances; slow (batched) engines start first
        by_engine: dict[str, list[PlannedUtterance]] = {}
        for utt in plan.utterances:
            by_engine.setdefault(utt.speaker.engine, []).append(utt)
        batches: list[tuple[str, list[PlannedUtterance]]] = []
        for name, utts in by_engine.items():
            size = max(1, int(self.engines[name].batch_size))
            batches.extend((name, utts[i : i + size]) for i in range(0, len(utts), size))
        batches.sort(key=lambda b: -self.engines[b[0]].batch_size)

        def report(name: str, reason: str) -> None:
            failed[name] = reason
            (progress.write if progress else self.warn)(f"failed: {name}: {reason}")

        pool = ThreadPoolExecutor(max_workers=jobs)
        try:
            futures = {
                pool.submit(render_batch, utts, self.engines[name], self.output_dir, self.seed, overwrite): ("tts", k)
                for k, (name, utts) in enumerate(batches)
            }
            futures.update({
                pool.submit(render_real, item, self.output_dir, overwrite): ("real", i)
                for i, item in enumerate(real_items)
            })
            for future in as_completed(futures):
                kind, index = futures[future]
                if kind == "tts":
                    try:
                        results = future.result()
                    except Exception as err:  # a bug, not one bad sentence: fail the whole batch
                        results = [(u.id, None, False, str(err) or type(err).__name__) for u in batches[index][1]]
                    for uid, secs, made, error in results:
                        if error is not None:
                            report(uid, error)
                        else:
                            seconds[uid] = secs
                            synthesised += made
                    step = len(results)
                else:
                    try:
                        real_done[index] = future.result()
                    except Exception as err:
                        report(real_items[index].src, str(err) or type(err).__name__)
                    step = 1
                if progress:
                    progress.update(step)
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        finally:
            pool.shutdown(wait=True)
            if progress:
                progress.close()
        rows = [utterance_row(utt, seconds[utt.id]) for utt in plan.utterances if utt.id in seconds]
        real_rows = [real_row(real_items[i], *real_done[i]) for i in sorted(real_done)]
        real_rows.sort(key=lambda r: r["id"])
        manifest = self.output_dir / MANIFEST
        pretrain = self.output_dir / PRETRAIN_MANIFEST
        write_manifest(manifest, rows)
        write_manifest(pretrain, [r for r in rows if r["split"] == "train"] + real_rows)
        by_split: dict[str, list[str]] = {s: [] for s in SPLITS}
        for name, split in sorted(plan.speaker_splits.items()):
            by_split[split].append(name)
        sentences = {s: sum(1 for v in plan.sentence_splits.values() if v == s) for s in SPLITS}
        per_split = {s: sum(1 for r in rows if r["split"] == s) for s in SPLITS}
        return BuildSummary(
            manifest=manifest,
            pretrain_manifest=pretrain,
            utterances=len(rows),
            seconds=float(sum(seconds.values())),
            synthesised=synthesised,
            speakers=by_split,
            sentences=sentences,
            utterances_per_split=per_split,
            real=len(real_rows),
            real_seconds=float(sum(float(r["seconds"]) for r in real_rows)),
            failed=failed,
            wall_seconds=time.monotonic() - started,
        )


def build_speech_corpus(
    output_dir: str | os.PathLike,
    *,
    prompts_path: str | os.PathLike,
    seed: int = 0,
    options: SpeechCorpusOptions | None = None,
    engines: Mapping[str, Engine] | None = None,
    warn: Warn | None = None,
) -> Path:
    """Build (or finish) a speech corpus in ``output_dir``; returns the path of ``manifest.csv``.

    ``options`` holds sizes, splits and augmentation (:class:`SpeechCorpusOptions`);
    ``engines`` replaces the built-in engines (e.g. a fake one in tests). Utterances that
    fail are reported through ``warn`` by id and left out of the manifest; use
    :class:`SpeechCorpusBuilder` to get them (and the other figures) back.
    """
    builder = SpeechCorpusBuilder(output_dir, prompts_path=prompts_path, seed=seed, options=options,
                                  engines=engines, warn=warn)
    return builder.run().manifest
