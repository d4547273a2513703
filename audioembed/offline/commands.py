"""``audioembed reproduce``: run (or continue) the offline reproduction recipe."""

from __future__ import annotations

import click

from ..commands.options import silence_library_progress_bars, threads_option
from .pipeline import STAGES


@click.command("reproduce", epilog="""\b
Examples:
  audioembed reproduce -c recipes/offline/offline.toml
  audioembed reproduce -c recipes/offline/offline.toml --until students
""")
@click.option("--config", "-c", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="Recipe file (TOML or YAML), e.g. recipes/offline/offline.toml.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a recipe field, e.g. --set evaluation.seeds=3 (TOML literal).")
@click.option("--until", type=click.Choice(STAGES), default=None, help="Stop after this stage.")
@click.option("--redo", type=click.Choice(STAGES), multiple=True, help="Run this stage again even if it is done.")
@click.option("--only", type=click.Choice(STAGES), default=None,
              help="Run just this stage now (e.g. report, while evaluate is still running).")
@threads_option
@click.option("--quiet", "-q", is_flag=True, help="No progress bars.")
def reproduce_command(config_path, overrides, until, redo, only, threads, quiet):
    """Corpora -> teachers -> students -> merges -> evaluation -> results.md, resumable by stage.

    Stages: corpora, evalsets, teachers, caches, students, merges, evaluate, report. A finished
    stage leaves OUT/stages/STAGE.json and is skipped on the next run; training stages also
    resume from their own checkpoints.
    """
    silence_library_progress_bars()
    from ..corpus.music import MusicCorpusError
    from ..corpus.speech import CorpusError
    from ..distill.config import ConfigError
    from ..distill.data import DataError
    from ..distill.merge import MergeError
    from ..distill.trainer import DistillError
    from ..downstream import DownstreamError
    from ..pretrain.trainer import PretrainError
    from ..threads import command_threads
    from ..upstream import UpstreamError
    from .evalsets import EvalSetError
    from .pipeline import ReproduceError, load_recipe, run_recipe

    try:
        ctx = load_recipe(config_path, list(overrides))
        ctx.progress = not quiet
        with command_threads(threads):
            summaries = run_recipe(ctx, until=until, redo=tuple(redo), only=only)
    except (ConfigError, CorpusError, MusicCorpusError, DataError, DistillError, MergeError, DownstreamError,
            PretrainError, UpstreamError, EvalSetError, ReproduceError) as exc:
        raise click.ClickException(str(exc)) from None
    report = summaries.get("report")
    if report:
        click.echo(f"wrote {report['results_md']} (selected unified student: {report['best']})")
    else:
        click.echo(f"stopped after stage {until or only}; rerun to continue")
