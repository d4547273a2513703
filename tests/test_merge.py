"""Task-vector merging of students (audioembed.distill.merge): arithmetic, refusals, folders, CLI."""

from __future__ import annotations

import json

import click
import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from tiny_models import TINY, single_thread, tiny_student_model

from audioembed import load_upstream
from audioembed.distill.merge import (
    LAMBDA_GRID,
    MergeError,
    merge_command,
    merge_linear,
    merge_students,
    merge_ties,
    parse_add,
    sweep,
    task_vector,
    trim_top_k,
)
from audioembed.distill.student import StudentError, weights_fingerprint
from audioembed.models.student_folder import META_FILE, save_student


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


def _perturbed(base, seed: int, scale: float = 0.05):
    """A copy of ``base`` with every floating tensor moved by seeded noise (a 'trained' student)."""
    model = tiny_student_model(seed=0)
    model.load_state_dict(base.state_dict())
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return model


def _reload(folder) -> dict:
    from transformers import HubertModel

    model = HubertModel.from_pretrained(str(folder), local_files_only=True, dtype=torch.float32)
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith("masked_spec_embed")}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    """base (theta_0), two students distilled from it (a with heads), one from other weights,
    one without a fingerprint, one of another architecture."""
    from transformers import HubertConfig, HubertModel

    root = tmp_path_factory.mktemp("merge")
    base = tiny_student_model(seed=0)
    fp = weights_fingerprint(base)
    save_student(base, root / "base", metadata={"init_fingerprint": fp, "teachers": []})
    speech = [{"name": "hubert", "source": "speech-teacher"}]
    music = [{"name": "mert_v1", "source": "music-teacher"}]
    save_student(_perturbed(base, 1), root / "a", metadata={"init_fingerprint": fp, "teachers": speech,
                                                            "target_layers": {"hubert": [2]}})
    save_file({"head.weight": torch.zeros(2, 2)}, str(root / "a" / "heads.safetensors"))
    save_student(_perturbed(base, 2), root / "b", metadata={"init_fingerprint": fp, "teachers": speech + music})
    save_student(_perturbed(base, 3), root / "other_init", metadata={"init_fingerprint": "0123456789abcdef"})
    save_student(_perturbed(base, 4), root / "no_fp", metadata={})
    torch.manual_seed(5)
    wide = HubertModel(HubertConfig(**{**TINY, "intermediate_size": 96}, feat_extract_norm="group",
                                    feat_proj_layer_norm=False))
    save_student(wide, root / "wide", metadata={"init_fingerprint": fp})
    return {"root": root, "fp": fp, **{n: root / n for n in ("base", "a", "b", "other_init", "no_fp", "wide")}}


# --------------------------------------------------------------------------------------
# arithmetic
# --------------------------------------------------------------------------------------


def test_linear_merge_matches_hand_computation(folders, tmp_path):
    out = merge_students(folders["base"], [(str(folders["a"]), 0.7), (str(folders["b"]), 0.4)], tmp_path / "m")
    t0, ta, tb, merged = (_reload(p) for p in (folders["base"], folders["a"], folders["b"], out))
    assert set(merged) == set(t0)
    worst = 0.0
    for key in t0:
        expected = t0[key] + 0.7 * (ta[key] - t0[key]) + 0.4 * (tb[key] - t0[key])
        worst = max(worst, (merged[key] - expected).abs().max().item())
    assert worst < 1e-6
    # really moved: not the base, not a student
    key = "encoder.layers.0.attention.q_proj.weight"
    assert (merged[key] - t0[key]).abs().max() > 1e-3 and (merged[key] - ta[key]).abs().max() > 1e-3


def test_merge_linear_pure_function():
    theta0 = {"w": torch.tensor([1.0, 2.0, 3.0]), "n": torch.tensor([7])}
    taus = [{"w": torch.tensor([1.0, 0.0, -1.0])}, {"w": torch.tensor([0.0, 4.0, 2.0])}]
    out = merge_linear(theta0, taus, [0.5, 0.25])
    torch.testing.assert_close(out["w"], torch.tensor([1.5, 3.0, 3.0]))
    assert out["n"].tolist() == [7] and out["w"].dtype == torch.float32
    tau = task_vector({"w": torch.tensor([2.0, 2.0, 0.0]), "n": torch.tensor([9])}, theta0)
    assert set(tau) == {"w"}
    torch.testing.assert_close(tau["w"], torch.tensor([1.0, 0.0, -3.0]))


