"""``audioembed distill`` and ``audioembed distill-cache``: the trainer's command line.

Kept out of ``audioembed.cli`` so the core CLI does not import the trainer until it is used.
"""

from __future__ import annotations

import sys

import click

from ..commands.options import silence_library_progress_bars, threads_option

_CONFIG_HELP = "Training config (.toml or .yaml); see docs/distillation.md."
_SET_HELP = "Override a config field, e.g. --set optim.lr=1e-4 --set teachers.1.weight=0.3 (repeatable)."


def _load(config_path, overrides):
    from .config import ConfigError, load_config

    try:
        return load_config(config_path, overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _leave_process_group() -> None:
    """Under torchrun: leave the process group cleanly (torch warns about a leak otherwise)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


@click.command("distill", epilog="""\b
Examples:
  audioembed distill -c recipes/distill/multi_teacher.toml
  audioembed distill -c recipes/distill/multi_teacher.toml --set optim.lr=1e-4
""")
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), default=None, help=_CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--until-step", type=int, default=None,
              help="Stop (with a checkpoint) after this many optimiser steps; rerun with a larger value or without it to continue.")
@click.option("--init-only", is_flag=True, help="Only write the initial student (OUT/init, the theta_0 of task vectors).")
@threads_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def distill_command(config_path, overrides, until_step, init_only, threads, quiet):
    """Distil a student from one or more teachers (resumes from OUT/checkpoints).

    Launch with torchrun for data-parallel training on several GPUs or machines.
    """
    silence_library_progress_bars()
    from ..threads import command_threads
    from ..upstream import UpstreamError
    from .config import ConfigError
    from .data import DataError
    from .student import StudentError
    from .trainer import DistillError, Trainer

    config = _load(config_path, overrides)
    try:
        with command_threads(threads):
            trainer = Trainer(config, progress=not quiet, warn=_warn)
            folder = trainer.run(until_step=until_step, init_only=init_only)
    except (ConfigError, DataError, DistillError, StudentError, UpstreamError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        _leave_process_group()
    if trainer.world.is_main:
        if init_only:
            click.echo(f"initial student written to {folder}")
        elif folder.name == "student":
            click.echo(f"student written to {folder} ({trainer.step} steps)")
        else:
            click.echo(f"stopped at step {trainer.step}; checkpoint {folder}; rerun without --until-step (or with a larger one) to continue")


@click.command("distill-cache", epilog="""\b
Examples:
  audioembed distill-cache -c recipes/distill/multi_teacher.toml -o runs/cache
""")
@click.option("--config", "-c", "config_path", type=click.Path(dir_okay=False), default=None, help=_CONFIG_HELP)
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help=_SET_HELP)
@click.option("--output", "-o", type=click.Path(file_okay=False), default=None,
              help="Cache folder [default: the config's data.cache_dir].")
@click.option("--batch-size", type=int, default=8, show_default=True, help="Crops per teacher forward pass.")
@click.option("--device", default=None, help="Device for the teachers [default: the config's run.device].")
@threads_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def distill_cache_command(config_path, overrides, output, batch_size, device, threads, quiet):
    """Run every teacher once over the planned crops and store their target layers (float16).

    Resumable: rerunning skips crops already stored. Train on it with data.cache_dir = OUTPUT.
    """
    silence_library_progress_bars()
    from ..threads import command_threads
    from ..upstream import UpstreamError
    from .cache import prepare_teacher_cache
    from .config import ConfigError
    from .data import DataError

    config = _load(config_path, overrides)
    cache_dir = output or config.data.cache_dir
    if not cache_dir:
        raise click.ClickException("no cache folder: pass --output DIR or set data.cache_dir in the config")
    try:
        with command_threads(threads):
            built = prepare_teacher_cache(config, cache_dir=cache_dir, device=device, batch_size=batch_size,
                                          progress=not quiet, warn=_warn)
    except (ConfigError, DataError, UpstreamError) as exc:
        raise click.ClickException(str(exc)) from None
    for name, count in built.written.items():
        click.echo(f"{name}: {count} new crops", err=False)
    click.echo(f"cache: {built.cache_dir} ({built.crops} crops planned)", file=sys.stdout)
