"""What a user sees while things run: bars that finish, no empty bars, probe progress, shot notes."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

import audio_gen

from audioembed.downstream import DownstreamConfig, run_downstream
from audioembed.extraction import extract

LABELS = {"low": 220.0, "high": 880.0}


@pytest.fixture(scope="module")
def uneven_manifest(tmp_path_factory):
    """Two classes: 'low' has 30 files (10 per fold part), 'high' only 3 (fewer than 8 shots)."""
    root = tmp_path_factory.mktemp("uneven")
    rows = ["path,label"]
    for i, label in enumerate(["low"] * 30 + ["high"] * 3):
        seconds = 0.3 + 0.013 * i  # durations that are not whole frames
        audio_gen.write_audio(root / f"u{i:02d}.wav", audio_gen.tone(LABELS[label], seconds, 16000), 16000)
        rows.append(f"u{i:02d}.wav,{label}")
    (root / "data.csv").write_text("\n".join(rows) + "\n")
    return root / "data.csv"


def _bar_lines(text: str, unit: str) -> list[str]:
    return [line for line in re.split(r"[\r\n]", text) if unit in line]


def test_extraction_bar_reaches_the_total_and_a_cached_rerun_shows_none(small_corpus, tmp_path, capsys):
    out = tmp_path / "f.h5"
    extract([str(small_corpus)], "fbank", out, progress=True)
    last = _bar_lines(capsys.readouterr().err, "s audio")[-1]
    done, total = re.search(r"(\d+)/(\d+) s audio", last).groups()
    assert done == total and "100%" in last, last
    extract([str(small_corpus)], "fbank", out, progress=True)
    assert not _bar_lines(capsys.readouterr().err, "s audio")


def test_extraction_bar_never_passes_its_total(tmp_path, capsys):
    """Three files of 0.41 s: the total (1.23 s) once rounded to 1.2 s and the bar ran past 100 %
    (tqdm's "clamping frac to range [0, 1]" warning on the README Quickstart)."""
    import warnings

    for i in range(3):
        audio_gen.write_audio(tmp_path / f"c{i}.wav", audio_gen.tone(300.0 + 50 * i, 0.41, 16000), 16000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        extract([str(tmp_path)], "fbank", tmp_path / "f.h5", progress=True)
    assert not [w for w in caught if "clamping" in str(w.message)]
    lines = _bar_lines(capsys.readouterr().err, "s audio")
    assert lines and "100%" in lines[-1] and "-00:00" not in lines[-1], lines[-1]


def test_probe_bar_counts_shots_seeds_folds_and_short_classes_are_noted(uneven_manifest, tmp_path, capsys):
    config = DownstreamConfig(task="classify", upstream="mfcc", data=str(uneven_manifest), shots=(8, None), seeds=2, folds=3,
                       max_epochs=5, cache_dir=str(tmp_path / "cache"))
    result = run_downstream(config, tmp_path / "results", progress=True)
    err = capsys.readouterr().err
    last = _bar_lines(err, "probe")[-1]
    assert re.search(r"12/12", last), last  # 2 shot settings x 2 seeds x 3 folds
    assert any("high" in note and "fewer training examples than 8" in note for note in result["notes"])
    assert "fewer training examples than 8" in err
    saved = json.loads(next((tmp_path / "results").glob("*.json")).read_text())
    assert saved["notes"] == result["notes"]
    # 'all' never makes a note, and a class with enough examples is not listed
    assert not any("low" in note for note in result["notes"])
