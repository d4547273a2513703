"""``audioembed corpus music``: the command line of the music builder."""

from __future__ import annotations

import click

from .. import midi_styles as ms
from .builder import MusicCorpusBuilder
from .common import DEFAULTS, SAMPLE_RATE, MusicCorpusError, require
from .options import MusicCorpusOptions


@click.command("music", epilog="""\b
Examples:
  audioembed corpus music -o corpora/music
""")
@click.option("--output", "-o", required=True, type=click.Path(file_okay=False), help="Folder to write (created).")
@click.option("--seed", default=0, show_default=True, help="Seed of every random choice.")
@click.option("--chorales", default=DEFAULTS["chorales"], show_default=True,
              help="Bach chorales to render (0: none; more than usable: all, about 300).")
@click.option("--transpositions", default=DEFAULTS["transpositions"], show_default=True,
              help="Keys each chorale is rendered in (1-12), balanced over the 24 keys.")
@click.option("--pieces", default=DEFAULTS["pieces"], show_default=True,
              help="Generated pieces, spread evenly over the styles (0: none).")
@click.option("--seconds", type=float, default=None, help="Length of every file (sets both lengths below).")
@click.option("--chorale-seconds", type=float, default=None,
              help=f"Excerpt length of a chorale  [default: {DEFAULTS['chorale_seconds']:g}]")
@click.option("--piece-seconds", type=float, default=None,
              help=f"Length of a generated piece  [default: {DEFAULTS['piece_seconds']:g}]")
@click.option("--styles", default=",".join(ms.STYLE_NAMES), show_default=True, help="Comma-separated styles.")
@click.option("--sample-rate", default=SAMPLE_RATE, show_default=True, help="Output sample rate (Hz).")
@click.option("--soundfont", "soundfonts", multiple=True, metavar="PATH",
              help="General MIDI soundfont (.sf2/.sf3), repeatable; items alternate between them; "
                   "'default' = TimGM6mb from pretty_midi  [default: default]")
@click.option("--splits", default="0.8,0.1,0.1", show_default=True, help="train,dev,test fractions.")
@click.option("--midi", is_flag=True, help="Also write each piece as a .mid file next to its audio.")
@click.option("--jobs", "-j", type=int, default=None, help="Parallel processes  [default: CPU count]")
@click.option("--overwrite", is_flag=True, help="Re-render files that exist, and accept changed settings.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def music_command(output, seed, chorales, transpositions, pieces, seconds, chorale_seconds, piece_seconds, styles,
                  sample_rate, soundfonts, splits, midi, jobs, overwrite, quiet):
    """Render Bach chorales (key labels) and generated pieces (style, tags) into a music corpus.

    Writes DIR/manifest.csv (path, id, source, key, style, tags, programs, soundfont, tempo,
    split, domain, seconds, group, transpose) and 24 kHz mono WAV files. Needs
    `pip install pretty_midi music21 && pip install --no-deps tinysoundfont`.
    """
    options = MusicCorpusOptions(
        seed=seed, chorales=chorales, transpositions=transpositions, pieces=pieces,
        chorale_seconds=chorale_seconds if chorale_seconds is not None else (seconds or DEFAULTS["chorale_seconds"]),
        piece_seconds=piece_seconds if piece_seconds is not None else (seconds or DEFAULTS["piece_seconds"]),
        styles=tuple(s.strip() for s in styles.split(",") if s.strip()), sample_rate=sample_rate,
        soundfonts=tuple(soundfonts) or ("default",), split_fractions=splits, midi=midi, jobs=jobs,
        progress=not quiet, overwrite=overwrite,
    )
    try:
        for module in ("pretty_midi", "music21", "tinysoundfont"):
            require(module)
        builder = MusicCorpusBuilder(output, options)
        manifest = builder.build()
    except MusicCorpusError as exc:
        raise click.ClickException(str(exc)) from None
    s = builder.stats
    click.echo(
        f"{manifest}: {s['items']} files ({s['hours']:.3g} h; {s['rendered']} rendered, {s['kept']} kept), "
        f"{s['keys']} keys, splits {s['splits']}"
    )
