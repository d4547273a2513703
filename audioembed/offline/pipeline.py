"""Stages of the offline reproduction and the runner that resumes them.

A stage is a function of the :class:`Context`; it writes under the run folder and returns a
small summary, stored in ``OUT/stages/<stage>.json`` as the done-marker. Stages that train
(teachers, students) are resumable themselves through their own checkpoints, so a run that
is killed mid-stage loses at most one checkpoint interval. The config (TOML or YAML) is
described in ``docs/reproduction.md`` and typed in :mod:`.recipe`; relative paths in it are
relative to the file.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from ..errors import AudioEmbedError
from ..training.config import ConfigError
from .recipe import PRETRAIN_KINDS, TASK_DOMAINS, RecipeConfig, StudentRun, init_teachers, read_recipe

STAGES = ("corpora", "evalsets", "teachers", "caches", "students", "merges", "evaluate", "report")


class ReproduceError(AudioEmbedError, RuntimeError):
    """A stage cannot run; the message names the stage and the cause."""


def deep_merge(base: Mapping, extra: Mapping) -> dict:
    out = copy.deepcopy(dict(base))
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class Context:
    """The parsed recipe config and the run folder."""

    #: the file's mapping with the overrides applied (recorded in invocations.jsonl)
    raw: dict
    recipe: RecipeConfig
    base_dir: Path
    output_dir: Path
    source: str
    progress: bool = True
    overrides: tuple[str, ...] = ()
    log: Callable[[str], None] = field(default=lambda msg: print(msg, file=sys.stderr, flush=True))

    @property
    def seed(self) -> int:
        return self.recipe.run.seed

    @property
    def device(self) -> str:
        return self.recipe.run.device

    def section(self, name: str) -> dict:
        value = self.raw.get(name) or {}
        if not isinstance(value, Mapping):
            raise ConfigError(f"{self.source}: [{name}] must be a table")
        return dict(value)

    def path(self, value: str | None) -> Path | None:
        """A path from the config, relative to the config file's folder."""
        if not value:
            return None
        p = Path(os.path.expanduser(str(value)))
        return p if p.is_absolute() else (self.base_dir / p).resolve()

    # folders of the run
    def dir(self, *parts: str) -> Path:
        return self.output_dir.joinpath(*parts)

    def marker(self, stage: str) -> Path:
        return self.dir("stages", f"{stage}.json")

    def done(self, stage: str) -> dict | None:
        path = self.marker(stage)
        return json.loads(path.read_text()) if path.is_file() else None


def load_recipe(path: str | os.PathLike, overrides: list[str] = ()) -> Context:
    raw, recipe, base = read_recipe(path, list(overrides))
    out = Path(os.path.expanduser(recipe.run.output_dir))
    if not out.is_absolute():
        out = (base / out).resolve()
    return Context(raw=raw, recipe=recipe, base_dir=base, output_dir=out, source=recipe.source,
                   overrides=tuple(overrides))


# ----------------------------------------------------------------------------- stages


