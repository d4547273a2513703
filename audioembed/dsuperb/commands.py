"""The ``audioembed dsuperb`` command group (eval, score, add, list).

Registered on the main CLI by ``audioembed.cli``; kept here so that the whole Dynamic-SUPERB
integration lives in one package. Heavy imports happen inside the commands so ``--help`` and
``list`` stay fast.
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import click

from ..commands.options import silence_library_progress_bars, threads_option
from .catalog import DOMAINS, KINDS, METRICS, Catalog, CatalogError, default_user_registry_path

ENV_DATA_ROOT = "AUDIOEMBED_DSUPERB_DATA"

dsuperb_group = click.Group(
    "dsuperb",
    help="Dynamic-SUPERB Phase-2: probe an upstream on each task, score spoken-LM answers, report by domain.",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="""\b
Examples:
  audioembed dsuperb list --tasks domain:music
  audioembed dsuperb eval --upstream mfcc --tasks domain:music --data-root dsuperb/ -o results/
""",
)

_registry_option = click.option(
    "--registry", type=click.Path(dir_okay=False), default=None,
    help="User registry of local instances [default: $AUDIOEMBED_DSUPERB_REGISTRY or "
         "$XDG_CONFIG_HOME/audioembed/dsuperb_tasks.yaml, when it exists].")
_tasks_option = click.option(
    "--tasks", "-t", default="all", show_default=True,
    help="Comma-separated ids, 'all', 'domain:music', 'category:genre', 'kind:regression' or 'phase:1'.")
_data_root_option = click.option(
    "--data-root", "-d", type=click.Path(file_okay=False), envvar=ENV_DATA_ROOT, default=None,
    help=f"Folder holding the downloaded instances (<id>/, <id>.parquet or a Hub cache) [env: {ENV_DATA_ROOT}].")


@dsuperb_group.command("list", epilog="""\b
Examples:
  audioembed dsuperb list --tasks domain:music
  audioembed dsuperb list --data-root dsuperb/
""")
@_tasks_option
@_data_root_option
@_registry_option
@click.option("--format", "output_format", type=click.Choice(["table", "tsv"]), default="table", show_default=True,
              help="tsv: one line per task for scripts (id, hub id, revision, domain, category, kind, metric; "
                   "'-' when unknown).")
def list_command(tasks, data_root, registry, output_format):
    """List registered tasks with domain, category, kind and metric, and counts per kind and domain."""
    from .loader import InstanceNotFound, locate_instance

    try:
        entries = Catalog.load(registry).select(tasks)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None
    if output_format == "tsv":
        for e in entries:
            click.echo("\t".join([e.id, e.hub_id or "-", e.revision or "-", e.domain, e.category, e.kind, e.metric]))
        return
    width = max(len(e.id) for e in entries)
    found = 0
    for e in entries:
        where = ""
        if data_root is not None:
            try:
                locate_instance(e, data_root)
                where, found = "  [local]", found + 1
            except InstanceNotFound:
                where = "  [missing]"
        revision = f"{(e.revision or '-')[:10]:<10}"
        click.echo(f"{e.id:<{width}}  {e.domain:<6} {e.category:<22} {e.kind:<12} {e.metric:<8} {revision}{where}")
    table = Counter((e.kind, e.domain) for e in entries)
    click.echo("")
    click.echo(f"{'':<14}" + "".join(f"{d:>8}" for d in DOMAINS) + f"{'total':>8}")
    for kind in KINDS:
        cells = [table[(kind, d)] for d in DOMAINS]
        click.echo(f"{kind:<14}" + "".join(f"{c:>8}" for c in cells) + f"{sum(cells):>8}")
    click.echo(f"{len(entries)} tasks" + (f", {found} with a local copy under {data_root}" if data_root else ""))


@dsuperb_group.command("eval", epilog="""\b
Examples:
  audioembed dsuperb eval --upstream mfcc --tasks domain:music --data-root dsuperb/ -o results/
""")
@click.option("--upstream", "-u", required=True, help="Registered upstream name (see `audioembed plugins`).")
@click.option("--model", "-m", default=None, help="Hub id or local folder of the weights.")
@click.option("--ckpt", default=None, type=click.Path(), help="Checkpoint folder (students); same as --model PATH.")
@_tasks_option
@_data_root_option
@click.option("--folds", default=5, show_default=True, help="k of the stratified k-fold inside each test set (>= 3).")
@click.option("--seed", default=0, show_default=True, help="Seed of the folds and the probe initialisation.")
@click.option("--layers", default="all", show_default=True, help="Layers the probe mixes: all, last or indices.")
@click.option("--probe", type=click.Choice(["linear", "mlp"]), default="linear", show_default=True,
              help="Probe of classification tasks (regression always uses ridge).")
@click.option("--max-epochs", default=200, show_default=True, help="Upper bound on probe training epochs (early stopping).")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Feature cache folder [default: $AUDIOEMBED_CACHE or ~/.cache/audioembed/features].")
@_registry_option
@click.option("--output", "-o", default="results", show_default=True, type=click.Path(file_okay=False),
              help="Results folder; each run writes <upstream>-<weights hash>/ with one JSON per task.")
@threads_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def eval_command(upstream, model, ckpt, tasks, data_root, folds, seed, layers, probe, max_epochs, device, cache_dir,
                 registry, output, threads, quiet):
    """Cross-validated probes of an upstream on each selected task, with per-domain averages.

    Finished tasks are skipped on a rerun with the same settings; a broken or missing instance
    is reported and the others go on.
    """
    silence_library_progress_bars()
    from ..extraction import ExtractionError
    from ..store import StoreError
    from ..threads import command_threads
    from ..upstream import UpstreamError
    from .evaluate import DsuperbError, EvalConfig, eval_report_markdown, run_eval

    if model and ckpt:
        raise click.UsageError("give either --model or --ckpt, not both")
    config = EvalConfig(upstream=upstream, model=model or ckpt, tasks=tasks, data_root=data_root, folds=folds,
                        seed=seed, layers=layers, probe=probe, max_epochs=max_epochs, device=device,
                        cache_dir=cache_dir, registry=registry)
    try:
        with command_threads(threads):
            summary = run_eval(config, output, progress=not quiet)
    except (CatalogError, DsuperbError, ExtractionError, StoreError, UpstreamError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(eval_report_markdown(summary, config))
    click.echo(f"wrote {summary.run_dir / 'report.md'}")
    finished = summary.count("done") + summary.count("cached")
    if not finished and summary.count("missing") and not summary.count("failed"):
        where = data_root or "(no --data-root)"
        raise click.ClickException(f"none of the selected tasks has a local copy under {where}; "
                                   "see docs/dynamic_superb.md for downloading instances")
    if summary.count("failed"):
        sys.exit(3 if finished else 1)


@dsuperb_group.command("score", epilog="""\b
Examples:
  audioembed dsuperb score --predictions answers.jsonl --data-root dsuperb/