def test_trim_is_per_tensor_top_k():
    torch.testing.assert_close(
        trim_top_k(torch.tensor([0.5, -0.2, 0.1, 0.4, -0.05, 0.3]), 0.5),
        torch.tensor([0.5, 0.0, 0.0, 0.4, 0.0, 0.3]),
    )
    # ceil(0.3 * 2) = 1 entry kept
    torch.testing.assert_close(trim_top_k(torch.tensor([0.01, -0.02]), 0.3), torch.tensor([0.0, -0.02]))


def test_ties_hand_example():
    # k = 0.5: per tensor keep ceil(0.5 * numel) entries of largest magnitude.
    theta0 = {
        "w": torch.ones(2, 3),
        "b": torch.zeros(2),
        "n": torch.tensor([3, 4]),  # not floating: copied from the base
    }
    tau1 = {"w": torch.tensor([[0.5, -0.2, 0.1], [0.4, -0.05, 0.3]]), "b": torch.tensor([0.01, -0.02])}
    tau2 = {"w": torch.tensor([[-0.1, -0.6, 0.2], [-0.8, 0.05, 0.9]]), "b": torch.tensor([0.03, 0.0])}
    # trimmed:  t1.w = [[.5, 0, 0], [.4, 0, .3]]    t2.w = [[0, -.6, 0], [-.8, 0, .9]]
    #           t1.b = [0, -.02]                     t2.b = [.03, 0]
    # weighted (l = .75, .25): w1.w = [[.375, 0, 0], [.3, 0, .225]]; w2.w = [[0, -.15, 0], [-.2, 0, .225]]
    # elected sign of the sum:     [[+, -, 0], [+, 0, +]]
    # weighted disjoint mean of agreeing, nonzero entries:
    #   [0,0]: .375/.75 = .5   [0,1]: -.15/.25 = -.6   [0,2]: none -> 0
    #   [1,0]: only model 1 agrees: .3/.75 = .4   [1,1]: none -> 0   [1,2]: (.225+.225)/(.75+.25) = .45
    #   b: [0]: .0075/.25 = .03   [1]: -.015/.75 = -.02   (per-tensor trim keeps these small values)
    out = merge_ties(theta0, [tau1, tau2], [0.75, 0.25], k=0.5)
    torch.testing.assert_close(out["w"], torch.tensor([[1.5, 0.4, 1.0], [1.4, 1.0, 1.45]]))
    torch.testing.assert_close(out["b"], torch.tensor([0.03, -0.02]))
    assert out["n"].tolist() == [3, 4]


def test_ties_equal_weights_and_sign_tie():
    theta0 = {"w": torch.zeros(3)}
    taus = [{"w": torch.tensor([1.0, -2.0, 1.0])}, {"w": torch.tensor([-1.0, 3.0, 3.0])}]
    # k = 1 keeps everything; sums of 0.5 * t: [0, .5, 2] -> signs [0, +, +]
    # [0]: no elected sign -> 0; [1]: only model 2 agrees -> 3; [2]: mean(1, 3) = 2
    out = merge_ties(theta0, taus, [0.5, 0.5], k=1.0)
    torch.testing.assert_close(out["w"], torch.tensor([0.0, 3.0, 2.0]))


def test_ties_refuses_bad_arguments():
    theta0 = {"w": torch.zeros(2)}
    taus = [{"w": torch.ones(2)}]
    with pytest.raises(MergeError, match="weights >= 0"):
        merge_ties(theta0, taus, [-1.0])
    with pytest.raises(MergeError, match=r"\(0, 1\]"):
        merge_ties(theta0, taus, [1.0], k=0.0)
    with pytest.raises(MergeError, match="1 task vectors but 2 weights"):
        merge_linear(theta0, taus, [1.0, 2.0])


