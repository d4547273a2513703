"""The offline recipe's typed config: defaults from their owners, errors that name the field."""

from __future__ import annotations

import dataclasses

import pytest

from audioembed.downstream import DownstreamConfig
from audioembed.offline.recipe import StudentRun, recipe_from_dict
from audioembed.training.config import ConfigError


def test_probe_defaults_come_from_the_downstream_config():
    owner = {f.name: f.default for f in dataclasses.fields(DownstreamConfig)}
    evaluation = recipe_from_dict({}).evaluation
    for name in ("seeds", "probe", "ctc_head", "max_epochs"):
        assert getattr(evaluation, name) == owner[name], name


def test_per_task_settings_fall_back_to_the_section():
    evaluation = recipe_from_dict({"evaluation": {"shots": "2,all", "seeds": 3, "max_epochs": 7,
                                                  "task_shots": {"asr": "all"}, "task_max_epochs": {"asr": 15}}}).evaluation
    assert evaluation.shots_for("asr") == "all" and evaluation.shots_for("key") == "2,all"
    assert evaluation.max_epochs_for("asr") == 15 and evaluation.max_epochs_for("key") == 7
    assert evaluation.seeds_for("asr") == 3


def test_student_runs_are_typed():
    students = recipe_from_dict({"students": {"runs": [{"name": "a", "teachers": "music"}]}}).students
    assert students.runs == [StudentRun(name="a", teachers=["music"])]


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"evaluation": {"tasks": ["asr", "nope"]}}, r"\[evaluation\] tasks: unknown \['nope'\]"),
        ({"evaluation": {"shots": "1,two"}}, r"\[evaluation\] shots '1,two'"),
        ({"evaluation": {"seeds": 0}}, r"\[evaluation\] seeds must be a positive integer"),
        ({"evaluation": {"max_epoch": 3}}, r"\[evaluation\]: unknown field\(s\) max_epoch"),
        ({"merge": {"ties": "yes"}}, r"\[merge\].ties: expected true or false"),
        ({"students": {"runs": [{"teachers": ["speech"]}]}}, r"needs a name"),
        ({"students": {"runs": [{"name": "x", "teachers": ["speech", "drums"]}]}}, r"teachers must be"),
        ({"students": {"runs": [{"name": "x"}, {"name": "x"}]}}, r"run names must be unique"),
        ({"teacher": {}}, r"unknown section\(s\) teacher"),
    ],
)
def test_bad_values_name_the_field(raw, message):
    with pytest.raises(ConfigError, match=message):
        recipe_from_dict(raw, "recipe.toml")
