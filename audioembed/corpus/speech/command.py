"""``audioembed corpus speech``: the command line of the speech builder."""

from __future__ import annotations

import click

from .builder import SpeechCorpusBuilder
from .common import CorpusError
from .options import SpeechCorpusOptions
from .speakers import DEFAULT_SPEAKERS, default_speakers


def _floats(count: int):
    def parse(ctx, param, value):
        if value is None:
            return None
        try:
            values = tuple(float(v) for v in value.split(","))
        except ValueError:
            values = ()
        if len(values) != count:
            raise click.BadParameter(f"expected {count} comma-separated numbers, got {value!r}")
        return values

    return parse


@click.command("speech", epilog="""\b
Examples:
  audioembed corpus speech -o corpora/speech --prompts cmuarctic.data
""")
@click.option("--output", "-o", type=click.Path(file_okay=False), help="Output folder (required; created; reruns resume).")
@click.option("--prompts", "prompts_path", type=click.Path(dir_okay=False),
              help="Prompts file (required): festival format ( id \"text\" ), e.g. ../shared/data/text/cmuarctic.data, "
                   "or plain text, one sentence per line.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random choice.")
@click.option("--sentences", type=int, default=None, help="Use this many prompts (a seeded choice) [default: all].")
@click.option("--speakers", type=int, default=None,
              help=f"Use the first N default speakers [default: all {len(DEFAULT_SPEAKERS)} that are installed]; "
                   "more than that adds espeak-ng voices.")
@click.option("--speaker", "speaker_list", multiple=True, metavar="ENGINE:VOICE",
              help="An explicit speaker, e.g. espeak-ng:en-us+f3, flite:slt, festival:kal_diphone (repeatable).")
@click.option("--utterances", type=int, default=None,
              help=f"At most this many utterances [default: {SpeechCorpusOptions.utterances}].")
@click.option("--hours", type=float, default=None, help="About this many hours of audio (instead of --utterances).")
@click.option("--all", "everything", is_flag=True, help="No cap: every speaker reads every sentence of its split.")
@click.option("--speaker-split", callback=_floats(3), metavar="TRAIN,DEV,TEST", default="0.7,0.15,0.15", show_default=True,
              help="TRAIN,DEV,TEST fractions of the voice groups.")
@click.option("--sentence-split", callback=_floats(3), metavar="TRAIN,DEV,TEST", default="0.8,0.1,0.1", show_default=True,
              help="TRAIN,DEV,TEST fractions of the sentences.")
@click.option("--rate", "rate_range", callback=_floats(2), metavar="MIN,MAX", default="0.85,1.15", show_default=True,
              help="MIN,MAX speaking-rate factor, drawn per utterance.")
@click.option("--pitch", "pitch_range", callback=_floats(2), metavar="MIN,MAX", default="0.85,1.15", show_default=True,
              help="MIN,MAX pitch factor, drawn per utterance (where the voice allows it).")
@click.option("--noise-prob", type=float, default=0.0, show_default=True, help="Share of utterances with additive noise.")
@click.option("--snr", "snr_range", callback=_floats(2), metavar="MIN,MAX", default="5,30", show_default=True, help="MIN,MAX SNR in dB.")
@click.option("--reverb-prob", type=float, default=0.0, show_default=True, help="Share of reverberant utterances.")
@click.option("--rt60", "rt60_range", callback=_floats(2), metavar="MIN,MAX", default="0.2,0.8", show_default=True,
              help="MIN,MAX reverberation time in seconds.")
@click.option("--real", "real_dir", type=click.Path(file_okay=False), default=None,
              help="../shared/data: add FSDD (train takes only), yesno and pocketsphinx to pretrain.csv.")
@click.option("--jobs", "-j", type=int, default=None, help="Parallel synthesis jobs [default: CPU count].")
@click.option("--overwrite", is_flag=True, help="Re-synthesise files that exist (e.g. after changing --rate).")
@click.option("--list-speakers", is_flag=True, help="Print the default speakers that are installed and exit.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
def speech_command(output, prompts_path, seed, sentences, speakers, speaker_list, utterances, hours, everything,
                   speaker_split, sentence_split, rate_range, pitch_range, noise_prob, snr_range, reverb_prob,
                   rt60_range, real_dir, jobs, overwrite, list_speakers, quiet):
    """Synthesise a speech corpus from text prompts (espeak-ng, flite, festival).

    Splits are speaker- and sentence-disjoint: a test utterance is a test speaker reading a
    test sentence. Writes OUT/wav/..., OUT/manifest.csv (train/dev/test) and
    OUT/pretrain.csv (train + real recordings). Reruns resume. See docs/corpora.md.
    """

    def warn(message: str) -> None:
        click.echo(f"warning: {message}", err=True)

    if list_speakers:
        try:
            found = default_speakers(speakers, warn=warn)
        except CorpusError as err:
            raise click.ClickException(str(err)) from None
        for speaker in found:
            click.echo(f"{speaker.name}\t(group {speaker.group})")
        return
    for value, flag in ((output, "--output"), (prompts_path, "--prompts")):
        if value is None:
            raise click.UsageError(f"Missing option '{flag}'.")
    if sum(x is not None for x in (utterances, hours)) + everything > 1:
        raise click.UsageError("give at most one of --utterances, --hours and --all")
    options = SpeechCorpusOptions(
        sentences=sentences,
        speakers=speakers,
        speaker_list=tuple(speaker_list),
        utterances=None if everything or hours is not None else (
            SpeechCorpusOptions.utterances if utterances is None else utterances),
        hours=hours,
        speaker_split=speaker_split,
        sentence_split=sentence_split,
        rate_range=rate_range,
        pitch_range=pitch_range,
        noise_prob=noise_prob,
        snr_range=snr_range,
        reverb_prob=reverb_prob,
        rt60_range=rt60_range,
        real_dir=real_dir,
        jobs=jobs,
        overwrite=overwrite,
        progress=not quiet,
    )
    try:
        summary = SpeechCorpusBuilder(output, prompts_path=prompts_path, seed=seed, options=options, warn=warn).run()
    except CorpusError as err:
        raise click.ClickException(str(err)) from None
    for line in summary.lines():
        click.echo(line)
    if summary.failed:
        raise click.ClickException(
            f"{len(summary.failed)} utterance(s) failed (listed above); the manifest lists the others; rerun to retry"
        )