def test_ties_merge_of_folders(folders, tmp_path):
    out = merge_students(folders["base"], [(folders["a"], 0.5), (folders["b"], 0.5)], tmp_path / "t",
                         method="ties", ties_k=0.3)
    t0, ta, tb, merged = (_reload(p) for p in (folders["base"], folders["a"], folders["b"], out))
    taus = [task_vector(ta, t0), task_vector(tb, t0)]
    expected = merge_ties(t0, taus, [0.5, 0.5], k=0.3)
    for key in t0:
        torch.testing.assert_close(merged[key], expected[key], atol=1e-6, rtol=0)
    meta = json.loads((out / META_FILE).read_text())
    assert meta["merge"]["method"] == "ties" and meta["merge"]["ties_k"] == 0.3


# --------------------------------------------------------------------------------------
# refusals
# --------------------------------------------------------------------------------------


def test_refuses_other_init(folders, tmp_path):
    with pytest.raises(MergeError) as info:
        merge_students(folders["base"], [(folders["a"], 0.5), (folders["other_init"], 0.5)], tmp_path / "x")
    msg = str(info.value)
    assert str(folders["other_init"]) in msg
    assert f"did not start from the weights in the base: init fingerprint 0123456789abcdef vs {folders['fp']}" in msg
    assert isinstance(info.value, StudentError) and not (tmp_path / "x").exists()


def test_refuses_missing_fingerprint(folders, tmp_path):
    with pytest.raises(MergeError, match="records no init_fingerprint") as info:
        merge_students(folders["base"], [(folders["no_fp"], 1.0)], tmp_path / "x")
    assert str(folders["no_fp"]) in str(info.value)


def test_refuses_other_architecture(folders, tmp_path):
    with pytest.raises(MergeError, match="another architecture") as info:
        merge_students(folders["base"], [(folders["wide"], 1.0)], tmp_path / "x")
    assert "intermediate_size: 96 vs 64" in str(info.value) and str(folders["wide"]) in str(info.value)


