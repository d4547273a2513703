"""The music corpus builder: style grammar, key balancing, splits, a tiny render, resume, CLI.

The grammar and planning tests need nothing beyond the project; rendering needs pretty_midi,
music21 and tinysoundfont and is skipped (with the install command) where they are missing.
"""

from __future__ import annotations

import csv
import random
from collections import Counter, defaultdict
from pathlib import Path

import pytest
import soundfile as sf

from audioembed.corpus import midi_styles as ms
from audioembed.corpus import music
from audioembed.corpus.music import workers as music_workers
from audioembed.corpus.music import (
    MANIFEST_COLUMNS,
    MusicCorpusBuilder,
    MusicCorpusError,
    MusicCorpusOptions,
    assign_target_tonics,
    build_music_corpus,
    music_command,
    split_groups,
)

SKIP_REASON = f"rendering needs pretty_midi, music21 and tinysoundfont ({music.INSTALL_HINT})"


def _needs_renderer():
    for module in ("pretty_midi", "music21", "tinysoundfont"):
        pytest.importorskip(module, reason=SKIP_REASON)


def _read(manifest: Path) -> list[dict]:
    with open(manifest, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- style grammar


@pytest.mark.parametrize("style", ms.STYLE_NAMES)
def test_style_pieces_are_deterministic_and_labelled(style):
    a = ms.generate_piece(style, random.Random(7), seconds=6, tonic=3, mode="minor")
    b = ms.generate_piece(style, random.Random(7), seconds=6, tonic=3, mode="minor")
    c = ms.generate_piece(style, random.Random(8), seconds=6, tonic=3, mode="minor")
    assert a == b
    assert [t.notes for t in a.tracks] != [t.notes for t in c.tracks]
    assert a.style == style and a.key == "D# minor" and a.seconds == 6
    assert a.meter in {m.name for m in ms.STYLES[style].meters}
    low, high = ms.STYLES[style].tempo[a.meter]
    assert low <= a.tempo <= high
    for track in a.tracks:
        assert track.notes, track.role
        for start, end, pitch, velocity in track.notes:
            assert 0 <= start < end <= 6 + 1e-9
            assert 1 <= velocity <= 127
            assert (35 <= pitch <= 81) if track.is_drum else (21 <= pitch <= 108)
    drums = [t for t in a.tracks if t.is_drum]
    assert ("drums" in a.tags) == bool(drums)
    assert a.programs == sorted({t.program for t in a.tracks if not t.is_drum})
    assert all(0 <= p <= 127 for p in a.programs)
    assert set(a.tags) >= {ms.program_tag(p) for p in a.programs}


def test_drums_go_to_the_percussion_channel():
    piece = ms.generate_piece("rock", random.Random(1), seconds=4, tonic=0, mode="major")
    drums = [t for t in piece.tracks if t.is_drum]
    assert len(drums) == 1 and {n[2] for n in drums[0].notes} >= {ms.KICK, ms.SNARE}
    assert ms.DRUM_CHANNEL == 9
    pretty_midi = pytest.importorskip("pretty_midi", reason=SKIP_REASON)
    pm = piece.to_pretty_midi()
    assert isinstance(pm, pretty_midi.PrettyMIDI)
    assert [i.is_drum for i in pm.instruments] == [t.is_drum for t in piece.tracks]
    assert sum(len(i.notes) for i in pm.instruments) == sum(len(t.notes) for t in piece.tracks)


def test_styles_without_drums_and_tags():
    for seed in range(5):
        waltz = ms.generate_piece("waltz", random.Random(seed), seconds=4, tonic=0, mode="major")
        assert not waltz.has_drums and "drums" not in waltz.tags and waltz.meter == "3/4"
    assert ms.piece_tags([0, 33], True, 60) == ["bass", "drums", "piano", "slow"]
    assert ms.piece_tags([81], False, 150) == ["synth", "fast"]
    assert ms.piece_tags([19, 19], False, 100) == ["organ"]


def test_chord_symbols():
    assert ms.chord_pitch_classes("I", 0) == (0, 4, 7)
    assert ms.chord_pitch_classes("vi", 0) == (9, 0, 4)
    assert ms.chord_pitch_classes("V7", 0) == (7, 11, 2, 5)
    assert ms.chord_pitch_classes("bVII", 0) == (10, 2, 5)
    assert ms.chord_pitch_classes("iiø7", 0) == (2, 5, 8, 0)
    assert ms.chord_pitch_classes("Imaj7", 2) == (2, 6, 9, 1)
    with pytest.raises(ValueError):
        ms.chord_pitch_classes("IX", 0)


def test_key_labels_are_the_metric_labels():
    from audioembed.metrics import KEY_LABELS, normalize_key

    labels = [ms.key_label(t, m) for t, m in ms.KEYS]
    assert sorted(labels) == sorted(KEY_LABELS)
    assert all(normalize_key(label) == label and ms.parse_key_label(label) == key
               for label, key in zip(labels, ms.KEYS))


# --------------------------------------------------------------------------- keys and splits


def test_target_tonics_are_balanced_and_distinct():
    chorales = [(f"c{i}", ms.MODES[i % 2], ("train", "test")[i % 3 == 0]) for i in range(30)]
    tonics = assign_target_tonics(chorales, 5, seed=3)
    counts = defaultdict(Counter)
    for name, mode, split in chorales:
        assert len(set(tonics[name])) == 5
        counts[(split, mode)].update(tonics[name])
    for counter in counts.values():
        values = [counter[t] for t in range(12)]
        assert max(values) - min(values) <= 1
    assert assign_target_tonics(chorales, 5, seed=3) == tonics
    assert assign_target_tonics(chorales, 5, seed=4) != tonics
    assert all(sorted(v) == list(range(12)) for v in assign_target_tonics(chorales, 12, seed=0).values())
    with pytest.raises(MusicCorpusError):
        assign_target_tonics(chorales, 13, seed=0)


def test_transpose_interval_is_the_nearest_way():
    for source in range(12):
        for target in range(12):
            shift = music.transpose_interval(source, target)
            assert -6 <= shift <= 5 and (source + shift) % 12 == target


def test_split_groups():
    groups = [f"g{i}" for i in range(40)]
    strata = ["major" if i % 4 else "minor" for i in range(40)]
    splits = split_groups(groups, strata, (0.8, 0.1, 0.1), seed=0, salt="x")
    assert Counter(splits.values()) == {"train": 32, "dev": 4, "test": 4}
    for split in ("train", "test"):
        assert {s for g, s in zip(groups, strata) if splits[g] == split} == {"major", "minor"}
    assert split_groups(groups, strata, (0.8, 0.1, 0.1), seed=0, salt="x") == splits
    assert split_groups(groups, strata, (0.8, 0.1, 0.1), seed=1, salt="x") != splits
    # tiny: test gets a group as soon as there are two
    assert sorted(split_groups(["a", "b"], ["s", "s"], (0.8, 0.1, 0.1), 0, "x").values()) == ["test", "train"]


def _fake_chorale(name: str, tonic: int, mode: str) -> dict:
    soprano = [[float(i), 1.0, 67 + (i % 3), i == 7] for i in range(8)]
    parts = [soprano] + [[[float(i), 1.0, p - 5 * k, False] for i, (_, _, p, _) in enumerate(soprano)] for k in (1, 2, 4)]
    return {"name": name, "status": "ok", "tonic": tonic, "mode": mode, "key": ms.key_label(tonic, mode),
            "meter": "4/4", "parts": parts, "length_q": 8.0}


def test_plan_splits_by_chorale_and_balances_keys(tmp_path):
    soundfont = tmp_path / "fake.sf2"
    soundfont.write_bytes(b"not read by the planner")
    chorales = [_fake_chorale(f"bach/bwv{i}", i % 12, ms.MODES[i % 2]) for i in range(40)]
    options = MusicCorpusOptions(chorales=40, transpositions=6, pieces=48, soundfonts=(str(soundfont),))
    builder = MusicCorpusBuilder(tmp_path / "out", options)
    items = builder.plan(chorales)
    assert len(items) == 40 * 6 + 48 and len({it.id for it in items}) == len(items)
    split_of = defaultdict(set)
    for it in items:
        split_of[it.group].add(it.split)
        if it.source == "chorale":
            info = next(c for c in chorales if c["name"] == it.origin)
            assert (info["tonic"] + it.transpose) % 12 == it.tonic and it.mode == info["mode"]
    assert all(len(s) == 1 for s in split_of.values()), "a chorale (or piece) spans two splits"
    chorale_items = [it for it in items if it.source == "chorale"]
    assert {it.split for it in chorale_items} == {"train", "dev", "test"}
    keys = Counter(it.key for it in chorale_items)
    assert len(keys) == 24 and max(keys.values()) - min(keys.values()) <= 2
    generated = [it for it in items if it.source == "generated"]
    assert Counter(it.origin for it in generated) == {s: 6 for s in ms.STYLE_NAMES}
    assert len({it.key for it in generated}) == 24
    assert builder.plan(chorales) == items
    # the chorale piece: fermata held, transposed, excerpt cut
    piece = builder.piece_of(chorale_items[0], {c["name"]: c for c in chorales})
    assert piece.style == "chorale" and piece.key == chorale_items[0].key and len(piece.tracks) == 4


def test_bad_options():
    with pytest.raises(MusicCorpusError, match="nothing to build"):
        MusicCorpusOptions(chorales=0, pieces=0).checked()
    with pytest.raises(MusicCorpusError, match="unknown style"):
        MusicCorpusOptions(styles=("polka",)).checked()
    with pytest.raises(MusicCorpusError, match="split fractions"):
        MusicCorpusOptions(split_fractions="0.8,0.2").checked()
    with pytest.raises(TypeError, match="unknown setting"):
        build_music_corpus("/nonexistent", colour="blue")


# --------------------------------------------------------------------------- with music21


def test_chorale_analysis_and_generated_keys():
    pytest.importorskip("music21", reason=SKIP_REASON)
    info = music.analyse_chorale("bach/bwv269")
    assert info["status"] == "ok" and info["key"] == "G major" and info["meter"] == "3/4"
    assert len(info["parts"]) == 4 and all(info["parts"])
    for part in info["parts"]:
        assert all(length > 0 for _, length, _, _ in part)
        assert [n[0] for n in part] == sorted(n[0] for n in part)
    assert info["evidence"]["final_bass"] == "G"
    for style in ("rock", "ballad"):
        piece = music.generate_labelled_piece(style, 0, f"x/{style}", seconds=6, tonic=5, mode="minor")
        assert piece.details["key_votes"] >= music.KEY_VOTES and piece.key == "F minor"


# --------------------------------------------------------------------------- rendering

TINY = dict(chorales=2, transpositions=2, pieces=3, seconds=3, progress=False)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    _needs_renderer()
    out = tmp_path_factory.mktemp("music") / "corpus"
    manifest = build_music_corpus(out, jobs=2, **TINY)
    return out, manifest


def _hashes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.wav"))}


def test_tiny_render(tiny):
    out, manifest = tiny
    assert manifest == out / "manifest.csv"
    rows = _read(manifest)
    assert list(rows[0]) == list(MANIFEST_COLUMNS)
    assert Counter(r["source"] for r in rows) == {"chorale": 4, "generated": 3}
    assert len({r["group"] for r in rows if r["source"] == "chorale"}) == 2
    for row in rows:
        path = out / row["path"]
        assert row["id"] + ".wav" == row["path"] and path.is_file()
        info = sf.info(str(path))
        assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "PCM_16")
        assert abs(info.frames / 24000 - 3.0) < 1e-3 and row["seconds"] == "3.000"
        assert row["domain"] == "music" and row["soundfont"] == "TimGM6mb.sf2"
        assert row["split"] in ("train", "dev", "test")
        assert ms.parse_key_label(row["key"]) in ms.KEYS
        assert row["tags"] and all(t.strip() == t and t for t in row["tags"].split(";"))
        assert all(0 <= int(p) <= 127 for p in row["programs"].split(";"))
        assert row["style"] == "chorale" if row["source"] == "chorale" else row["style"] in ms.STYLE_NAMES
        audio, _ = sf.read(str(path))
        assert 0.85 < abs(audio).max() <= 0.9
    splits_of = defaultdict(set)
    for row in rows:
        splits_of[row["group"]].add(row["split"])
    assert all(len(s) == 1 for s in splits_of.values())
    assert "test" in {r["split"] for r in rows}


