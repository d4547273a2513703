"""recipes/fsdd_smoke.sh writes docs/fsdd_smoke.md, generated from its result files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def load_page_script():
    spec = importlib.util.spec_from_file_location("fsdd_smoke_page", ROOT / "recipes" / "fsdd_smoke_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def summary(mean: float) -> dict:
    return {"mean": mean, "std": 0.01, "ci_low": mean - 0.02, "ci_high": mean + 0.02, "n": 5}


def write_result(folder: Path, task: str, upstream: str, accuracy: dict[str, float], cached: int = 0) -> None:
    result = {
        "task": task, "upstream": upstream, "primary_metric": "accuracy", "labels": ["a", "b", "c"],
        "config": {"seeds": 5, "probe": "linear"},
        "data": {"path": "/data/fsdd/labels.csv", "examples": 300, "features_from_cache": cached,
                 "folds": [{"name": "split", "train": 240, "dev": 30, "test": 30}]},
        "results": {s: {"summary": {"accuracy": summary(v), "macro_f1": summary(v - 0.01)}} for s, v in accuracy.items()},
        "timings": {"features": 12.4, "probes": 30.6},
    }
    (folder / f"{task}_{upstream}.json").write_text(json.dumps(result))


def test_page_is_written_from_the_result_files(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    write_result(results, "classify", "mfcc", {"all": 0.866, "8": 0.55})
    write_result(results, "speaker_id", "mfcc", {"8": 0.661, "all": 0.952}, cached=300)
    page = load_page_script().write_page(results, tmp_path / "docs" / "fsdd_smoke.md")
    lines = page.read_text().splitlines()
    assert lines[0] == "# Results: a first real run (FSDD)"
    rows = [line for line in lines if line.startswith("| classify") or line.startswith("| speaker_id")]
    assert rows == [
        "| classify | mfcc | 8 | 0.550 ± 0.010 [0.530, 0.570] | 0.540 ± 0.010 | 12 s / 31 s |",
        "| classify | mfcc | all | 0.866 ± 0.010 [0.846, 0.886] | 0.856 ± 0.010 | 12 s / 31 s |",
        "| speaker_id | mfcc | 8 | 0.661 ± 0.010 [0.641, 0.681] | 0.651 ± 0.010 | 12 s / 31 s |",
        "| speaker_id | mfcc | all | 0.952 ± 0.010 [0.932, 0.972] | 0.942 ± 0.010 | 12 s / 31 s |",
    ]
    assert "- `speaker_id` / `mfcc`: 300 of 300 examples' features came from the feature cache" in page.read_text()
    assert "3 speakers; split train 240, dev 30, test 30." in page.read_text()


def test_no_results_is_one_clear_error(tmp_path):
    with pytest.raises(SystemExit, match="no downstream result files"):
        load_page_script().write_page(tmp_path, tmp_path / "page.md")


def test_the_recipe_writes_the_page_it_promises():
    script = (ROOT / "recipes" / "fsdd_smoke.sh").read_text()
    assert "docs/fsdd_smoke.md" in script.splitlines()[3] + script.splitlines()[4]  # the header says so
    assert 'python recipes/fsdd_smoke_page.py "$OUT" docs/fsdd_smoke.md' in script  # and its last step does it
