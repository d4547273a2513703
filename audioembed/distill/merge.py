"""Task arithmetic on distilled students: task vectors, linear and TIES merging.

Two (or more) students distilled separately from the same initial weights theta_0 (the
*base*, e.g. ``OUT/init`` written by ``audioembed distill --init-only``) define task
vectors ``tau_i = theta_i - theta_0``. A merge writes a new student folder

* ``linear``: ``theta = theta_0 + sum_i l_i * tau_i``;
* ``ties``:   ``theta = theta_0 + merged_tau`` with ``merged_tau`` from :func:`merge_ties`
  (trim, elect sign, weighted disjoint mean).

Weights ``l_i`` may be any numbers for ``linear`` (the task-arithmetic paper uses
``sum_i l_i = 1``, see :data:`LAMBDA_GRID`; a negative weight subtracts a task); ``ties``
needs ``l_i >= 0``. Merging operates on the raw parameters of the state dict (for the
weight-normed positional convolution: its ``original0``/``original1`` tensors).

Refusals (:class:`MergeError`): a folder that is not a student folder; an architecture,
tensor name or tensor shape that differs from the base; a student whose ``init_fingerprint``
is missing or is not the fingerprint of the base's weights (it did not start from theta_0).
The merged folder records the merge in its metadata and has no prediction heads.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Mapping, Sequence

import click
import torch

from ..models.hf_encoder import load_pretrained
from ..models.student_folder import HEADS_FILE, META_FILE, read_student_metadata, save_student
from .student import StudentError, architecture, weights_fingerprint

#: (l_1, l_2) grid of ``--sweep`` for two students (l_1 + l_2 = 1)
LAMBDA_GRID = ((0.9, 0.1), (0.8, 0.2), (0.5, 0.5), (0.2, 0.8), (0.1, 0.9))
METHODS = ("linear", "ties")
DEFAULT_TIES_K = 0.3
SWEEP_INDEX = "sweep.json"
#: left out of merging and comparison (unused at inference; see weights_fingerprint)
_SKIP_SUFFIX = "masked_spec_embed"


class MergeError(StudentError):
    """Students cannot be merged as asked; the message says why."""


# --------------------------------------------------------------------------------------
# reading and checking
# --------------------------------------------------------------------------------------


def load_for_merge(folder) -> tuple:
    """``(HubertModel, metadata)`` of a student folder, float32, eval mode."""
    from transformers import HubertModel

    from ..upstream import UpstreamError

    folder = Path(folder)
    if not folder.is_dir():
        raise MergeError(f"student folder '{folder}' does not exist" if not folder.exists()
                         else f"'{folder}' is a file; pass a student folder")
    try:
        meta = read_student_metadata(folder)
    except UpstreamError as exc:
        raise MergeError(f"cannot merge '{folder}': {exc}") from None
    if not (folder / "config.json").is_file():
        raise MergeError(f"cannot merge '{folder}': it has no config.json")
    try:
        model, info = load_pretrained(HubertModel, folder, dtype=torch.float32, output_loading_info=True)
    except UpstreamError as exc:
        raise MergeError(f"cannot merge '{folder}': {exc}") from None
    missing = sorted(k for k in info.get("missing_keys", ()) if not k.endswith(_SKIP_SUFFIX))
    unexpected = sorted(info.get("unexpected_keys", ()))
    if missing or unexpected:
        raise MergeError(
            f"the weights in '{folder}' do not match its config.json "
            f"(missing: {', '.join(missing[:6]) or 'none'}; unexpected: {', '.join(unexpected[:6]) or 'none'})"
        )
    return model.eval(), meta


def _mergeable_state(model) -> dict:
    """Copies (not views) of the model's tensors, ``masked_spec_embed`` left out."""
    return {k: v.detach().clone() for k, v in model.state_dict().items() if not k.endswith(_SKIP_SUFFIX)}


