"""Shared fixtures. Test helpers (audio_gen, tiny_models) are plain modules in this folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

import audio_gen  # noqa: E402


@pytest.fixture(autouse=True)
def _offline_hub(monkeypatch):
    # Tests must never try to reach a model hub.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory) -> Path:
    """Eight short files in several formats, sample rates and channel counts."""
    root = tmp_path_factory.mktemp("corpus")
    audio_gen.make_corpus(root, n=8, seed=1, min_s=0.3, max_s=2.5)
    return root


def cli_env(**extra: str) -> dict:
    env = dict(os.environ)
    env.update({"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", **extra})
    return env
