"""``audioembed extract``, ``inspect`` and ``gather``: writing and reading feature files."""

from __future__ import annotations

import sys
import warnings

import click

from .options import quiet_option, silence_library_progress_bars, threads_option


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


@click.command(epilog="""\b
Examples:
  audioembed extract --upstream unified_student audio/ -o feats.h5
  audioembed extract -u hubert -m facebook/hubert-base-ls960 data/manifest.csv -o hubert.h5 --pool none
""")
@click.option("--upstream", "-u", required=True, help="Registered upstream name (see `audioembed plugins`).")
@click.option("--model", "-m", default=None, help="Hub id or local folder of the weights.")
@click.option("--ckpt", default=None, type=click.Path(), help="Checkpoint folder (students); same as --model PATH.")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="HDF5 feature file to write.")
@click.option("--layers", default="all", show_default=True, help="'all', 'last' or comma-separated indices (negative from the end).")
@click.option("--pool", "pooling", type=click.Choice(["none", "mean", "mean+std", "chunks"]), default="mean",
              show_default=True, help="'none' stores every frame; 'chunks' one mean per --window-seconds window.")
@click.option("--dtype", type=click.Choice(["float16", "float32"]), default="float32", show_default=True,
              help="Storage precision of the features.")
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--batch-seconds", type=float, default=None,
              help="Padded audio per batch, in seconds: short files share a forward pass [default: 8 on CPU, 160 on CUDA].")
@click.option("--window-seconds", type=float, default=30.0, show_default=True,
              help="Long files are processed in windows of this length.")
@click.option("--shard", callback=_parse_shard, default=None, metavar="K/N",
              help="Process shard K of N (0-based); writes OUT-shardKofN.h5. Set automatically under torchrun.")
@click.option("--checkpoint-seconds", type=float, default=10.0, show_default=True,
              help="How often finished utterances are made durable; a hard kill loses at most this much work.")
@click.option("--strict", is_flag=True, help="Stop at the first bad input instead of skipping it.")
@threads_option
@quiet_option
def extract(upstream, model, ckpt, inputs, output, layers, pooling, dtype, device, batch_seconds, window_seconds,
            shard, checkpoint_seconds, strict, threads, quiet):
    """Extract features of INPUTS (audio files, folders, CSV/TSV/JSONL manifests) into an HDF5 file.

    Rerunning the same command resumes: finished utterances are skipped.
    """
    from ..extraction import extract as run_extract
    from ..output_paths import check_output_file

    if model and ckpt:
        raise click.UsageError("give either --model or --ckpt, not both")
    check_output_file(output)
    silence_library_progress_bars()
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
        threads=threads,
    )
    click.echo(str(summary))
    if summary.failed:
        sys.exit(3 if summary.extracted or summary.skipped_done else 1)


@click.command(epilog="""\b
Examples:
  audioembed inspect feats.h5
  audioembed inspect feats.h5 -n 20        # list 20 utterances
""")
@click.argument("paths", nargs=-1, required=True)
@click.option("--utterances", "-n", default=5, show_default=True, help="How many utterances to list.")
def inspect(paths, utterances):
    """Summarise a feature file (or a shard set: give OUT.h5 or the shard files).

    An incomplete shard set is shown (with a warning saying which shards are short).
    """
    from ..store import FeatureReader

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            reader = FeatureReader(list(paths) if len(paths) > 1 else paths[0], allow_incomplete=True)
        finally:
            _echo_store_warnings(caught)
    with reader:
        _describe_store(reader, utterances)


def _describe_store(reader, utterances: int) -> None:
    from ..messages import printable

    a = reader.attrs
    click.echo(f"files:        {', '.join(printable(f) for f in reader.files)}")
    click.echo(f"upstream:     {a['upstream']}  model: {printable(a.get('model') or '-')}  weights: {a['weights_hash']}")
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
        click.echo(f"  {printable(info.id)}  {info.duration:.2f} s  {info.num_frames} frames  layer shape {shape}")
    if len(infos) > utterances:
        click.echo(f"  ... {len(infos) - utterances} more")
    failed = reader.failed
    if failed:
        click.echo(f"failed:       {len(failed)} input(s) could not be extracted (a rerun retries them)")
        for uid, reason in list(failed.items())[:utterances]:
            click.echo(f"  {printable(uid)}: {printable(reason)}")
        if len(failed) > utterances:
            click.echo(f"  ... {len(failed) - utterances} more")


def _echo_store_warnings(caught) -> None:
    """Store warnings as one ``audioembed: warning:`` line each (not Python's warning format)."""
    from ..store import StoreWarning

    for w in caught:
        if issubclass(w.category, StoreWarning):
            click.echo(f"audioembed: warning: {w.message}", err=True)
        else:
            warnings.showwarning(w.message, w.category, w.filename, w.lineno)


@click.command(epilog="""\b
Examples:
  audioembed gather feats.h5 -o all.h5               # finds feats-shard*of*.h5
  audioembed gather a-shard0of2.h5 a-shard1of2.h5 -o all.h5
""")
@click.argument("inputs", nargs=-1, required=True)
@click.option("--output", "-o", required=True, type=click.Path(dir_okay=False), help="Merged HDF5 feature file to write.")
@click.option("--allow-incomplete", is_flag=True,
              help="Gather a shard set even if shards are missing or short (says which) instead of refusing.")
def gather(inputs, output, allow_incomplete):
    """Merge a shard set (OUT.h5 finds OUT-shard*of*.h5) into one feature file."""
    from ..messages import printable
    from ..output_paths import check_output_file
    from ..store import gather as run_gather

    check_output_file(output)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            count = run_gather(list(inputs) if len(inputs) > 1 else inputs[0], output, allow_incomplete=allow_incomplete)
        finally:
            _echo_store_warnings(caught)
    click.echo(f"{printable(output)}: {count} utterances")
