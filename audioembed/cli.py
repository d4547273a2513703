"""The ``audioembed`` command line: a lazy group, and the one place errors become messages.

Each subcommand lives in its own module and is imported only when it runs, so
``audioembed --help`` and ``audioembed plugins`` do not pay for torch, h5py or the trainers.
The group lists commands from :data:`COMMANDS` (name, import path, one-line summary) without
importing them; ``tests/test_cli.py`` checks that each summary matches its command.

Errors: every project error derives from :class:`audioembed.errors.AudioEmbedError`.
:meth:`LazyGroup.invoke` turns those (and operating-system errors such as a full disk or an
unwritable path) into one ``Error: ...`` line with the exit code from
:func:`audioembed.errors.user_message`, and Ctrl-C into the resume hint. Set
``AUDIOEMBED_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass

import click

from . import __version__
from .errors import EXIT_INTERRUPTED, INTERRUPTED_MESSAGE, AudioEmbedError, user_message
from .threads import prefer_passive_waiting


@dataclass(frozen=True)
class LazyCommand:
    """Where a subcommand lives and what ``--help`` says about it before it is imported."""

    target: str  # "package.module:attribute"
    summary: str

    def load(self) -> click.Command:
        module, _, attribute = self.target.partition(":")
        return getattr(importlib.import_module(module), attribute)


#: every subcommand, in the order ``--help`` lists them
COMMANDS: dict[str, LazyCommand] = {
    "extract": LazyCommand("audioembed.commands.features:extract",
                           "Extract features of INPUTS (audio files, folders, CSV/TSV/JSONL manifests) into an HDF5 file."),
    "inspect": LazyCommand("audioembed.commands.features:inspect",
                           "Summarise a feature file (or a shard set: give OUT.h5 or the shard files)."),
    "gather": LazyCommand("audioembed.commands.features:gather",
                          "Merge a shard set (OUT.h5 finds OUT-shard*of*.h5) into one feature file."),
    "downstream": LazyCommand("audioembed.commands.evaluation:downstream",
                              "Evaluate an upstream on TASK with layer-weighted probes (full and few-shot)."),
    "report": LazyCommand("audioembed.commands.evaluation:report",
                          "Gather result files into tasks x upstreams tables (one per dataset) with PNG plots."),
    "data": LazyCommand("audioembed.commands.data:data_group",
                        "List, download and locate the standard datasets of the downstream tasks."),
    "plugins": LazyCommand("audioembed.commands.plugins:plugins",
                           "List every registered upstream and task with the distribution that provides it."),
    "distill": LazyCommand("audioembed.distill.commands:distill_command",
                           "Distil a student from one or more teachers (resumes from OUT/checkpoints)."),
    "distill-cache": LazyCommand("audioembed.distill.commands:distill_cache_command",
                                 "Run every teacher once over the planned crops and store their target layers (float16)."),
    "merge": LazyCommand("audioembed.distill.merge:merge_command",
                         "Merge students distilled from the same initial weights (task arithmetic)."),
    "dsuperb": LazyCommand("audioembed.dsuperb.commands:dsuperb_group",
                           "Dynamic-SUPERB Phase-2: probe an upstream on each task, score spoken-LM answers, report by domain."),
    "corpus": LazyCommand("audioembed.corpus.commands:corpus_group",
                          "Build deterministic, labelled speech (TTS) and music (rendered MIDI) corpora."),
    "pretrain": LazyCommand("audioembed.pretrain.commands:pretrain_command",
                            "Pretrain a small HuBERT-style (speech) or MERT-style (music) teacher by masked prediction."),
    "reproduce": LazyCommand("audioembed.offline.commands:reproduce_command",
                             "Corpora -> teachers -> students -> merges -> evaluation -> results.md, resumable by stage."),
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def __init__(self, *args, lazy_commands: dict[str, LazyCommand], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy_commands = lazy_commands

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(self.lazy_commands) + sorted(set(self.commands) - set(self.lazy_commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in self.lazy_commands:
            self.commands[cmd_name] = self.lazy_commands[cmd_name].load()
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """List the commands from their summaries, without importing any of them."""
        rows = []
        for name in self.list_commands(ctx):
            if name in self.lazy_commands:
                rows.append((name, self.lazy_commands[name].summary))
            else:
                command = self.commands[name]
                if not command.hidden:
                    rows.append((name, command.get_short_help_str(formatter.width - 6 - len(name))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context):
        prefer_passive_waiting()  # before any command module imports torch
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo(f"\n{INTERRUPTED_MESSAGE}", err=True)
            ctx.exit(EXIT_INTERRUPTED)
        except (AudioEmbedError, OSError) as exc:
            if os.environ.get("AUDIOEMBED_DEBUG"):
                raise
            message, code = user_message(exc)
            error = click.ClickException(message)
            error.exit_code = code
            raise error from None


EXAMPLES = """\b
Examples:
  audioembed extract --upstream unified_student audio/ -o feats.h5
  audioembed downstream genre --shots 8
  audioembed COMMAND --help
"""


@click.group(cls=LazyGroup, lazy_commands=COMMANDS, context_settings={"help_option_names": ["-h", "--help"]},
             epilog=EXAMPLES)
@click.version_option(__version__, prog_name="audioembed")
def main() -> None:
    """Layer-wise embeddings, distillation and evaluation of self-supervised audio models."""


if __name__ == "__main__":  # pragma: no cover
    main()
