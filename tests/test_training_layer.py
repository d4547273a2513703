"""The shared training layer: configs, checkpoints with fallback, and the run log."""

from __future__ import annotations

import os

import pytest
import torch

from audioembed.training.checkpoints import (
    STATE_FILE,
    CheckpointError,
    checkpoint_dirs,
    load_checkpoint,
    load_latest_checkpoint,
    save_checkpoint,
)
from audioembed.training.config import ConfigError, apply_overrides, dump_toml, read_raw
from audioembed.training.runlog import LOG_FILE, RunLog, read_log, truncate_log


class RunsCode:
    """A pickle that would run code when loaded without ``weights_only``."""

    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def write_checkpoints(out, steps):
    for step in steps:
        save_checkpoint(out, step, {"step": step, "w": torch.full((4,), float(step))}, keep=0)
    return checkpoint_dirs(out)


def test_latest_readable_checkpoint_is_used(tmp_path):
    write_checkpoints(tmp_path, [3, 6])
    folder, state = load_latest_checkpoint(tmp_path, warn=pytest.fail)
    assert folder.name == "step-00000006" and state["step"] == 6


def test_truncated_checkpoint_falls_back_to_the_previous_one(tmp_path):
    dirs = write_checkpoints(tmp_path, [3, 6])
    last = dirs[-1] / STATE_FILE
    data = last.read_bytes()
    last.write_bytes(data[: len(data) // 2])  # as a copy that stopped half-way leaves it
    warnings = []
    folder, state = load_latest_checkpoint(tmp_path, warn=warnings.append)
    assert state["step"] == 3 and folder.name == "step-00000003"
    assert len(warnings) == 1
    assert str(last) in warnings[0] and "step-00000003" in warnings[0] and "\n" not in warnings[0]


def test_pickle_bearing_checkpoint_is_refused_in_one_line(tmp_path):
    dirs = write_checkpoints(tmp_path, [3, 6])
    torch.save({"step": 6, "payload": RunsCode()}, dirs[-1] / STATE_FILE)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(dirs[-1])
    message = str(info.value)
    assert str(dirs[-1] / STATE_FILE) in message and "refused" in message
    assert "weights_only" not in message and "\n" not in message
    warnings = []
    folder, state = load_latest_checkpoint(tmp_path, warn=warnings.append)
    assert state["step"] == 3 and "refused" in warnings[0]


def test_no_readable_checkpoint_is_one_clear_error(tmp_path):
    dirs = write_checkpoints(tmp_path, [3])
    (dirs[0] / STATE_FILE).write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="no checkpoint in .* can be read"):
        load_latest_checkpoint(tmp_path, warn=lambda m: None)
    assert load_latest_checkpoint(tmp_path / "none", warn=pytest.fail) is None


def test_truncate_log_keeps_steps_up_to_the_checkpoint(tmp_path):
    log = RunLog(tmp_path)
    for step in range(1, 7):
        log.write({"step": step, "loss": 1.0 / step})
    log.close()
    with open(tmp_path / LOG_FILE, "a", encoding="utf-8") as fh:
        fh.write('{"step": 7, "lo')  # a line cut off by a kill
    assert truncate_log(tmp_path, 3) == 4
    assert [r["step"] for r in read_log(tmp_path)] == [1, 2, 3]
    assert truncate_log(tmp_path, 3) == 0
    assert truncate_log(tmp_path / "missing", 3) == 0


def test_overrides_and_toml_dump_round_trip(tmp_path):
    raw = {"teachers": [{"name": "a", "weight": 1.0}], "run": {"seed": 1}}
    apply_overrides(raw, ["teachers.0.weight=0.5", "run.seed=7", "optim.betas=[0.9, 0.98]", "data.name=plain text"])
    assert raw["teachers"][0]["weight"] == 0.5 and raw["run"]["seed"] == 7 and raw["data"]["name"] == "plain text"
    path = tmp_path / "c.toml"
    path.write_text(dump_toml({"kind": "x", **raw}), encoding="utf-8")
    back, base, source = read_raw(path)
    assert back == {"kind": "x", **raw} and base == tmp_path and source == str(path)
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["novalue"])