def check_compatible(base_model, base_meta: Mapping, students: Sequence[tuple]) -> str:
    """Refuse students that cannot be merged onto ``base_model``; returns the base fingerprint.

    ``students`` is a list of ``(folder, model, metadata)``. Checked for each: the
    architecture fields of the config, the tensor names and shapes, and that its
    ``init_fingerprint`` equals ``weights_fingerprint(base_model)``. ``base_meta`` is
    accepted for symmetry (and future checks); the base is identified by its weights.
    """
    base_fp = weights_fingerprint(base_model)
    base_arch = architecture(base_model.config)
    base_state = _mergeable_state(base_model)
    for folder, model, meta in students:
        arch = architecture(model.config)
        diff = [f"{k}: {arch.get(k)!r} vs {v!r} in the base" for k, v in base_arch.items() if arch.get(k) != v]
        if diff:
            raise MergeError(f"student '{folder}' has another architecture than the base: {'; '.join(diff)}")
        state = _mergeable_state(model)
        missing = sorted(set(base_state) - set(state))
        extra = sorted(set(state) - set(base_state))
        shapes = sorted(
            f"{k} {tuple(state[k].shape)} vs {tuple(base_state[k].shape)}"
            for k in set(state) & set(base_state)
            if state[k].shape != base_state[k].shape
        )
        if missing or extra or shapes:
            parts = []
            if missing:
                parts.append(f"missing tensors: {', '.join(missing[:6])}")
            if extra:
                parts.append(f"extra tensors: {', '.join(extra[:6])}")
            if shapes:
                parts.append(f"other shapes: {', '.join(shapes[:6])}")
            raise MergeError(f"student '{folder}' does not have the base's tensors ({'; '.join(parts)})")
        init = meta.get("init_fingerprint") if isinstance(meta, Mapping) else None
        if not isinstance(init, str) or not init:
            raise MergeError(
                f"student '{folder}' records no init_fingerprint, so it cannot be shown to start "
                "from the base weights; only students written by `audioembed distill` can be merged"
            )
        if init != base_fp:
            raise MergeError(
                f"student '{folder}' did not start from the weights in the base: "
                f"init fingerprint {init} vs {base_fp}"
            )
    return base_fp


# --------------------------------------------------------------------------------------
# arithmetic on state dicts (pure functions)
# --------------------------------------------------------------------------------------


def task_vector(theta: Mapping[str, torch.Tensor], theta0: Mapping[str, torch.Tensor]) -> dict:
    """``tau = theta - theta0`` for every floating tensor of ``theta0`` (float32 or wider).

    Non-floating tensors are left out (merging copies them from the base).
    """
    out = {}
    for key, base in theta0.items():
        if not base.is_floating_point():
            continue
        if key not in theta:
            raise MergeError(f"tensor {key} is missing from the model")
        t = theta[key]
        if tuple(t.shape) != tuple(base.shape):
            raise MergeError(f"tensor {key} has shape {tuple(t.shape)}, the base {tuple(base.shape)}")
        dtype = torch.promote_types(base.dtype, torch.float32)
        out[key] = t.detach().to(dtype) - base.detach().to(dtype)
    return out


def _check_weights(taus, weights) -> list[float]:
    weights = [float(w) for w in weights]
    if len(weights) != len(taus):
        raise MergeError(f"{len(taus)} task vectors but {len(weights)} weights")
    if not taus:
        raise MergeError("nothing to merge: give at least one task vector")
    bad = [w for w in weights if not math.isfinite(w)]
    if bad:
        raise MergeError(f"weights must be finite numbers, got {bad}")
    return weights


def _apply(theta0: Mapping[str, torch.Tensor], merged_tau: Mapping[str, torch.Tensor]) -> dict:
    out = {}
    for key, base in theta0.items():
        if base.is_floating_point() and key in merged_tau:
            out[key] = (base.detach().to(merged_tau[key].dtype) + merged_tau[key]).to(base.dtype)
        else:
            out[key] = base.detach().clone()
    return out


def merge_linear(theta0: Mapping[str, torch.Tensor], taus: Sequence[Mapping], weights: Sequence[float]) -> dict:
    """``theta0 + sum_i weights[i] * taus[i]`` per tensor (computed in float64, stored in
    theta0's dtype). Non-floating tensors are copied from ``theta0``."""
    weights = _check_weights(taus, weights)
    merged = {}
    for key, base in theta0.items():
        if not base.is_floating_point():
            continue
        acc = torch.zeros(base.shape, dtype=torch.float64)
        for w, tau in zip(weights, taus):
            acc += w * tau[key].to(torch.float64)
        merged[key] = acc
    return _apply(theta0, merged)