def _options(ctx: Context, cls, values: dict, section: str):
    """A corpus options dataclass from a config table (lists become tuples); unknown keys are
    a config error naming the section, not a TypeError."""
    known = {f.name for f in dataclasses.fields(cls)} - {"seed", "progress"} | {"progress"}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"{ctx.source}: [{section}] unknown key(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known - {'progress', 'real_dir'}))}")
    return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def stage_corpora(ctx: Context) -> dict:
    """Speech (TTS of the ARCTIC prompts) and music (rendered MIDI) corpora."""
    from ..corpus.music import MusicCorpusOptions, build_music_corpus
    from ..corpus.speech import SpeechCorpusOptions, build_speech_corpus

    cfg = ctx.recipe.corpus
    speech = dict(cfg.speech)
    prompts = ctx.path(speech.pop("prompts", None))
    if prompts is None:
        raise ConfigError(f"{ctx.source}: [corpus.speech] prompts = the CMU ARCTIC prompt file is required")
    real = ctx.path(speech.pop("real", None))
    speech.update(real_dir=str(real) if real else None, progress=ctx.progress)
    options = _options(ctx, SpeechCorpusOptions, speech, "corpus.speech")
    speech_manifest = build_speech_corpus(ctx.dir("corpora", "speech"), prompts_path=prompts, seed=ctx.seed,
                                          options=options, warn=ctx.log)
    music = dict(cfg.music)
    fonts = []
    for font in music.pop("soundfonts", None) or ["default"]:
        path = font if font == "default" else ctx.path(font)
        if path != "default" and not path.is_file():
            ctx.log(f"warning: soundfont {path} not found, left out (Debian: apt-get install -y fluidr3mono-gm-soundfont)")
            continue
        fonts.append(str(path))
    music.update(soundfonts=fonts or ["default"], progress=ctx.progress)
    music_manifest = build_music_corpus(ctx.dir("corpora", "music"), seed=ctx.seed,
                                        options=_options(ctx, MusicCorpusOptions, music, "corpus.music"), warn=ctx.log)
    return {"speech": str(speech_manifest), "music": str(music_manifest)}


def stage_evalsets(ctx: Context) -> dict:
    """Task manifests: ASR and speaker ID, FSDD, key, style, tagging, Sonic Pi families."""
    from . import evalsets

    corpora = ctx.done("corpora")
    out_dir = ctx.dir("eval")
    before = {p.name: p.read_bytes() for p in out_dir.glob("*.csv")} if out_dir.is_dir() else {}
    sets: dict[str, Path] = {}
    cfg = ctx.recipe.evaluation
    sets.update(evalsets.speech_sets(Path(corpora["speech"]), out_dir, seed=ctx.seed, asr_train=cfg.asr_train))
    sets.update(evalsets.music_sets(Path(corpora["music"]), out_dir))
    fsdd, sonic = ctx.path(cfg.fsdd), ctx.path(cfg.sonic_pi)
    if fsdd is not None:
        if (fsdd / "labels.csv").is_file():
            sets["fsdd"] = evalsets.fsdd_set(fsdd, out_dir)
        else:
            ctx.log(f"warning: {fsdd}/labels.csv not found: the FSDD digit task is left out")
    if sonic is not None:
        if sonic.is_dir():
            sets["sonic_pi"] = evalsets.sonic_pi_set(sonic, out_dir)
        else:
            ctx.log(f"warning: {sonic} not found: the Sonic Pi family task is left out")
    wanted = cfg.tasks or list(TASK_DOMAINS)
    table = {k: v for k, v in evalsets.task_table(sets).items() if k in wanted}
    # A set rebuilt with other contents (e.g. another evaluation.asr_train) makes the finished
    # evaluations on it stale: drop their markers so that `evaluate` runs them again.
    for name, task in table.items():
        path = Path(task["data"])
        if path.name in before and before[path.name] != path.read_bytes():
            stale = sorted(ctx.dir("results").glob(f"*/{name}.json"))
            for marker in stale + [ctx.marker("evaluate"), ctx.marker("report")]:
                marker.unlink(missing_ok=True)
            ctx.log(f"[evalsets] {name}: the set changed; {len(stale)} finished evaluation(s) on it will run again")
    return {"tasks": table}


def training_manifest(ctx: Context, name: str) -> Path:
    """What teachers and students may learn from: the corpus' ``pretrain.csv`` when it has one
    (the speech corpus: its train split plus real recordings that are no test data), else the
    train split of its manifest. Dev and test audio never is."""
    from .evalsets import read_rows, write_rows

    corpus = Path(ctx.done("corpora")[name])
    pool = corpus.parent / "pretrain.csv"
    if pool.is_file():
        rows = read_rows(pool)
    else:
        rows = [r for r in read_rows(corpus) if r.get("split") == "train"]
    rows = [{"path": r["path"], "id": f"{name}/{r.get('id') or r['path']}", "domain": name} for r in rows]
    return write_rows(ctx.dir("train", f"{name}.csv"), rows, ("path", "id", "domain"))


