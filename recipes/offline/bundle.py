"""Ship a finished offline run's models as the package's built-in upstreams.

    python recipes/offline/bundle.py [RUN_DIR]          # default: runs/offline of this repository
    python tests/data/make_bundled_golden.py             # then pin their golden embeddings

Copies, into plugins/pretrained/:

* ``unified_student/``: the run's rule-selected student (``RUN_DIR/unified_student``), without
  the distillation heads, its weights rounded to float16 (``--student-dtype float32`` keeps
  them as trained; the loader computes in float32 either way);
* ``small_hubert/`` and ``small_mert/``: the two teachers, when the run pretrained them
  (``offline_v1.toml``), weights rounded to float16; a run that used the bundled teachers as
  they are (``offline.toml``) leaves them untouched. All three must stay under the 25 MB
  package-data budget.

Absolute paths inside the metadata files are made relative to the repository. Writes
``plugins/pretrained/bundle.json`` (the pick's name, the stored sizes and, for each model
stored in float16, how far the rounding moves its hidden states on a fixed signal), which the
model card (``recipes/offline/model_card.py``) quotes.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
PRETRAINED = REPO / "plugins" / "pretrained"
BUDGET_BYTES = 25 * 2**20
# run teacher name -> (bundled folder, the family upstream that loads it)
TEACHERS = {"speech": ("small_hubert", "hubert"), "music": ("small_mert", "mert")}
METADATA_FILES = ("config.json", "preprocessor_config.json", "audioembed_pretrain.json", "audioembed_student.json")


def relative_paths(text: str, run_dir: Path) -> str:
    """Metadata written by the run names absolute paths; the shipped copy names them from the repo."""
    for root in {str(run_dir.resolve().parents[1]), str(REPO)}:
        text = text.replace(root + "/", "")
    return text


def copy_metadata(src: Path, dst: Path, run_dir: Path) -> None:
    for name in METADATA_FILES:
        if (src / name).is_file():
            (dst / name).write_text(relative_paths((src / name).read_text(), run_dir))


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    if (folder / "model.safetensors").is_file():
        from safetensors.torch import load_file

        return load_file(str(folder / "model.safetensors"))
    return torch.load(str(folder / "pytorch_model.bin"), map_location="cpu", weights_only=True)


def rounding_error(family: str, before: Path, after: Path) -> float:
    """How far float16 storage moves the hidden states: the largest relative L2 error of a layer."""
    a, b = hidden_states(family, after), hidden_states(family, before)
    return max(float((x - y).norm() / y.norm()) for x, y in zip(a, b))


def save_half(src: Path, dst: Path) -> None:
    from safetensors.torch import save_file

    state = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in read_weights(src).items()}
    save_file(state, str(dst / "model.safetensors"), metadata={"format": "pt"})


def hidden_states(family: str, folder: Path, seconds: float = 2.0) -> list[torch.Tensor]:
    from audioembed import load_upstream

    upstream = load_upstream(family, model=str(folder), device="cpu")
    n = int(seconds * upstream.sample_rate)
    t = torch.arange(n) / upstream.sample_rate
    wav = (0.3 * torch.sin(2 * torch.pi * (220 * t + 300 * t**2)) + 0.05 * torch.randn(n, generator=torch.Generator().manual_seed(0)))[None]
    with torch.no_grad():
        return list(upstream(wav, torch.tensor([n])).hidden_states)


def bundle_teacher(run_dir: Path, teacher: str, dest: Path = PRETRAINED) -> dict:
    folder_name, family = TEACHERS[teacher]
    src = run_dir / "teachers" / teacher / "model"
    dst = dest / folder_name
    if not (src / "config.json").is_file():  # the run used the bundled teacher as it is
        if not (dst / "model.safetensors").is_file():
            return {"folder": shown(dst), "bytes": 0, "kept": "not bundled"}
        return {"folder": shown(dst), "bytes": (dst / "model.safetensors").stat().st_size,
                "kept": "the run did not pretrain this teacher; the bundled one is unchanged"}
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    copy_metadata(src, dst, run_dir)
    save_half(src, dst)
    return {"folder": shown(dst), "bytes": (dst / "model.safetensors").stat().st_size,
            "max_layer_relative_error_fp16": rounding_error(family, src, dst)}


def bundle_student(run_dir: Path, dtype: str = "float16", dest: Path = PRETRAINED) -> dict:
    src = run_dir / "unified_student"
    if not (src / "audioembed_student.json").is_file():
        raise SystemExit(f"{src} has no selected student: run the recipe's report stage first")
    dst = dest / "unified_student"
    if dst.exists():
        shutil.rmtree(dst)
    dst.mkdir(parents=True)
    copy_metadata(src, dst, run_dir)
    if dtype == "float32":
        shutil.copyfile(src / "model.safetensors", dst / "model.safetensors")
        return {"folder": shown(dst), "bytes": (dst / "model.safetensors").stat().st_size}
    save_half(src, dst)
    return {"folder": shown(dst), "bytes": (dst / "model.safetensors").stat().st_size,
            "max_layer_relative_error_fp16": rounding_error("student", src, dst)}


def shown(path: Path) -> str:
    """A bundled folder as the report names it: from the repository when inside it."""
    return str(path.relative_to(REPO)) if path.resolve().is_relative_to(REPO) else str(path)


def bundle(run_dir: Path, dest: Path = PRETRAINED, student_dtype: str = "float16") -> dict:
    """Bundle the run's pick (and teachers it pretrained) into ``dest``; writes ``dest/bundle.json``,
    which the model card (recipes/offline/model_card.py) reads."""
    scores = run_dir / "report" / "scores.json"
    selected = json.loads(scores.read_text()).get("best") if scores.is_file() else None
    models = {"unified_student": bundle_student(run_dir, student_dtype, dest)}
    for teacher in TEACHERS:
        models[TEACHERS[teacher][0]] = bundle_teacher(run_dir, teacher, dest)
    report = {"run": run_dir.resolve().name, "selected": selected, "student_dtype": student_dtype,
              "models": models, "total_bytes": sum(r["bytes"] for r in models.values())}
    (dest / "bundle.json").write_text(json.dumps(report, indent=1) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path, default=REPO / "runs" / "offline")
    parser.add_argument("--student-dtype", choices=("float16", "float32"), default="float16",
                        help="storage of the student's weights (computed in float32 either way)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    report = bundle(args.run_dir, student_dtype=args.student_dtype)
    total = report["total_bytes"]
    print(json.dumps(report, indent=1))
    if total > BUDGET_BYTES:
        print(f"over the package-data budget: {total / 2**20:.1f} MB > 25 MB", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
