"""The bundled default ``unified_student``: present, small, loadable offline, deterministic.

The golden numbers in tests/data/unified_student_golden.json come from
tests/data/make_unified_student_golden.py, run when the bundled weights are replaced.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import torch
from click.testing import CliRunner

from audioembed import load_upstream
from audioembed.cli import main as cli
from audioembed_plugins.student import bundled_unified_student_dir, read_student_metadata

DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(DATA))
from make_unified_student_golden import FIXTURE, GOLDEN, embed  # noqa: E402


def test_bundled_student_is_shipped_and_small():
    folder = bundled_unified_student_dir()
    weights = folder / "model.safetensors"
    assert weights.is_file(), f"{folder} has no model.safetensors"
    assert weights.stat().st_size <= 25 * 2**20
    assert not (folder / "heads.safetensors").exists()  # distillation heads are not shipped
    meta = read_student_metadata(folder)
    assert meta["sample_rate"] == 16000 and {t["name"] for t in meta["teachers"]} == {"speech", "music"}


def test_bundled_student_matches_its_golden_embeddings():
    golden = json.loads(GOLDEN.read_text())
    weights = bundled_unified_student_dir() / "model.safetensors"
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == golden["weights_sha256"], \
        "the bundled weights changed: rerun tests/data/make_unified_student_golden.py"
    torch.set_num_threads(1)
    first, second = embed(FIXTURE), embed(FIXTURE)
    assert first == second  # the same input gives the same numbers
    assert first["frames"] == golden["frames"]
    assert len(first["layer_means"]) == len(golden["layer_means"])
    for got, want in zip(first["layer_means"], golden["layer_means"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_extract_with_the_default_upstream(tmp_path):
    out = tmp_path / "out.h5"
    result = CliRunner().invoke(cli, ["extract", "--upstream", "unified_student", str(FIXTURE), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as f:
        assert f.attrs  # a feature store was written
    up = load_upstream("unified_student")
    assert up.sample_rate == 16000
