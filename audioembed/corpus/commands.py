"""``audioembed corpus speech|music``: build the offline training and evaluation corpora."""

from __future__ import annotations

import click

from .music import music_command
from .speech import speech_command


@click.group("corpus", epilog="""\b
Examples:
  audioembed corpus speech -o corpora/speech --prompts cmuarctic.data
  audioembed corpus music -o corpora/music
""")
def corpus_group():
    """Build deterministic, labelled speech (TTS) and music (rendered MIDI) corpora."""


corpus_group.add_command(speech_command)
corpus_group.add_command(music_command)
