"""Options and set-up shared by the commands that compute."""

from __future__ import annotations

import os

import click

from ..threads import ENV_VAR


def threads_option(function):
    """``--threads N``: torch (and BLAS) threads; default from $AUDIOEMBED_THREADS or chosen per run."""
    return click.option(
        "--threads", type=click.IntRange(min=1), default=None, metavar="N",
        help=f"CPU threads for the model and probes [default: ${ENV_VAR}, else chosen from the model size, "
             "input length and idle cores; see docs/extraction.md].",
    )(function)


def quiet_option(function):
    return click.option("--quiet", "-q", is_flag=True, help="No progress bars.")(function)


def silence_library_progress_bars() -> None:
    """Hide the weight-loading bars of transformers / huggingface_hub: our own bars say what runs."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:  # pragma: no cover - transformers is a dependency
        return
    hf_logging.disable_progress_bar()