def _pretrain_config(ctx: Context, name: str, manifests: list[str]):
    from ..pretrain.config import config_from_dict

    spec = ctx.recipe.teachers.spec(name)
    kind = spec.pop("kind")
    raw = deep_merge({"kind": kind, "data": {"manifests": manifests},
                      "run": {"output_dir": str(ctx.dir("teachers", name)), "seed": ctx.seed, "device": ctx.device}},
                     spec)
    return config_from_dict(raw, ctx.base_dir, f"{ctx.source} [teachers.{name}]")


def stage_teachers(ctx: Context) -> dict:
    """Pretrain the teachers the recipe trains itself (HuBERT-style speech, MERT-style music);
    ready-made teachers (``upstream = ...``: bundled models, wheel weights) are checked to load."""
    from ..pretrain.trainer import pretrain
    from ..registry import load_upstream

    out = {}
    for name, entry in ctx.recipe.teachers.entries.items():
        if not entry.pretrained_here:
            # fail here, in one line, rather than after the corpus is cached for other teachers
            upstream = load_upstream(entry.upstream, model=entry.model, device="cpu")
            out[name] = {"folder": entry.model, "upstream": entry.upstream, "pretrained_here": False,
                         "sample_rate": upstream.sample_rate, "frame_rate": upstream.sample_rate / upstream.hop_length,
                         "layers": upstream.num_layers}
            del upstream
            continue
        corpus = PRETRAIN_KINDS[entry.pretrain["kind"]]  # a speech teacher learns from the speech corpus
        config = _pretrain_config(ctx, name, [str(training_manifest(ctx, corpus))])
        ctx.log(f"[teachers] pretraining the {name} teacher ({config.kind}, {config.optim.max_steps} steps)")
        folder = pretrain(config, progress=ctx.progress)
        if folder.name != "model":
            raise ReproduceError(f"[teachers] the {name} teacher stopped at {folder}; rerun to continue")
        out[name] = {"folder": str(folder), "upstream": "hubert" if config.kind == "hubert" else "mert",
                     "pretrained_here": True}
    return {"teachers": out}


def _distill_corpus(ctx: Context) -> Path:
    """One manifest of both training sets, each row with its domain."""
    from .evalsets import read_rows, write_rows

    rows = [row for name in ("speech", "music") for row in read_rows(training_manifest(ctx, name))]
    return write_rows(ctx.dir("train", "both.csv"), rows, ("path", "id", "domain"))


def _teacher_specs(ctx: Context, names) -> list[dict]:
    teachers = ctx.done("teachers")["teachers"]
    specs = []
    for n in names:
        entry = ctx.recipe.teachers.entries[n]
        spec = {"name": n, "upstream": teachers[n]["upstream"], "model": teachers[n]["folder"],
                "domains": list(entry.domains)}
        if entry.layers is not None:
            spec["layers"] = list(entry.layers)
        specs.append(spec)
    return specs


def cached_teachers(ctx: Context) -> list[str]:
    """Every teacher some student run learns from, in [teachers] order."""
    used = {t for run in ctx.recipe.students.runs for t in run.teachers}
    return [n for n in ctx.recipe.teachers.names if n in used]


def _student_raw(ctx: Context, run: StudentRun, corpus: Path, *, cache: bool = True) -> dict:
    cfg = ctx.recipe.students
    raw = deep_merge(cfg.config, {
        "teachers": _teacher_specs(ctx, run.teachers),
        "data": {"manifests": [str(corpus)]},
        "run": {"output_dir": str(ctx.dir("students", run.name)), "seed": ctx.seed, "device": ctx.device},
    })
    if cache and cfg.cache:
        raw["data"]["cache_dir"] = str(ctx.dir("students", "cache"))
    raw = deep_merge(raw, run.config)
    for teacher in raw["teachers"]:
        weight = run.weights.get(teacher["name"])
        if weight is not None:
            teacher["weight"] = float(weight)
    return raw