def test_tiny_render_is_deterministic_and_resumes(tiny, tmp_path):
    out, manifest = tiny
    again = build_music_corpus(tmp_path / "again", jobs=1, **TINY)
    assert again.read_bytes() == manifest.read_bytes()
    assert _hashes(tmp_path / "again") == _hashes(out)
    # resume: delete one file, only it is rendered again (same bytes)
    root = tmp_path / "again"
    victim = root / _read(again)[-1]["path"]
    original = victim.read_bytes()
    victim.unlink()
    before = {p: p.stat().st_mtime_ns for p in root.rglob("*.wav")}
    builder = MusicCorpusBuilder(root, MusicCorpusOptions(chorales=2, transpositions=2, pieces=3, chorale_seconds=3,
                                                          piece_seconds=3, progress=False, jobs=1))
    assert builder.build().read_bytes() == manifest.read_bytes()
    assert builder.stats["rendered"] == 1 and builder.stats["kept"] == 6
    assert victim.read_bytes() == original
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    # other settings in the same folder are refused
    with pytest.raises(MusicCorpusError, match="other settings"):
        build_music_corpus(root, jobs=1, **{**TINY, "seed": 1})


def test_tiny_corpus_loads_in_tasks_and_distillation(tiny):
    from audioembed.distill.data import read_corpus
    from audioembed.registry import get_registry

    _, manifest = tiny
    for task, options in (("key", {}), ("classify", {"label_column": "style"}), ("tagging", {"top_n": 0})):
        spec = get_registry().task_spec(task).build()
        data = spec.load(manifest, spec.resolve_options(options))
        assert len(data.examples) == 7 and data.problems == [], task
        assert {e.split for e in data.examples} <= {"train", "dev", "test"}
    items = read_corpus([manifest], "speech", 1.0)
    assert len(items) == 7 and {i.domain for i in items} == {"music"}