def trim_top_k(tensor: torch.Tensor, k: float) -> torch.Tensor:
    """Keep the entries of ``tensor`` whose magnitude is among its top ``k`` fraction, zero the rest.

    Per tensor: ``n = ceil(k * numel)`` and the threshold is the ``n``-th largest magnitude;
    every entry with ``|x| >= threshold`` (ties included) and ``x != 0`` is kept.
    """
    if not 0.0 < k <= 1.0:
        raise MergeError(f"ties k must be in (0, 1], got {k}")
    if tensor.numel() == 0:
        return tensor.clone()
    flat = tensor.reshape(-1).abs()
    n = min(flat.numel(), max(1, math.ceil(k * flat.numel())))
    threshold = torch.topk(flat, n, largest=True, sorted=True).values[-1]
    keep = (tensor.abs() >= threshold) & (tensor != 0)
    return torch.where(keep, tensor, torch.zeros_like(tensor))


def merge_ties(
    theta0: Mapping[str, torch.Tensor],
    taus: Sequence[Mapping],
    weights: Sequence[float],
    k: float = DEFAULT_TIES_K,
) -> dict:
    """TIES merging (Yadav et al. 2023) with per-model weights; returns ``theta0 + merged_tau``.

    For every floating tensor, entry ``e``:

    1. trim: ``t_i = trim_top_k(tau_i, k)`` -- per tensor, keep the top ``k`` fraction of
       entries of ``tau_i`` by magnitude, set the rest to 0;
    2. elect: ``s[e] = sign(sum_i l_i * t_i[e])`` (weights applied before electing);
    3. disjoint weighted mean over the models that *agree*, i.e. with ``l_i * t_i[e] != 0``
       and ``sign(l_i * t_i[e]) == s[e]``::

           merged_tau[e] = sum_{agree} l_i * t_i[e] / sum_{agree} l_i

       (0 where no model agrees, including ``s[e] == 0``).

    No extra scaling: ``theta = theta0 + merged_tau``. With equal weights this is standard
    TIES with lambda = 1. Weights must be >= 0 (a weight of 0 leaves that model out).
    Non-floating tensors are copied from ``theta0``. Computed in float64.
    """
    weights = _check_weights(taus, weights)
    if any(w < 0 for w in weights):
        raise MergeError(f"ties merging needs weights >= 0 (a weighted mean), got {weights}")
    if not 0.0 < float(k) <= 1.0:
        raise MergeError(f"ties k must be in (0, 1], got {k}")
    merged = {}
    for key, base in theta0.items():
        if not base.is_floating_point():
            continue
        weighted = torch.stack([w * trim_top_k(tau[key].to(torch.float64), k) for w, tau in zip(weights, taus)])
        wcol = torch.tensor(weights, dtype=torch.float64).reshape((-1,) + (1,) * base.dim())
        sign = torch.sign(weighted.sum(dim=0))
        agree = (weighted != 0) & (torch.sign(weighted) == sign)
        num = torch.where(agree, weighted, torch.zeros_like(weighted)).sum(dim=0)
        den = torch.where(agree, wcol.expand_as(weighted), torch.zeros_like(weighted)).sum(dim=0)
        merged[key] = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), torch.zeros_like(num))
    return _apply(theta0, merged)


# --------------------------------------------------------------------------------------
# students on disk
# --------------------------------------------------------------------------------------


def _union_teachers(metas: Sequence[Mapping]) -> list:
    out, seen = [], set()
    for meta in metas:
        for teacher in meta.get("teachers") or []:
            key = json.dumps(teacher, sort_keys=True, default=str)
            if key not in seen:
                seen.add(key)
                out.append(teacher)
    return out


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return False