def stage_caches(ctx: Context) -> dict:
    """Run each teacher once over the training crops (float16 targets in HDF5)."""
    from ..distill.cache import prepare_teacher_cache
    from ..distill.config import config_from_dict

    if not ctx.recipe.students.cache:
        return {"cache": None}
    corpus = _distill_corpus(ctx)
    config = config_from_dict(_student_raw(ctx, StudentRun(name="cache", teachers=cached_teachers(ctx)), corpus),
                              ctx.base_dir, ctx.source)
    built = prepare_teacher_cache(config, progress=ctx.progress, warn=ctx.log)
    return {"cache": built.cache_dir, "crops": built.crops, "written": built.written}


def _train_student(ctx: Context, raw: dict, init_only: bool = False) -> Path:
    from ..distill.config import config_from_dict
    from ..distill.trainer import Trainer

    config = config_from_dict(raw, ctx.base_dir, ctx.source)
    trainer = Trainer(config, progress=ctx.progress, warn=ctx.log)
    folder = trainer.run(init_only=init_only)
    if not init_only and folder.name != "student":
        raise ReproduceError(f"[students] {config.run.output_dir} stopped at {folder}; rerun to continue")
    return folder


def stage_students(ctx: Context) -> dict:
    """theta_0, then every student run of ``[[students.runs]]`` from it."""
    cfg = ctx.recipe.students
    corpus = _distill_corpus(ctx)
    if not cfg.runs:
        raise ConfigError(f"{ctx.source}: [students] runs is empty")
    init_run = StudentRun(name="init", teachers=init_teachers(cfg.init) or ctx.recipe.teachers.names[:1],
                          config={"student": {"init": cfg.init, "arch": cfg.arch}})
    init = _train_student(ctx, _student_raw(ctx, init_run, corpus, cache=False), init_only=True)
    out = {"init": str(init), "runs": {}}
    for run in cfg.runs:
        raw = _student_raw(ctx, run, corpus)
        raw.setdefault("student", {})
        raw["student"]["init"] = str(init)
        raw["student"]["arch"] = {}
        ctx.log(f"[students] {run.name}: teachers {', '.join(t['name'] for t in raw['teachers'])}")
        out["runs"][run.name] = {"folder": str(_train_student(ctx, raw)), "kind": run.kind}
    return out


def stage_merges(ctx: Context) -> dict:
    """Task arithmetic of the speech-only and music-only students over the lambda grid."""
    from ..distill.merge import merge_students, sweep

    cfg = ctx.recipe.merge
    students = ctx.done("students")
    pair = cfg.pair
    if not pair:
        return {"merges": {}}
    missing = [p for p in pair if p not in students["runs"]]
    if missing:
        raise ConfigError(f"{ctx.source}: [merge] pair names student run(s) {missing} that [[students.runs]] lacks")
    folders = [students["runs"][p]["folder"] for p in pair]
    out = {}
    grid = sweep(students["init"], folders, ctx.dir("merges", "linear"), method="linear")
    out.update({f"merge_{p.name}": str(p) for p in grid})
    if cfg.ties:
        path = merge_students(students["init"], [(f, 0.5) for f in folders], ctx.dir("merges", "ties", "l0.5-0.5"),
                              method="ties", ties_k=cfg.ties_k)
        out["merge_ties_l0.5-0.5"] = str(path)
    return {"merges": out}


def finished_students(ctx: Context) -> dict[str, dict]:
    """Student runs whose final folder exists: every run once the stage is done; before that,
    those finished so far, so that ``--only evaluate`` beside a run still training evaluates
    them (their results are then reused when the stage itself evaluates)."""
    from ..models.student_folder import META_FILE

    done = ctx.done("students")
    if done is not None:
        return dict(done.get("runs") or {})
    out = {}
    for run in ctx.recipe.students.runs:
        folder = ctx.dir("students", run.name, "student")
        if (folder / META_FILE).is_file():
            out[run.name] = {"folder": str(folder), "kind": run.kind}
    return out