def test_refuses_non_student_and_bad_output(folders, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(MergeError, match="not an audioembed student folder"):
        merge_students(folders["base"], [(tmp_path / "empty", 1.0)], tmp_path / "x")
    with pytest.raises(MergeError, match="does not exist"):
        merge_students(folders["base"], [(tmp_path / "nope", 1.0)], tmp_path / "x")
    with pytest.raises(MergeError, match="one of the input students"):
        merge_students(folders["base"], [(folders["a"], 1.0)], folders["a"])
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(MergeError, match="not empty"):
        merge_students(folders["base"], [(folders["a"], 1.0)], tmp_path / "busy")


# --------------------------------------------------------------------------------------
# the merged folder
# --------------------------------------------------------------------------------------


def test_merged_folder_loads_and_records_merge(folders, tmp_path):
    out = merge_students(folders["base"], [(folders["a"], 0.6), (folders["b"], 0.4)], tmp_path / "m")
    up = load_upstream("student", model=str(out))
    assert type(up.model).__name__ == "HubertModel" and up.sample_rate == 16000
    with torch.no_grad():
        res = up(torch.randn(1, 800) * 0.1, torch.tensor([800]))
    assert len(res.hidden_states) == 3 and torch.isfinite(res.hidden_states[-1]).all()
    assert not (out / "heads.safetensors").exists()  # student a had heads; merging drops them
    meta = json.loads((out / META_FILE).read_text())
    assert meta["init_fingerprint"] == folders["fp"]
    assert meta["teachers"] == [{"name": "hubert", "source": "speech-teacher"},
                                {"name": "mert_v1", "source": "music-teacher"}]
    assert meta["target_layers"] == {} and meta["training"] == {}
    merge = meta["merge"]
    assert merge["method"] == "linear" and merge["base"] == str(folders["base"])
    assert [(s["path"], s["weight"]) for s in merge["students"]] == [(str(folders["a"]), 0.6), (str(folders["b"]), 0.4)]
    assert all(s["init_fingerprint"] == folders["fp"] for s in merge["students"])
    assert merge["students"][0]["teachers"] == [{"name": "hubert", "source": "speech-teacher"}]
    # a merged student started from the same base: it can be merged again, and rewritten in place
    again = merge_students(folders["base"], [(out, 1.0)], tmp_path / "m2")
    assert json.loads((again / META_FILE).read_text())["init_fingerprint"] == folders["fp"]
    merge_students(folders["base"], [(folders["a"], 1.0)], out)


def test_sweep_writes_the_grid(folders, tmp_path):
    out = tmp_path / "grid"
    written = sweep(folders["base"], [folders["a"], folders["b"]], out)
    names = ["l0.9-0.1", "l0.8-0.2", "l0.5-0.5", "l0.2-0.8", "l0.1-0.9"]
    assert [p.name for p in written] == names and all(p.parent == out for p in written)
    index = json.loads((out / "sweep.json").read_text())
    assert [(p["folder"], tuple(p["weights"])) for p in index["points"]] == list(zip(names, LAMBDA_GRID))
    assert index["method"] == "linear" and index["students"] == [str(folders["a"]), str(folders["b"])]
    for folder, weights in zip(written, LAMBDA_GRID):
        meta = json.loads((folder / META_FILE).read_text())
        assert [s["weight"] for s in meta["merge"]["students"]] == list(weights)
    t0, ta, tb = (_reload(p) for p in (folders["base"], folders["a"], folders["b"]))
    for folder, (l1, l2) in ((written[0], LAMBDA_GRID[0]), (written[-1], LAMBDA_GRID[-1])):
        merged = _reload(folder)
        for key in t0:
            expected = t0[key] + l1 * (ta[key] - t0[key]) + l2 * (tb[key] - t0[key])
            torch.testing.assert_close(merged[key], expected, atol=1e-6, rtol=0)
    with pytest.raises(MergeError, match="exactly two"):
        sweep(folders["base"], [folders["a"]], tmp_path / "g1")


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------


def _cli():
    group = click.Group("audioembed")
    group.add_command(merge_command)
    return group


def test_parse_add():
    assert parse_add("runs/a:0.25") == ("runs/a", 0.25)
    assert parse_add("C:/runs/a:1e-1") == ("C:/runs/a", 0.1)
    assert parse_add("runs/a", weight_optional=True) == ("runs/a", None)
    with pytest.raises(MergeError, match="PATH:WEIGHT"):
        parse_add("runs/a")
    with pytest.raises(MergeError, match="PATH:WEIGHT"):
        parse_add("runs/a:x")


def test_cli_merge(folders, tmp_path):
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        _cli(),
        ["merge", "--base", str(folders["base"]), "--add", f"{folders['a']}:0.5", "--add", f"{folders['b']}:0.5",
         "--method", "ties", "--ties-k", "0.5", "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert str(out) in result.output
    meta = json.loads((out / META_FILE).read_text())
    assert meta["merge"]["method"] == "ties" and meta["merge"]["ties_k"] == 0.5


def test_cli_sweep(folders, tmp_path):
    out = tmp_path / "cli_grid"
    result = CliRunner().invoke(
        merge_command,
        ["--base", str(folders["base"]), "--add", str(folders["a"]), "--add", str(folders["b"]), "--sweep", "-o", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert all(str(out / name) in result.output for name in ("l0.9-0.1", "l0.5-0.5", "l0.1-0.9"))
    assert (out / "sweep.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--add", "{other_init}:1"], "did not start from the weights in the base"),
        (["--add", "{a}"], "expected PATH:WEIGHT"),
        (["--add", "{a}", "--sweep"], "--sweep needs exactly two --add PATH, got 1"),
        (["--add", "{a}:1", "--ties-k", "0"], "--ties-k"),
        ([], "nothing to merge"),
    ],
)
def test_cli_errors(folders, tmp_path, args, message):
    args = [a.format(**{k: v for k, v in folders.items()}) for a in args]
    result = CliRunner().invoke(_cli(), ["merge", "--base", str(folders["base"]), "-o", str(tmp_path / "o"), *args])
    assert result.exit_code != 0
    assert message in result.output
    assert not (tmp_path / "o").exists()
