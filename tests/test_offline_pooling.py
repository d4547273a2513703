"""The offline recipe's pooling setting: applied to utterance tasks, part of what a finished
evaluation depends on, and stated on the results page from the result files."""

from __future__ import annotations

import tomllib
from pathlib import Path

from audioembed.downstream import DownstreamConfig
from audioembed.offline.pipeline import _probe_settings, task_pool
from audioembed.offline.results import pooling_line

REPO = Path(__file__).resolve().parent.parent


def test_pool_applies_to_utterance_tasks_only():
    assert task_pool("classify", "mean+std") == "mean+std"
    assert task_pool("speaker_id", "mean+std") == "mean+std"
    assert task_pool("tagging", "mean+std") == "mean"  # trained on 10 s chunks
    assert task_pool("asr", "mean+std") == "mean"  # frames


def test_changing_the_pool_reruns_the_probes():
    base = dict(task="classify", upstream="mfcc", data="x")
    mean = _probe_settings(DownstreamConfig(**base), ctc=False)
    both = _probe_settings(DownstreamConfig(**base, pool="mean+std"), ctc=False)
    assert mean != both and both["pool"] == "mean+std"
    assert "pool" not in mean  # results from before the setting existed were mean-pooled: still valid


def test_results_page_states_the_pooling():
    results = {("a", "fsdd"): {"task_kind": "classification", "protocol": {"pooling": "mean+std"}},
               ("a", "tagging"): {"task_kind": "multilabel", "protocol": {"pooling": "chunks (mean)"}},
               ("a", "asr"): {"task_kind": "ctc"}}
    line = pooling_line(results, ["fsdd", "tagging", "asr"])
    assert line == "Pooling of the probes' features: chunks (mean) (tagging); frames (asr); mean+std (fsdd)."


def test_offline_recipe_sets_a_pooling():
    recipe = tomllib.loads((REPO / "recipes" / "offline" / "offline.toml").read_text())
    assert recipe["evaluation"]["pool"] == "mean+std"