def models(ctx: Context) -> dict[str, dict]:
    """Every model to evaluate: name -> {upstream, model, kind}."""
    cfg = ctx.recipe.evaluation
    table: dict[str, dict] = {b: {"upstream": b, "model": None, "kind": "baseline"} for b in cfg.baselines}
    if cfg.teachers:
        teachers = (ctx.done("teachers") or {}).get("teachers") or {}
        for name, t in teachers.items():
            table[f"teacher_{name}"] = {"upstream": t["upstream"], "model": t["folder"], "kind": "teacher"}
    for name, s in finished_students(ctx).items():
        table[name] = {"upstream": "student", "model": s["folder"], "kind": s.get("kind") or "student"}
    for name, folder in ((ctx.done("merges") or {}).get("merges") or {}).items():
        table[name] = {"upstream": "student", "model": folder, "kind": "merge"}
    for name, spec in cfg.models.items():
        model = spec.get("model")
        if model is not None:  # a folder relative to the recipe, else a source string as it is
            candidate = ctx.path(model)
            model = str(candidate) if candidate is not None and candidate.exists() else model
        table[name] = {"upstream": spec["upstream"], "model": model, "kind": spec.get("kind") or "other"}
    return table


CTC_TASKS = ("asr",)  # downstreams trained with a CTC head (evaluation.ctc_head applies to them)


def _probe_settings(config, ctc: bool) -> dict:
    """What a finished (model, task) result depends on besides the model and the data."""
    from ..downstream import shots_label

    from ..downstream import FIT_PROTOCOL

    settings = {"shots": [shots_label(s) for s in config.shots], "seeds": config.seeds, "probe": config.probe,
                "max_epochs": config.max_epochs, "task_options": config.task_options, "training": FIT_PROTOCOL}
    if ctc:
        settings["ctc_head"] = config.ctc_head
    if config.pool != "mean":  # results written before pooling was a setting were mean-pooled
        settings["pool"] = config.pool
    return settings


def task_pool(task: str, wanted: str) -> str:
    """``evaluation.pool`` for utterance tasks; tasks trained on chunks or frames keep their own
    (chunk means, frames): the result files record which pooling each task used."""
    from ..registry import get_registry

    built = get_registry().task_spec(task).build()
    return "mean" if task in CTC_TASKS or built.chunk_seconds else wanted


def stage_evaluate(ctx: Context) -> dict:
    """Every model on every task, full and few-shot; one result file per (model, task)."""
    tasks = ctx.done("evalsets")["tasks"]
    cache_dir = str(ctx.dir("features"))
    done = {}
    # Task by task, the slow CTC (ASR) probes last: a page written while this stage still runs
    # (`--only report`) then compares every model on the tasks finished so far.
    order = sorted(tasks, key=lambda name: tasks[name]["task"] in CTC_TASKS)
    while True:
        before = set(models(ctx))
        for task_name in order:
            # read again per task: a student run that finishes while `--only evaluate` runs beside
            # the students stage joins from the next task on, and the next pass covers the rest
            _evaluate_task(ctx, task_name, tasks[task_name], models(ctx), cache_dir, done)
        if set(models(ctx)) <= before:
            return {"results": done}


