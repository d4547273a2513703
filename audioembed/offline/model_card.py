"""The model card of the bundled models, written only from the run that made them and the bundle.

Why code and not prose: every number on a card (hours of data per source, sizes, speed,
scores, where the model loses) must be the run's own and must change when the run changes,
so the card is generated like the results page. Two steps, as for the page:
:func:`collect_card` gathers the numbers into JSON-ready data (``OUT/report/card.json``),
:func:`render_card` turns that data alone into markdown. Fixed prose (intended use, the
standing limits of tiny models trained on synthetic audio) lives here, next to the numbers
it frames.

Inputs: the run folder (its page data ``report/page.json``, the selected student's run
config, the teacher-target cache's crop list and the corpora manifests) and the bundle
folder (``plugins/pretrained``: the shipped model folders and ``bundle.json``, written by
``recipes/offline/bundle.py`` with the stored sizes and float16 rounding errors).
"""

from __future__ import annotations

import csv
import json
import math
import tomllib
from collections import defaultdict
from pathlib import Path

from ..errors import AudioEmbedError
from .results import PAGE_DATA, PageScores, ranking_metric, score, target_rows

#: written by recipes/offline/bundle.py inside the bundle folder
BUNDLE_REPORT = "bundle.json"
#: the card's data inside ``OUT/report/``
CARD_DATA = "card.json"
#: safetensors' dtype codes as the card names them
DTYPE_NAMES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64", "I64": "int64"}
#: what each bundled folder is, for the card's first table
ROLES = {"unified_student": "the speech + music student (default)",
         "small_hubert": "HuBERT-style speech teacher", "small_mert": "MERT-style music teacher"}


class CardError(AudioEmbedError, RuntimeError):
    """A run or bundle that lacks what the card is written from (the message names the file)."""


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CardError(f"{path}: missing")
    return json.loads(path.read_text())


def folder_facts(folder: Path) -> dict:
    """Input rate, frame rate, hidden states, parameters and stored size of a bundled model folder."""
    from safetensors import safe_open

    config = _read_json(folder / "config.json")
    weights = folder / "model.safetensors"
    params, dtypes = 0, set()
    with safe_open(str(weights), framework="numpy") as f:
        for key in f.keys():
            tensor = f.get_slice(key)
            params += math.prod(tensor.get_shape())
            dtypes.add(DTYPE_NAMES.get(str(tensor.get_dtype()), str(tensor.get_dtype())))
    meta_file = next((folder / n for n in ("audioembed_student.json", "audioembed_pretrain.json")
                      if (folder / n).is_file()), None)
    meta = json.loads(meta_file.read_text()) if meta_file else {}
    rate = int(meta.get("sample_rate") or config.get("sampling_rate") or 16000)
    hop = math.prod(config.get("conv_stride") or [1])
    return {"name": folder.name, "sample_rate": rate, "frame_rate": rate / hop,
            "hidden_states": int(config.get("num_hidden_layers", 0)) + 1, "hidden_size": config.get("hidden_size"),
            "parameters": params, "bytes": weights.stat().st_size, "dtype": "/".join(sorted(dtypes)),
            "meta": meta}


def source_hours(run_dir: Path) -> list[dict]:
    """Hours of distillation audio per source: the crops the teacher targets were cached for,
    labelled from the corpora manifests (engine or soundfont); real recordings by their folder."""
    crops = Path(run_dir) / "students" / "cache" / "crops.jsonl"
    if not crops.is_file():
        raise CardError(f"{crops}: missing (the card reports the cached distillation crops)")
    labels: dict[str, str] = {}
    for domain, detail in (("speech", "engine"), ("music", "soundfont")):
        manifest = Path(run_dir) / "corpora" / domain / "manifest.csv"
        if manifest.is_file():
            with open(manifest, encoding="utf-8", newline="") as f:
                for row in csv.DictReader(f):
                    labels[f"{domain}/{row['id']}"] = f"{row.get('source', '')}: {row.get(detail, '')}".strip(": ")
    seconds: dict[tuple[str, str], float] = defaultdict(float)
    count: dict[tuple[str, str], int] = defaultdict(int)
    with open(crops, encoding="utf-8") as f:
        for line in f:
            crop = json.loads(line)
            item = crop["item"]
            parts = item.split("/")
            label = labels.get(item) or (f"{parts[1]}: {parts[2]}" if len(parts) > 3 else parts[1] if len(parts) > 1 else item)
            key = (crop.get("domain", parts[0]), label)
            seconds[key] += float(crop["duration"])
            count[key] += 1
    return [{"domain": d, "source": s, "crops": count[(d, s)], "hours": seconds[(d, s)] / 3600}
            for d, s in sorted(seconds)]


