"""``audioembed pretrain``: HuBERT-style and MERT-style teacher pretraining from the command line.

Kept out of ``audioembed.cli`` so the core CLI imports nothing of this until it is used.
"""

from __future__ import annotations

import os

import click

from ..commands.options import silence_library_progress_bars, threads_option


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


@click.command("pretrain", epilog="""\b
Examples:
  audioembed pretrain --kind hubert -d corpora/speech/pretrain.csv -o runs/speech_teacher
""")
@click.option("--kind", type=click.Choice(["hubert", "mert"]), default=None,
              help="hubert: speech teacher, 16 kHz, MFCC units. mert: music teacher, 24 kHz, log-mel + chroma "
                   "units and CQT-band reconstruction. [default: the config's kind, else hubert]")
@click.option("--data", "-d", "data", multiple=True, type=click.Path(exists=True),
              help="Training audio: a manifest (.csv/.tsv/.jsonl with a path column) or a folder (repeatable).")
@click.option("--output", "-o", type=click.Path(file_okay=False), default=None,
              help="Run folder: config, units, checkpoints, log, and the teacher in OUT/model.")
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Config file (.toml or .yaml); see docs/pretraining.md.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a config field, e.g. --set optim.max_steps=3000 --set units.k=100 (repeatable).")
@click.option("--until-step", type=int, default=None,
              help="Stop (with a checkpoint) after this many steps; rerun with a larger value or without it to continue.")
@click.option("--iteration", type=click.IntRange(1, 2), default=None,
              help="1: units from k-means of DSP features; 2: from k-means of a teacher layer (--units-from).")
@click.option("--units-from", type=click.Path(exists=True, file_okay=False), default=None,
              help="Iteration 2: the iteration-1 teacher folder (e.g. its OUT/model).")
@click.option("--units-layer", type=int, default=None, help="Iteration 2: the teacher hidden state to cluster.")
@threads_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def pretrain_command(kind, data, output, config_path, overrides, until_step, iteration, units_from, units_layer, threads,
                     quiet):
    """Pretrain a small HuBERT-style (speech) or MERT-style (music) teacher by masked prediction.

    Resumes from OUT/checkpoints. The result, OUT/model, loads with
    `audioembed extract --upstream hubert --model OUT/model` (kind hubert) or
    `--upstream mert --model OUT/model` (kind mert).
    """
    silence_library_progress_bars()
    from ..audio import AudioError
    from ..distill.config import ConfigError
    from ..distill.data import DataError
    from ..threads import command_threads
    from ..upstream import UpstreamError
    from .config import load_config
    from .model import ModelError
    from .targets import TargetError
    from .trainer import PretrainError, PretrainTrainer

    preset: dict = {}
    if kind:
        preset["kind"] = kind
    if data:
        preset["data"] = {"manifests": [os.path.abspath(p) for p in data]}
    if output:
        preset["run"] = {"output_dir": os.path.abspath(output)}
    units: dict = {}
    if iteration is not None:
        units["iteration"] = iteration
    if units_from:
        units["teacher"] = os.path.abspath(units_from)
        units.setdefault("iteration", 2)
    if units_layer is not None:
        units["layer"] = units_layer
    if units:
        preset["units"] = units
    try:
        config = load_config(config_path, list(overrides), preset)
        if not config.data.manifests:
            raise ConfigError("no training data: pass --data MANIFEST_OR_FOLDER (or set [data] manifests)")
        if output is None and config_path is None and not any(o.startswith("run.output_dir") for o in overrides):
            raise ConfigError("no run folder: pass -o OUT (or set [run] output_dir)")
        with command_threads(threads):
            trainer = PretrainTrainer(config, progress=not quiet, warn=_warn)
            folder = trainer.run(until_step=until_step)
    except (ConfigError, DataError, PretrainError, UpstreamError, ModelError, TargetError, AudioError) as exc:
        raise click.ClickException(str(exc)) from None
    if folder.name == "model":
        upstream = "mert" if config.kind == "mert" else "hubert"
        click.echo(f"teacher written to {folder} ({trainer.step} steps); "
                   f"use it with: audioembed extract --upstream {upstream} --model {folder} ...")
    else:
        click.echo(f"stopped at step {trainer.step}; checkpoint {folder}; rerun without --until-step (or with a larger one) to continue")
