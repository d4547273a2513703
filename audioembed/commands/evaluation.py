"""``audioembed downstream`` and ``report``: probes of an upstream on a task, and the tables of results."""

from __future__ import annotations

import click

from .options import quiet_option, silence_library_progress_bars, threads_option

DEFAULT_UPSTREAM = "unified_student"


@click.command(epilog="""\b
Examples:
  audioembed downstream genre --shots 8          # the bundled student on GTZAN from the data home
  audioembed downstream classify -u mfcc --data fsdd/labels.csv --label-column digit --shots 1,8,all
""")
@click.argument("task")
@click.option("--upstream", "-u", default=DEFAULT_UPSTREAM, show_default=True,
              help="Registered upstream name (see `audioembed plugins`).")
@click.option("--model", "-m", default=None, help="Hub id or local folder of the weights.")
@click.option("--ckpt", default=None, type=click.Path(), help="Checkpoint folder (students); same as --model PATH.")
@click.option("--data", "-d", default=None, type=click.Path(exists=True),
              help="Dataset folder or manifest [default: the task's standard dataset under $AUDIOEMBED_DATA, "
                   "see `audioembed data list`].")
@click.option("--shots", default="all", show_default=True,
              help="Labelled examples per class for training, e.g. 8 or 1,2,4,8,16,all.")
@click.option("--seeds", default=5, show_default=True, help="Seeds (few-shot subsets and probe inits) per shot setting.")
@click.option("--probe", type=click.Choice(["linear", "mlp", "centroid", "knn"]), default="linear", show_default=True,
              help="Probe head on the weighted layer sum: linear or mlp (trained), centroid or knn (no training; "
                   "classification). See docs/downstreams.md.")
@click.option("--pool", type=click.Choice(["mean", "mean+std"]), default="mean", show_default=True,
              help="Pooling of each layer over time for utterance probes.")
@click.option("--fold-column", default=None, metavar="NAME",
              help="Manifest column with the dataset's own folds: test on each fold in turn.")
@click.option("--ctc-head", type=click.Choice(["lstm", "conv"]), default="lstm", show_default=True,
              help="Head of the CTC probe (ASR): BiLSTM, or a convolution stack that trains faster on CPU.")
@click.option("--layers", default="all", show_default=True, help="Layers the featurizer weights: all, last or indices.")
@click.option("--layer-norm", is_flag=True, help="Normalise each layer before weighting (pre-LN upstreams).")
@click.option("--folds", default=5, show_default=True, help="k for k-fold when the dataset defines no test split.")
@click.option("--max-epochs", default=200, show_default=True, help="Upper bound on probe training epochs (early stopping).")
@click.option("--chunk-seconds", type=float, default=None,
              help="Chunk-level training on long clips [default: the task's, e.g. 10 for genre; 0 = whole clips].")
@click.option("--label-column", default=None, help="Shortcut for --task-option label_column=NAME.")
@click.option("--task-option", "-O", "task_options", multiple=True, metavar="NAME=VALUE", help="Task-specific setting.")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Feature cache folder [default: $AUDIOEMBED_CACHE or ~/.cache/audioembed/features].")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--output", "-o", default="results", show_default=True, type=click.Path(file_okay=False),
              help="Folder for the result files (<task>_<upstream>_....json and .md).")
@threads_option
@quiet_option
def downstream(task, upstream, model, ckpt, data, shots, seeds, probe, pool, fold_column, ctc_head, layers, layer_norm, folds, max_epochs,
               label_column, task_options, cache_dir, device, output, threads, quiet, chunk_seconds):
    """Evaluate an upstream on TASK with layer-weighted probes (full and few-shot)."""
    from ..datasets import default_data_for_task
    from ..downstream import DownstreamConfig, markdown_table, parse_shots, run_downstream
    from ..output_paths import check_output_dir
    from ..threads import requested_threads

    if model and ckpt:
        raise click.UsageError("give either --model or --ckpt, not both")
    silence_library_progress_bars()
    options = {}
    for item in task_options:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"expected NAME=VALUE, got '{item}'", param_hint="--task-option")
        options[name.strip()] = value.strip()
    if label_column:
        options["label_column"] = label_column
    check_output_dir(output)
    if data is None:
        data = str(default_data_for_task(task))
        click.echo(f"data: {data}", err=True)
    config = DownstreamConfig(task=task, upstream=upstream, model=model or ckpt, data=data, shots=parse_shots(shots),
                       seeds=seeds, probe=probe, pool=pool, fold_column=fold_column, ctc_head=ctc_head, layers=layers, folds=folds, layer_norm=layer_norm,
                       max_epochs=max_epochs, chunk_seconds=chunk_seconds, task_options=options, cache_dir=cache_dir,
                       device=device)
    result = run_downstream(config, output, progress=not quiet, threads=requested_threads(threads))
    click.echo(markdown_table(result))


@click.command(epilog="""\b
Examples:
  audioembed report results/ -o report.md       # plots go to report_plots/
""")
@click.argument("results_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--output", "-o", default="report.md", show_default=True, type=click.Path(dir_okay=False),
              help="Markdown report to write; PNG plots go next to it in <stem>_plots/.")
def report(results_dir, output):
    """Gather result files into tasks x upstreams tables (one per dataset) with PNG plots."""
    from ..output_paths import check_output_file
    from ..report import write_report

    check_output_file(output)
    path = write_report(results_dir, output)
    from ..messages import printable

    click.echo(f"wrote {printable(path)}")