def _score_table(s: PageScores, names: list[str], shots: str) -> list[dict]:
    rows = []
    for name in names:
        cells = {}
        for task in s.tasks:
            result = s.results.get((name, task))
            value = score(result, shots, ranking_metric(result, task)) if result is not None else None
            cells[task] = value if value is not None and math.isfinite(value) else None
        rows.append({"model": name, "kind": s.kinds.get(name), "scores": cells})
    return rows


def collect_card(run_dir: Path, bundle_dir: Path) -> dict:
    """Everything the card shows, from the run and the bundle (see the module docstring)."""
    run_dir, bundle_dir = Path(run_dir), Path(bundle_dir)
    page = _read_json(run_dir / "report" / PAGE_DATA)
    bundle = _read_json(bundle_dir / BUNDLE_REPORT)
    s = PageScores(page)
    best = s.selection.best
    if best is None or bundle.get("selected") != best:
        raise CardError(f"{bundle_dir / BUNDLE_REPORT}: bundles {bundle.get('selected')!r} but the run's page "
                        f"selects {best!r}; run recipes/offline/bundle.py on this run first")
    models = [folder_facts(bundle_dir / name) for name in ("unified_student", "small_hubert", "small_mert")
              if (bundle_dir / name / "config.json").is_file()]
    for m in models:
        m["stored"] = bundle.get("models", {}).get(m["name"], {})
    config_file = run_dir / "students" / best / "config.toml"
    run_config = tomllib.loads(config_file.read_text()) if config_file.is_file() else {}
    speed = {m["name"]: m["speed"] for m in page["models"]}
    rivals = [m for m in s.names if s.kinds.get(m) in ("baseline", "previous")]
    teachers = [m for m in s.names if s.kinds.get(m) == "teacher"]
    others = [m for m in s.names if s.kinds.get(m) == "multi" and m != best]
    table_names = [best, *rivals, *teachers, *others]
    return {
        "run": page["run"], "recipe": page["recipe"], "selected": best, "overall": s.selection.overall,
        "models": models, "teachers": models[0]["meta"].get("teachers", []) if models else [],
        "training": models[0]["meta"].get("training", {}) if models else {},
        "optim": {k: run_config.get("optim", {}).get(k) for k in ("lr", "max_steps", "warmup", "weight_decay")},
        "data": source_hours(run_dir),
        "speed": speed.get(best), "stage_minutes": sum(sec for _, sec in page["stages"]) / 60,
        "tasks": s.tasks, "few": s.few,
        "metrics": {t: ranking_metric(next(r for (m, tt), r in s.results.items() if tt == t), t) for t in s.tasks},
        "full": _score_table(s, table_names, "all"),
        "few_shot": _score_table(s, table_names, s.few) if s.few else [],
        "versus": [list(row) for row in target_rows(s.results, s.tasks, s.kinds, best, s.few or "all")],
    }


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _warmup(value) -> str:
    if value is None:
        return "no warm-up"
    return f"warm-up over {value * 100:.0f} % of the steps" if value < 1 else f"warm-up over {value:g} steps"


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def render_card(data: dict) -> str:
    """The model card from the card data alone."""
    best = data["selected"]
    names = [f"`{m['name']}`" for m in data["models"]]
    lines = [f"# Model card: the bundled {', '.join(names[:-1]) + ' and ' if len(names) > 1 else ''}{names[-1]}", "",
             f"Written by `recipes/offline/model_card.py` from the run `{data['run']}/` (recipe "
             f"`{data['recipe']}`) and the bundle in `plugins/pretrained/`; every number below is the "
             "run's own (the full tables are in [results.md](results.md)). Never edit it by hand.", "",
             "| upstream | what | input | frames | hidden states | parameters | weights |",
             "|---|---|---|---|---|---|---|"]
    for m in data["models"]:
        lines.append(f"| `{m['name']}` | {ROLES.get(m['name'], '')} | {m['sample_rate'] / 1000:g} kHz | "
                     f"{m['frame_rate']:g} Hz | {m['hidden_states']} x {m['hidden_size']} d | "
                     f"{m['parameters'] / 1e6:.2f} M | {m['dtype']}, {_mib(m['bytes'])} |")
    for m in data["models"]:
        meta = m["meta"]
        if meta.get("objective"):  # a teacher the project pretrained (audioembed pretrain)
            lines.append(f"\n`{m['name']}`: pretrained by the project (`audioembed pretrain`, docs/pretraining.md), "
                         f"{meta['objective']}, {meta.get('steps')} steps on {meta.get('data', {}).get('hours', 0):.2f} h "
                         "of audio, by the previous study (`recipes/offline/offline_v1.toml`); used here as a teacher "
                         "and shipped unchanged.")
    total = sum(m["bytes"] for m in data["models"])
    lines += ["", f"Package data in all: {_mib(total)} (budget 25 MB). Weights stored in float16 are computed in "
              "float32; the rounding moves the hidden states by at most "
              + ", ".join(f"{m['stored']['max_layer_relative_error_fp16'] * 100:.3f} % ({m['name']})"
                          for m in data["models"] if "max_layer_relative_error_fp16" in m.get("stored", {}))
              + " (relative L2 norm per layer on a 2 s test signal, measured by `recipes/offline/bundle.py`).",
              "", "```bash", "audioembed extract --upstream unified_student FILES -o out.h5",
              "audioembed downstream genre --upstream unified_student --data GTZAN/ --shots 8", "```", "",
              "`unified_student` takes `--ckpt PATH` (or `AUDIOEMBED_UNIFIED_STUDENT=PATH`) to load another "
              "student folder, e.g. the previous default kept at `recipes/offline/previous_unified_student`.", ""]

    lines += ["## Which student, and why", "",
              f"The recipe's selection rule (`audioembed/offline/selection.py`, fixed before the run) picks, among "
              f"the multi-teacher students, the one with the highest overall normalised score on the full "
              f"training sets (per task min-max over every evaluated model; mean of the speech and music "
              f"averages). It picked **`{best}`** (overall {data['overall']:.3f}).", ""]

    lines += ["## Teachers", "", "| teacher | upstream | target layers | frame rate | domains |", "|---|---|---|---|---|"]
    for t in data["teachers"]:
        upstream = t["upstream"] + (f" `{t['model']}`" if t.get("model") else "")
        lines.append(f"| {t['name']} | {upstream} | {', '.join(map(str, t['layers']))} | {t['frame_rate']:g} Hz | "
                     f"{', '.join(t['domains']) or 'all'} |")
    lines += ["", "Each teacher has its own head; its targets are aligned to the student's frame rate, centred "
              "and scaled per layer (docs/distillation.md). See docs/upstreams.md for what each teacher is.", ""]

    training = data["training"]
    lines += ["## Training data and schedule", "",
              "Every crop the teacher targets were cached for (the distillation data; evaluation audio "
              "is never in it):", "", "| domain | source | crops | hours |", "|---|---|---:|---:|"]
    for row in data["data"]:
        lines.append(f"| {row['domain']} | {row['source']} | {row['crops']} | {row['hours']:.2f} |")
    hours = sum(r["hours"] for r in data["data"])
    lines.append(f"| all | | {sum(r['crops'] for r in data['data'])} | {hours:.2f} |")
    augment = training.get("augment") or {}
    kinds = [k for k in ("speed", "pitch", "reverb", "noise", "band", "gain") if k in augment]
    optim = data["optim"]
    lines += ["", f"{training.get('max_steps', optim.get('max_steps'))} steps of {training.get('batch_size')} x "
              f"{training.get('crop_seconds')} s crops, AdamW lr {optim.get('lr')}, {_warmup(optim.get('warmup'))}, "
              f"seed {training.get('seed')}"
              + (f"; each crop augmented with probability {augment.get('prob')} ({', '.join(kinds)})" if augment else "")
              + ". Recipe wall time of the whole run (every stage, 2 CPU cores): "
              f"{data['stage_minutes']:.0f} min.", ""]

    lines += ["## Speed", "",
              f"{best}: {data['speed']:.0f}x real time on one CPU thread (10 s of audio, measured by the run's "
              "report stage; docs/benchmarks.md has the benchmarks)." if data.get("speed") else
              "Speed: not measured by this run.", ""]

    metric = data["metrics"]
    head = "| model | " + " | ".join(f"{t} ({metric[t]})" for t in data["tasks"]) + " |"
    rule = "|---|" + "---|" * len(data["tasks"])
    for title, rows in (("Full training sets", data["full"]), (f"{data['few']} examples per class", data["few_shot"])):
        if not rows:
            continue
        lines += [f"## Scores: {title}", "", "Mean over seeds of each task's ranking metric (results.md has ± std "
                  "and the other metrics).", "", head, rule]
        for row in rows:
            label = f"**{row['model']}**" if row["model"] == best else f"{row['model']} ({row['kind']})"
            lines.append(f"| {label} | " + " | ".join(_cell(row["scores"].get(t)) for t in data["tasks"]) + " |")
        lines.append("")

    versus = data["versus"]
    wins = sum(v[3] == "yes" for v in versus)
    losses = [v for v in versus if v[3] == "no"]
    lines += ["## Against the baselines and the previous default", "",
              f"Better in {wins} of {len(versus)} comparisons (per task, full training sets and {data['few']} shots)."]
    if losses:
        lines += ["Not better in:", ""] + [f"- {task} ({m}), {column}: {best} {_cell(a)} vs {rival} {_cell(b)}"
                                           for task, column, rival, _, a, b, m in losses]
    lines.append("")

    lines += ["## Intended use", "",
              "- A working default so that the toolkit's commands run offline right after install: tests, demos, "
              "pipelines, tutorials, and a baseline to compare one's own students against.",
              "- Features for small probing experiments on speech and music, where the scores above are a fair guide.",
              "", "## Limits", "",
              "- Tiny and briefly trained on 2 CPU cores: not a substitute for HuBERT-, WavLM- or MERT-size models.",
              "- Distilled on synthetic audio (text-to-speech voices reading English ARCTIC prompts, General MIDI "
              "renderings) plus a few real recordings; the augmentation widens the inputs, but real recordings, "
              "other languages, singing and production music are outside the training data.",
              "- The teachers' own limits carry over (GE2E: English read speech; CREPE: monophonic pitch; "
              "Basic Pitch: note transcription).",
              "- No speaker, language or content safety analysis was done; not for biometric use.", "",
              "## Reproduce", "", "```bash",
              f"audioembed reproduce -c recipes/offline/{data['recipe']}   # resumable",
              "python recipes/offline/bundle.py                  # the selected student into plugins/pretrained/",
              "python tests/data/make_bundled_golden.py          # pins the bundled models' embeddings",
              "python recipes/offline/publish_results.py         # docs/results.md",
              "python recipes/offline/model_card.py              # this card", "```", ""]
    return "\n".join(lines)


def write_card(run_dir: Path, bundle_dir: Path, path: Path) -> Path:
    """Collect the card data (kept as ``RUN_DIR/report/card.json``) and write the card at ``path``."""
    data = collect_card(run_dir, bundle_dir)
    (Path(run_dir) / "report" / CARD_DATA).write_text(json.dumps(data, indent=1, default=str))
    Path(path).write_text(render_card(data))
    return Path(path)