""")
@click.option("--predictions", "-p", required=True, type=click.Path(exists=True, dir_okay=False),
              help="JSONL: one object per answer with 'instance' (or 'task'), 'file' and 'response'.")
@_data_root_option
@click.option("--tasks", "-t", default=None, help="Only these tasks (same syntax as eval) [default: all answered].")
@click.option("--judge", default=None, help="Grade with this judge plugin instead of the rule-based scorer.")
@_registry_option
@click.option("--output", "-o", default=None, type=click.Path(dir_okay=False), help="Also write the scores as JSON.")
def score_command(predictions, data_root, tasks, judge, registry, output):
    """Score a spoken language model's free-text answers against the instances' labels."""
    from .scoring import ScoreError, score_predictions, score_report_markdown

    try:
        summary = score_predictions(predictions, data_root, tasks=tasks, registry=registry, judge_name=judge)
    except (CatalogError, ScoreError) as exc:
        raise click.ClickException(str(exc)) from None
    except KeyError as exc:  # unknown judge
        raise click.ClickException(str(exc.args[0])) from None
    click.echo(score_report_markdown(summary))
    if output:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(summary.as_dict(), indent=1))
        click.echo(f"wrote {path}")
    if not summary.scores:
        raise click.ClickException("no task could be scored (see the problems above)")


@dsuperb_group.command("add", epilog="""\b
Examples:
  audioembed dsuperb add my_task/ --domain speech
""")
@click.argument("path", type=click.Path(exists=True))
@click.option("--domain", required=True, type=click.Choice(DOMAINS), help="Domain the task belongs to (groups tasks in reports).")
@click.option("--category", default="local", show_default=True, help="Category label of the task in the registry.")
@click.option("--id", "task_id", default=None, help="Task id [default: the folder or file name].")
@click.option("--kind", type=click.Choice(KINDS), default=None, help="Override the kind inferred from the labels.")
@click.option("--metric", type=click.Choice(METRICS), default=None, help="How `score` grades answers [default: by kind].")
@click.option("--revision", default=None, help="Hub commit the local copy was downloaded at.")
@click.option("--registry", type=click.Path(dir_okay=False), default=None,
              help="User registry to write [default: $AUDIOEMBED_DSUPERB_REGISTRY or "
                   "$XDG_CONFIG_HOME/audioembed/dsuperb_tasks.yaml].")
@click.option("--replace", is_flag=True, help="Overwrite an entry with the same id.")
def add_command(path, domain, category, task_id, kind, metric, revision, registry, replace):
    """Register a local instance (PATH: Hub-layout folder, parquet file or save_to_disk folder).

    The kind is inferred from the labels: numbers -> regression, ','/';'-separated tag sets ->
    multi-label, several audio columns -> multi-clip, else single-label.
    """
    from .catalog import DEFAULT_METRIC, TaskEntry, infer_kind, label_summary, write_user_entry
    from .loader import InstanceError, open_instance

    try:
        instance = open_instance(path)
        text = instance.read_text()
        inspection = infer_kind(text.labels, instance.audio_columns)
    except (InstanceError, CatalogError) as exc:
        raise click.ClickException(str(exc)) from None
    source = Path(path).expanduser().resolve()
    task_id = task_id or (source.stem if source.is_file() else source.name)
    kind = kind or inspection.kind
    entry = TaskEntry(id=task_id, domain=domain, category=category, kind=kind, metric=metric or DEFAULT_METRIC[kind],
                      revision=revision, path=str(source), has_audio=bool(instance.audio_columns),
                      note=f"added from {source.name}: {inspection.reason}")
    target = Path(registry) if registry else default_user_registry_path()
    try:
        write_user_entry(entry, target, replace=replace)
    except CatalogError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"added {task_id} ({domain}/{category}, {kind}, metric {entry.metric}) to {target}")
    click.echo(f"  {len(text.ids)} rows, clips: {', '.join(instance.audio_columns) or 'none'}; "
               f"inferred {inspection.kind}: {inspection.reason}")
    click.echo(f"  labels: {label_summary(text.labels)}")
