"""The ``audioembed`` command line."""

from __future__ import annotations

import os
import sys

import click

from . import __version__


def _parse_shard(ctx, param, value):
    if value is None:
        return None
    try:
        index, count = (int(x) for x in value.split("/"))
    except ValueError:
        raise click.BadParameter("expected K/N, e.g. 0/4 (K counts from 0)") from None
    if count < 1 or not 0 <= index < count:
        raise click.BadParameter(f"need 0 <= K < N, got {value}")
    return index, count


def _silence_library_progress_bars() -> None:
    """-q also hides the weight-loading bars of transformers / huggingface_hub."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    except ImportError:  # pragma: no cover - transformers is a dependency
        pass


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="audioembed")
def main() -> None:
    """Layer-wise embeddings, distillation and evaluation of self-supervised audio models."""


@main.command()
@click.option("--upstream", "-u", required=True, help="Registered upstream name (see `audioembed plugins`).")
@click.option("--model", "-m", default=None, help="Hub id or local folder of the weights.")
@click.option("--ckpt", default=None, type=click.Path(), help="Checkpoint folder (students); same as --model PATH.")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="HDF5 feature file to write.")
@click.option("--layers", default="all", show_default=True, help="'all', 'last' or comma-separated indices (negative from the end).")
@click.option("--pool", "pooling", type=click.Choice(["none", "mean", "mean+std", "chunks"]), default="mean",
              show_default=True, help="'none' stores every frame; 'chunks' one mean per --window-seconds window.")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float32", show_default=True)
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-seconds", type=float, default=None,
              help="Audio per padded batch, in seconds [default: one window at a time on CPU, 160 on CUDA].")
@click.option("--window-seconds", type=float, default=30.0, show_default=True,
              help="Long files are processed in windows of this length.")
@click.option("--shard", callback=_parse_shard, default=None, metavar="K/N",
              help="Process shard K of N (0-based); writes OUT-shardKofN.h5. Set automatically under torchrun.")
@click.option("--checkpoint-seconds", type=float, default=10.0, show_default=True,
              help="How often finished utterances are made durable; a hard kill loses at most this much work.")
@click.option("--strict", is_flag=True, help="Stop at the first bad input instead of skipping it.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def extract(upstream, model, ckpt, inputs, output, layers, pooling, dtype, device, batch_seconds, window_seconds,
            shard, checkpoint_seconds, strict, quiet):
    """Extract features of INPUTS (audio files, folders, CSV/TSV/JSONL manifests) into an HDF5 file.

    Rerunning the same command resumes: finished utterances are skipped.
    """
    from .extraction import ExtractionError, extract as run_extract
    from .inputs import InputError
    from .store import StoreError
    from .upstream import UpstreamError

    if model and ckpt:
        raise click.UsageError("give either --model or --ckpt, not both")
    if quiet:
        _silence_library_progress_bars()
    try:
        summary = run_extract(
            list(inputs),
            upstream,
            output,
            model=model or ckpt,
            layers=layers,
            pooling=pooling,
            dtype=dtype,
            device=device,
            batch_seconds=batch_seconds,
            window_seconds=window_seconds,
            shard=shard,
            strict=strict,
            progress=not quiet,
            checkpoint_seconds=checkpoint_seconds,
        )
    except (ExtractionError, InputError, StoreError, UpstreamError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(str(summary))
    if summary.failed:
        sys.exit(3 if summary.extracted or summary.skipped_done else 1)


@main.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--utterances", "-n", default=5, show_default=True, help="How many utterances to list.")
def inspect(paths, utterances):
    """Summarise a feature file (or a shard set: give OUT.h5 or the shard files)."""
    from .store import FeatureReader, StoreError

    try:
        reader = FeatureReader(list(paths) if len(paths) > 1 else paths[0])
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    with reader:
        a = reader.attrs
        click.echo(f"files:        {', '.join(str(f) for f in reader.files)}")
        click.echo(f"upstream:     {a['upstream']}  model: {a.get('model') or '-'}  weights: {a['weights_hash']}")
        click.echo(f"audio:        {a['sample_rate']} Hz, hop {a['hop_length']} -> {a['frame_rate']:g} frames/s")
        click.echo(f"layers:       {reader.layers} of {a.get('num_layers')}  (hidden size {a.get('hidden_size')})")
        click.echo(f"pooling:      {a['pooling']}  dtype: {a['dtype']}")
        click.echo(f"window:       {a['window_samples']} samples + {a['context_samples']} context")
        click.echo(f"written by:   audioembed {a.get('audioembed_version')} at {a.get('created')}")
        infos = [reader.info(i) for i in reader.ids]
        duration = sum(i.duration for i in infos)
        frames = sum(i.num_frames for i in infos)
        click.echo(f"utterances:   {len(infos)}  ({duration:.1f} s of audio, {frames} frames)")
        for info in infos[:utterances]:
            shape = reader.get(info.id, reader.layers[-1]).shape
            click.echo(f"  {info.id}  {info.duration:.2f} s  {info.num_frames} frames  layer shape {shape}")
        if len(infos) > utterances:
            click.echo(f"  ... {len(infos) - utterances} more")


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False))
def gather(inputs, output):
    """Merge a shard set (OUT.h5 finds OUT-shard*of*.h5) into one feature file."""
    from .store import StoreError, gather as run_gather

    try:
        count = run_gather(list(inputs) if len(inputs) > 1 else inputs[0], output)
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{output}: {count} utterances")


@main.command()
@click.argument("task")
@click.option("--upstream", "-u", required=True, help="Registered upstream name.")
@click.option("--model", "-m", default=None, help="Hub id or local folder of the weights.")
@click.option("--ckpt", default=None, type=click.Path(), help="Checkpoint folder (students); same as --model PATH.")
@click.option("--data", "-d", required=True, type=click.Path(exists=True), help="Dataset folder or manifest.")
@click.option("--shots", default="all", show_default=True,
              help="Labelled examples per class for training, e.g. 8 or 1,2,4,8,16,all.")
@click.option("--seeds", default=5, show_default=True, help="Seeds (few-shot subsets and probe inits) per shot setting.")
@click.option("--probe", type=click.Choice(["linear", "mlp", "centroid", "knn"]), default="linear", show_default=True,
              help="Head: linear or mlp (trained), centroid or knn (no training; classification).")
@click.option("--pool", type=click.Choice(["mean", "mean+std"]), default="mean", show_default=True,
              help="Pooling of each layer over time for utterance probes.")
@click.option("--fold-column", default=None, metavar="NAME",
              help="Manifest column with the dataset's own folds: test on each fold in turn.")
@click.option("--ctc-head", type=click.Choice(["lstm", "conv"]), default="lstm", show_default=True,
              help="Head of the CTC probe (ASR): BiLSTM, or a convolution stack that trains faster on CPU.")
@click.option("--layers", default="all", show_default=True, help="Layers the featurizer weights: all, last or indices.")
@click.option("--layer-norm", is_flag=True, help="Normalise each layer before weighting (pre-LN upstreams).")
@click.option("--folds", default=5, show_default=True, help="k for k-fold when the dataset defines no test split.")
@click.option("--max-epochs", default=200, show_default=True)
@click.option("--chunk-seconds", type=float, default=None,
              help="Chunk-level training on long clips [default: the task's, e.g. 10 for genre; 0 = whole clips].")
@click.option("--label-column", default=None, help="Shortcut for --task-option label_column=NAME.")
@click.option("--task-option", "-O", "task_options", multiple=True, metavar="NAME=VALUE", help="Task-specific setting.")
@click.option("--cache-dir", default=None, type=click.Path(file_okay=False),
              help="Feature cache folder [default: $AUDIOEMBED_CACHE or ~/.cache/audioembed/features].")
@click.option("--device", default="auto", show_default=True)
@click.option("--output", "-o", default="results", show_default=True, type=click.Path(file_okay=False))
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def downstream(task, upstream, model, ckpt, data, shots, seeds, probe, pool, fold_column, ctc_head, layers, layer_norm,
               folds, max_epochs, label_column, task_options, cache_dir, device, output, quiet, chunk_seconds):
    """Evaluate an upstream on TASK with layer-weighted probes (full and few-shot)."""
    from .downstream import DownstreamError, RunConfig, markdown_table, parse_shots, run_downstream
    from .extraction import ExtractionError
    from .store import StoreError
    from .tasks import TaskDataError
    from .upstream import UpstreamError

    if model and ckpt:
        raise click.UsageError("give either --model or --ckpt, not both")
    if quiet:
        _silence_library_progress_bars()
    options = {}
    for item in task_options:
        name, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"expected NAME=VALUE, got '{item}'", param_hint="--task-option")
        options[name.strip()] = value.strip()
    if label_column:
        options["label_column"] = label_column
    try:
        config = RunConfig(task=task, upstream=upstream, model=model or ckpt, data=data, shots=parse_shots(shots),
                           seeds=seeds, probe=probe, pool=pool, fold_column=fold_column, ctc_head=ctc_head, layers=layers, folds=folds, layer_norm=layer_norm,
                           max_epochs=max_epochs, chunk_seconds=chunk_seconds, task_options=options, cache_dir=cache_dir, device=device)
        result = run_downstream(config, output, progress=not quiet)
    except (DownstreamError, ExtractionError, StoreError, TaskDataError, UpstreamError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(markdown_table(result))


@main.command()
@click.argument("results_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--output", "-o", default="report.md", show_default=True, type=click.Path(dir_okay=False))
def report(results_dir, output):
    """Gather result files into one tasks x upstreams table with PNG plots."""
    from .report import write_report

    try:
        path = write_report(results_dir, output)
    except FileNotFoundError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"wrote {path}")


@main.command()
def plugins():
    """List every registered upstream and task with the distribution that provides it."""
    from .registry import get_registry

    registry = get_registry()
    for title, table in (("upstreams", registry.upstreams), ("tasks", registry.tasks)):
        click.echo(f"{title}:")
        if not table:
            click.echo("  (none)")
        width = max((len(n) for n in table), default=0)
        for name in sorted(table):
            entry = table[name]
            click.echo(f"  {name:<{width}}  {entry.distribution} [{entry.plugin}]  {entry.spec.summary}")
    if registry.failed:
        click.echo("failed to load:")
        for key, why in sorted(registry.failed.items()):
            click.echo(f"  {key}: {why}")


def _register_distillation() -> None:
    from .distill.commands import distill_cache_command, distill_command
    from .distill.merge import merge_command

    for command in (distill_command, distill_cache_command, merge_command):
        main.add_command(command)


def _register_reproduction() -> None:
    from .corpus.commands import corpus_group
    from .offline.commands import reproduce_command
    from .pretrain.commands import pretrain_command

    for command in (corpus_group, pretrain_command, reproduce_command):
        main.add_command(command)


def _register_dynamic_superb() -> None:
    from .dsuperb.commands import dsuperb_group

    main.add_command(dsuperb_group)


_register_distillation()
_register_dynamic_superb()
_register_reproduction()

if __name__ == "__main__":  # pragma: no cover
    main()