def _evaluate_task(ctx: Context, task_name: str, t: dict, table: dict[str, dict], cache_dir: str, done: dict) -> None:
    """Every model of ``table`` on one task; a (model, task) with a marker of the same settings is reused."""
    from ..downstream import DownstreamConfig, parse_shots, result_stem, run_downstream

    cfg = ctx.recipe.evaluation
    for model_name, m in table.items():
        out_dir = ctx.dir("results", model_name)
        marker = out_dir / f"{task_name}.json"
        config = DownstreamConfig(
            task=t["task"], upstream=m["upstream"], model=m["model"], data=t["data"],
            shots=parse_shots(cfg.shots_for(task_name)), seeds=cfg.seeds_for(task_name), probe=cfg.probe,
            ctc_head=cfg.ctc_head, pool=task_pool(t["task"], cfg.pool), max_epochs=cfg.max_epochs_for(task_name), task_options=dict(t["options"]),
            cache_dir=cache_dir, device=ctx.device,
        )
        settings = _probe_settings(config, ctc=t["task"] in CTC_TASKS)
        if marker.is_file():
            previous = json.loads(marker.read_text())
            if previous.get("settings") == settings:
                done[f"{model_name}/{task_name}"] = previous["result"]
                continue
            # Changed shots/seeds/probe (--set evaluation.* on a resumed run): the old numbers
            # answer another question. Extracted features stay cached, so only the probes rerun.
            ctx.log(f"[evaluate] {model_name} on {task_name}: probe settings changed, evaluating again")
        ctx.log(f"[evaluate] {model_name} on {task_name}")
        started = time.monotonic()
        # one folder per task: several tasks share the `classify` downstream, and so its file names
        result = run_downstream(config, out_dir / task_name, progress=ctx.progress)
        path = out_dir / task_name / f"{result_stem(result)}.json"
        record = {"model": model_name, "task": task_name, "result": str(path), "settings": settings,
                  "seconds": round(time.monotonic() - started, 1)}
        tmp = marker.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, marker)
        done[f"{model_name}/{task_name}"] = str(path)


def stage_report(ctx: Context) -> dict:
    from .results import write_results

    return write_results(ctx)


STAGE_FUNCTIONS: dict[str, Callable[[Context], dict]] = {
    "corpora": stage_corpora,
    "evalsets": stage_evalsets,
    "teachers": stage_teachers,
    "caches": stage_caches,
    "students": stage_students,
    "merges": stage_merges,
    "evaluate": stage_evaluate,
    "report": stage_report,
}


def run_recipe(ctx: Context, *, until: str | None = None, redo: tuple[str, ...] = (),
               only: str | None = None) -> dict[str, dict]:
    """Run the stages in order, skipping finished ones (``redo`` forces a stage again).

    ``only``: run just that stage now, whatever is done (e.g. ``report`` while ``evaluate``
    is still running elsewhere: the page then has the results finished so far)."""
    for name in (until, only):
        if name is not None and name not in STAGES:
            raise ConfigError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
    if only is not None:
        until, redo = only, tuple(redo) + (only,)
    ctx.output_dir.mkdir(parents=True, exist_ok=True)
    # The effective config of every invocation: a resumed run may have changed later stages' settings.
    with open(ctx.dir("invocations.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps({"time": time.strftime("%Y-%m-%d %H:%M:%S"), "recipe": ctx.source,
                            "overrides": list(ctx.overrides), "until": until, "redo": list(redo),
                            "config": ctx.raw}, default=str) + "\n")
    summaries = {}
    for stage in STAGES:
        previous = ctx.done(stage)
        if only is not None and stage != only:
            summaries[stage] = previous or {}
            continue
        if previous is not None and stage not in redo:
            summaries[stage] = previous
        else:
            ctx.log(f"== stage {stage}")
            started = time.monotonic()
            summary = STAGE_FUNCTIONS[stage](ctx)
            summary["seconds"] = round(time.monotonic() - started, 1)
            if only is None:  # a stage run out of order is not marked done
                marker = ctx.marker(stage)
                marker.parent.mkdir(parents=True, exist_ok=True)
                tmp = marker.with_suffix(".tmp")
                tmp.write_text(json.dumps(summary, indent=1, default=str))
                os.replace(tmp, marker)
            summaries[stage] = summary
            ctx.log(f"== stage {stage} done in {summary['seconds']} s")
        if stage == until:
            break
    return summaries