def _check_output(output: Path, inputs: Sequence[Path], *, sweep: bool = False) -> None:
    """The output must not be an input, and must be new, empty or an earlier merge output."""
    for path in inputs:
        if _same_path(output, path):
            raise MergeError(f"the output '{output}' is one of the input students; choose another folder")
    if not output.exists():
        return
    if not output.is_dir():
        raise MergeError(f"the output '{output}' is a file; give a folder")
    if not any(output.iterdir()):
        return
    if sweep and (output / SWEEP_INDEX).is_file():
        return
    if not sweep and (output / META_FILE).is_file() and not (output / HEADS_FILE).exists():
        try:
            previous = json.loads((output / META_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            previous = {}
        if isinstance(previous, dict) and "merge" in previous:
            return  # an earlier merge: overwrite it
    what = "an earlier sweep" if sweep else "an earlier merge"
    raise MergeError(f"the output '{output}' is a folder that is not empty and not {what}; choose a new folder")


class _Prepared:
    """Base and students loaded, checked, and their task vectors computed (once per sweep)."""

    def __init__(self, base, student_paths: Sequence):
        self.base_path = Path(base)
        self.paths = [Path(p) for p in student_paths]
        if not self.paths:
            raise MergeError("nothing to merge: give at least one student")
        self.base_model, self.base_meta = load_for_merge(self.base_path)
        loaded = [(p, *load_for_merge(p)) for p in self.paths]
        self.base_fp = check_compatible(self.base_model, self.base_meta, loaded)
        self.metas = [meta for _, _, meta in loaded]
        self.theta0 = _mergeable_state(self.base_model)
        self.taus = [task_vector(_mergeable_state(model), self.theta0) for _, model, _ in loaded]

    def merge(self, weights: Sequence[float], method: str, ties_k: float) -> dict:
        if method == "linear":
            return merge_linear(self.theta0, self.taus, weights)
        if method == "ties":
            return merge_ties(self.theta0, self.taus, weights, ties_k)
        raise MergeError(f"unknown merge method {method!r}; choose one of {', '.join(METHODS)}")

    def write(self, output: Path, weights: Sequence[float], method: str, ties_k: float) -> Path:
        state = self.merge(weights, method, ties_k)
        model = self.base_model
        with torch.no_grad():
            own = model.state_dict()
            for key, value in state.items():
                own[key].copy_(value)
        metadata = {
            "init_fingerprint": self.base_fp,
            "teachers": _union_teachers(self.metas),
            "target_layers": {},
            "training": {},
            "merge": {
                "method": method,
                "ties_k": float(ties_k) if method == "ties" else None,
                "base": str(self.base_path),
                "students": [
                    {
                        "path": str(path),
                        "weight": float(w),
                        "teachers": meta.get("teachers") or [],
                        "init_fingerprint": meta.get("init_fingerprint"),
                    }
                    for path, w, meta in zip(self.paths, weights, self.metas)
                ],
            },
        }
        try:
            return save_student(
                model,
                output,
                sample_rate=self.base_meta["sample_rate"],
                normalize=self.base_meta["normalize"],
                metadata=metadata,
            )
        finally:  # the base model holds theta_0 again for the next grid point
            with torch.no_grad():
                own = model.state_dict()
                for key, value in self.theta0.items():
                    own[key].copy_(value)


def _check_method(method: str, ties_k: float) -> None:
    if method not in METHODS:
        raise MergeError(f"unknown merge method {method!r}; choose one of {', '.join(METHODS)}")
    if not 0.0 < float(ties_k) <= 1.0:
        raise MergeError(f"ties k must be in (0, 1], got {ties_k}")


def merge_students(
    base,
    adds: Sequence[tuple[str, float]],
    output,
    method: str = "linear",
    ties_k: float = DEFAULT_TIES_K,
) -> Path:
    """Merge the task vectors of the students ``adds = [(folder, weight), ...]`` onto ``base``
    (a student folder holding theta_0) and write the result as the student folder ``output``.

    The merged student takes sample rate and normalisation from the base's metadata; its
    metadata has ``init_fingerprint`` = the base's fingerprint, the union of the students'
    teachers, and ``merge`` = ``{method, ties_k, base, students: [{path, weight, teachers,
    init_fingerprint}]}``. No ``heads.safetensors`` is written. Weights may be any finite
    numbers for ``linear`` (paper B uses weights summing to 1), ``>= 0`` for ``ties``.
    """
    _check_method(method, ties_k)
    adds = [(Path(p), w) for p, w in adds]
    output = Path(output)
    _check_output(output, [Path(base)] + [p for p, _ in adds])
    prepared = _Prepared(base, [p for p, _ in adds])
    return prepared.write(output, [w for _, w in adds], method, ties_k)


def grid_folder_name(weights: Sequence[float]) -> str:
    """``(0.9, 0.1)`` -> ``l0.9-0.1``."""
    return "l" + "-".join(f"{float(w):g}" for w in weights)


def sweep(base, students: Sequence, output_dir, method: str = "linear", ties_k: float = DEFAULT_TIES_K) -> list[Path]:
    """Merge two students at every point of :data:`LAMBDA_GRID`.

    Writes one student folder per point under ``output_dir`` (``l0.9-0.1``, ...) and the
    index ``output_dir/sweep.json``: ``{method, ties_k, base, students, points: [{folder,
    weights}]}`` (``folder`` relative to ``output_dir``). Returns the folders in grid order.
    """
    _check_method(method, ties_k)
    students = [Path(p) for p in students]
    if len(students) != 2:
        raise MergeError(f"a sweep merges exactly two students, got {len(students)}")
    output_dir = Path(output_dir)
    _check_output(output_dir, [Path(base)] + students, sweep=True)
    prepared = _Prepared(base, students)
    output_dir.mkdir(parents=True, exist_ok=True)
    folders, points = [], []
    for weights in LAMBDA_GRID:
        name = grid_folder_name(weights)
        folders.append(prepared.write(output_dir / name, list(weights), method, ties_k))
        points.append({"folder": name, "weights": list(weights)})
    index = {
        "method": method,
        "ties_k": float(ties_k) if method == "ties" else None,
        "base": str(base),
        "students": [str(p) for p in students],
        "points": points,
    }
    (output_dir / SWEEP_INDEX).write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    return folders


# --------------------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------------------


def parse_add(value: str, *, weight_optional: bool = False) -> tuple[str, float | None]:
    """``PATH:WEIGHT`` (split on the last ':') -> ``(PATH, WEIGHT)``; ``PATH`` alone gives
    ``(PATH, None)`` when ``weight_optional``."""
    path, sep, tail = value.rpartition(":")
    if sep and path:
        try:
            weight = float(tail)
        except ValueError:
            weight = None
        if weight is not None:
            if not math.isfinite(weight):
                raise MergeError(f"--add {value}: the weight must be a finite number")
            return path, weight
    if weight_optional:
        return value, None
    raise MergeError(f"--add {value}: expected PATH:WEIGHT, e.g. --add runs/speech/student:0.5")


@click.command("merge", epilog="""\b
Examples:
  audioembed merge --base runs/speech/init --add runs/speech/student --add runs/music/student -o runs/merged
  audioembed merge --base BASE --add A --add B --sweep -o runs/merged
""")
@click.option("--base", "base", required=True, type=click.Path(),
              help="Student folder with the initial weights theta_0 (e.g. OUT/init of `audioembed distill --init-only`).")
@click.option("--add", "adds", multiple=True, metavar="PATH:WEIGHT",
              help="A student folder and its weight l_i (repeatable; split on the last ':'). "
                   "With --sweep give PATH alone.")
@click.option("--method", type=click.Choice(METHODS), default="linear", show_default=True,
              help="linear: theta_0 + sum l_i tau_i; ties: trim, elect sign, weighted disjoint mean.")
@click.option("--ties-k", type=click.FloatRange(0.0, 1.0, min_open=True), default=DEFAULT_TIES_K, show_default=True,
              help="TIES: fraction of each task vector's entries kept per tensor, by magnitude.")
@click.option("--sweep", "do_sweep", is_flag=True,
              help=f"Merge two students at every (l_1, l_2) of {', '.join(str(p) for p in LAMBDA_GRID)}.")
@click.option("--output", "-o", required=True, type=click.Path(),
              help="Merged student folder; with --sweep the folder that receives one student per grid point.")
def merge_command(base, adds, method, ties_k, do_sweep, output):
    """Merge students distilled from the same initial weights (task arithmetic).

    Each student's task vector tau_i = theta_i - theta_0 is taken against --base; students
    that did not start from the base's weights (init fingerprint), or that have another
    architecture, are refused.
    """
    try:
        parsed = [parse_add(a, weight_optional=do_sweep) for a in adds]
        if do_sweep:
            if len(parsed) != 2:
                raise MergeError(f"--sweep needs exactly two --add PATH, got {len(parsed)}")
            if any(w is not None for _, w in parsed):
                click.echo("warning: --add weights are ignored with --sweep (it uses the grid)", err=True)
            folders = sweep(base, [p for p, _ in parsed], output, method=method, ties_k=ties_k)
            for folder, weights in zip(folders, LAMBDA_GRID):
                click.echo(f"{folder}  (weights {weights[0]:g}, {weights[1]:g})")
            click.echo(f"sweep index written to {Path(output) / SWEEP_INDEX}")
        else:
            if not parsed:
                raise MergeError("nothing to merge: give at least one --add PATH:WEIGHT")
            folder = merge_students(base, parsed, output, method=method, ties_k=ties_k)
            click.echo(f"merged student written to {folder}")
    except StudentError as exc:
        raise click.ClickException(str(exc)) from None
