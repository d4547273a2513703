"""Weights files that pickle more than tensors are refused with one line, wherever they are read.

``torch.load(weights_only=True)`` already refuses to run the pickled code; these tests check
that each entry point (the ``hubert``, ``mert`` and ``student`` upstreams, ``merge``, a student
initialised from a folder) turns that into one clear line naming the file, and never repeats
torch's advice to switch the protection off (issue 13 item 9).
"""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from tiny_models import make_tiny_hf, make_tiny_mert, make_tiny_student

from audioembed import UpstreamError, load_upstream
from audioembed.distill.merge import MergeError, load_for_merge

MARKER = "refused-weights-test-ran-code"


class RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def poison(folder):
    """Replace the folder's model.safetensors by a pytorch_model.bin that also pickles code."""
    state = dict(load_file(str(folder / "model.safetensors")))
    (folder / "model.safetensors").unlink()
    state["extra"] = RunsCode()
    torch.save(state, folder / "pytorch_model.bin")
    return folder / "pytorch_model.bin"


def assert_one_clean_line(message: str, path) -> None:
    assert "\n" not in message
    assert str(path) in message and "refused" in message
    assert "weights_only" not in message and "arbitrary code" not in message


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    yield
    assert not (tmp_path / MARKER).exists(), "the pickled code ran"


def test_hubert_upstream(tmp_path):
    path = poison(make_tiny_hf(tmp_path / "hubert"))
    with pytest.raises(UpstreamError) as info:
        load_upstream("hubert", model=str(tmp_path / "hubert"))
    assert_one_clean_line(str(info.value), path)


def test_mert_upstream(tmp_path):
    folder = make_tiny_mert(tmp_path / "mert", fmt="bin")
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    state["extra"] = RunsCode()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(UpstreamError) as info:
        load_upstream("mert", model=str(folder))
    assert_one_clean_line(str(info.value), folder / "pytorch_model.bin")


def test_student_upstream_and_merge(tmp_path):
    folder = make_tiny_student(tmp_path / "student")
    path = poison(folder)
    with pytest.raises(UpstreamError) as info:
        load_upstream("student", model=str(folder))
    assert_one_clean_line(str(info.value), path)
    with pytest.raises(MergeError) as info:
        load_for_merge(folder)
    assert_one_clean_line(str(info.value), path)


def test_student_init_from_a_folder(tmp_path):
    from audioembed.distill.config import config_from_dict
    from audioembed.distill.student import StudentError
    from audioembed.distill.trainer import init_student

    folder = make_tiny_student(tmp_path / "init")
    path = poison(folder)
    config = config_from_dict({
        "teachers": [{"name": "t", "upstream": "mfcc"}],
        "data": {"manifests": []},
        "student": {"init": str(folder)},
        "run": {"output_dir": str(tmp_path / "run")},
    })
    with pytest.raises(StudentError) as info:
        init_student(config, [])
    assert_one_clean_line(str(info.value), path)
