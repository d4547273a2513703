"""`audioembed report` never merges runs on different datasets into one table."""

from __future__ import annotations

import json

from click.testing import CliRunner

from audioembed.cli import main


def _result(task, upstream, data_path, accuracy):
    stats = {"mean": accuracy, "std": 0.01, "n": 2, "ci_low": accuracy - 0.02, "ci_high": accuracy + 0.02}
    return {"task": task, "upstream": upstream, "model": None, "weights_hash": "abcd1234", "primary_metric": "accuracy",
            "lower_is_better": [], "task_kind": "classification", "config": {"probe": "linear", "seeds": 2},
            "layers": [0], "data": {"path": data_path, "examples": 10, "folds": []},
            "results": {"all": {"summary": {"accuracy": stats}, "per_seed": []}}}


def test_runs_on_different_datasets_get_their_own_tables(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    for name, data, acc in (("a", "/data/gtzan", 0.61), ("b", "/data/my_genres.csv", 0.93)):
        (results / f"genre_mfcc_{name}.json").write_text(json.dumps(_result("genre", "mfcc", data, acc)))
    out = tmp_path / "report.md"
    result = CliRunner().invoke(main, ["report", str(results), "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "## dataset: `/data/gtzan`" in text and "## dataset: `/data/my_genres.csv`" in text
    first, second = text.split("## dataset: `/data/my_genres.csv`")
    assert "0.610" in first and "0.930" not in first
    assert "0.930" in second and "0.610" not in second