def test_failed_item_is_reported_and_the_rest_is_built(tmp_path, monkeypatch):
    _needs_renderer()
    real = music.render_piece

    def flaky(piece, *args, **kwargs):
        if piece.style == "waltz":
            raise RuntimeError("synthetic failure")
        return real(piece, *args, **kwargs)

    monkeypatch.setattr(music_workers, "render_piece", flaky)  # looked up where the render job runs
    options = dict(chorales=0, pieces=3, seconds=2, progress=False, jobs=1)
    with pytest.raises(MusicCorpusError) as info:
        build_music_corpus(tmp_path, warn=lambda message: None, **options)
    assert list(info.value.failures) == ["generated/waltz/waltz_00001"]
    assert "synthetic failure" in str(info.value)
    assert [r["id"] for r in _read(info.value.manifest)] == ["generated/bossa/bossa_00002", "generated/rock/rock_00000"]
    monkeypatch.setattr(music_workers, "render_piece", real)
    assert len(_read(build_music_corpus(tmp_path, **options))) == 3


def test_cli(tmp_path):
    _needs_renderer()
    from click.testing import CliRunner

    runner = CliRunner()
    out = tmp_path / "cli"
    result = runner.invoke(music_command, ["-o", str(out), "--chorales", "0", "--pieces", "2", "--seconds", "2",
                                           "--styles", "techno,march", "-j", "1", "-q", "--midi"])
    assert result.exit_code == 0, result.output
    assert "2 files" in result.output
    rows = _read(out / "manifest.csv")
    assert [r["style"] for r in rows] == ["march", "techno"]
    assert all((out / r["path"]).with_suffix(".mid").is_file() for r in rows)
    bad = runner.invoke(music_command, ["-o", str(tmp_path / "bad"), "--chorales", "0", "--pieces", "0"])
    assert bad.exit_code == 1 and "nothing to build" in bad.output
