"""The bundled models (``unified_student``, ``small_hubert``, ``small_mert``): present, small,
loadable offline, deterministic.

The golden numbers in tests/data/bundled_golden.json come from
tests/data/make_bundled_golden.py, run when the bundled weights are replaced
(recipes/offline/bundle.py).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner

from audioembed import load_upstream
from audioembed.cli import main as cli
from audioembed.upstream import UpstreamError
from audioembed_plugins.bundled import PRETRAINED, bundled_dir
from audioembed.models.student_folder import read_student_metadata
from audioembed_plugins.student import bundled_unified_student_dir

DATA = Path(__file__).resolve().parent / "data"
sys.path.insert(0, str(DATA))
from make_bundled_golden import BUNDLED, FIXTURE, GOLDEN, embed  # noqa: E402

BUDGET_BYTES = 25 * 2**20  # all package data together (issue 6)


def test_bundled_models_are_shipped_and_small():
    total = 0
    for name in BUNDLED:
        weights = bundled_dir(name) / "model.safetensors"
        assert weights.is_file(), f"{weights} is missing"
        total += weights.stat().st_size
    assert total == sum(p.stat().st_size for p in PRETRAINED.rglob("*.safetensors"))  # nothing else shipped
    assert total <= BUDGET_BYTES
    folder = bundled_unified_student_dir()
    assert folder == bundled_dir("unified_student")
    assert not (folder / "heads.safetensors").exists()  # distillation heads are not shipped
    meta = read_student_metadata(folder)
    assert meta["sample_rate"] == 16000 and {t["name"] for t in meta["teachers"]} == {"speech", "music"}
    # no absolute path of the machine that made them
    for path in PRETRAINED.rglob("*.json"):
        assert "/work/" not in path.read_text() and "/tmp/" not in path.read_text(), path


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_model_matches_its_golden_embeddings(name):
    golden = json.loads(GOLDEN.read_text())[name]
    weights = bundled_dir(name) / "model.safetensors"
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == golden["weights_sha256"], \
        "the bundled weights changed: rerun tests/data/make_bundled_golden.py"
    torch.set_num_threads(1)
    first, second = embed(FIXTURE, name), embed(FIXTURE, name)
    assert first == second  # the same input gives the same numbers
    assert first["frames"] == golden["frames"]
    assert len(first["layer_means"]) == len(golden["layer_means"])
    for got, want in zip(first["layer_means"], golden["layer_means"]):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_bundled_teachers_load_through_their_family_code():
    hubert, mert = load_upstream("small_hubert"), load_upstream("small_mert")
    assert (hubert.sample_rate, mert.sample_rate) == (16000, 24000)  # frame alignment as with MERT-v1
    assert next(hubert.parameters()).dtype == torch.float32  # stored in float16, computed in float32
    with pytest.raises(UpstreamError, match="takes no --model"):
        load_upstream("small_mert", model="m-a-p/MERT-v1-95M")


def test_extract_with_the_default_upstream(tmp_path):
    out = tmp_path / "out.h5"
    result = CliRunner().invoke(cli, ["extract", "--upstream", "unified_student", str(FIXTURE), "-o", str(out), "-q"])
    assert result.exit_code == 0, result.output
    with h5py.File(out, "r") as f:
        assert f.attrs  # a feature store was written
    up = load_upstream("unified_student")
    assert up.sample_rate == 16000
