"""The plan: which speaker reads which sentence in which split, with its random settings.

Pure: no engine runs here, so the splits can be tested without any synthesiser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from .common import SPLITS, CorpusError, Warn, default_warn, interleave, seeded_rng
from .options import SpeechCorpusOptions
from .prompts import Prompt, normalize_transcript
from .speakers import Speaker


@dataclass(frozen=True)
class PlannedUtterance:
    id: str
    #: audio path relative to the output folder (POSIX)
    path: str
    prompt: Prompt
    transcript: str
    speaker: Speaker
    split: str
    sid_split: str
    rate: float
    pitch: float
    snr_db: float | None
    rt60: float | None


@dataclass
class CorpusPlan:
    utterances: list[PlannedUtterance]
    #: split of each speaker name and of each sentence id
    speaker_splits: dict[str, str]
    sentence_splits: dict[str, str]
    #: prompts left out because their text cannot be normalised
    skipped_prompts: list[str] = field(default_factory=list)


def _split_counts(n: int, fractions: tuple[float, float, float]) -> tuple[int, int, int]:
    """(train, dev, test) sizes: rounded fractions, at least one each where possible.

    Train gets one first, then test, then dev; a split with fraction 0 stays empty.
    """
    want = [fractions[0] * n, fractions[1] * n, fractions[2] * n]
    test = int(round(want[2]))
    dev = int(round(want[1]))
    if fractions[2] > 0 and n >= 2:
        test = max(test, 1)
    if fractions[1] > 0 and n >= 3:
        dev = max(dev, 1)
    test = min(test, max(n - 1, 0))
    dev = min(dev, max(n - 1 - test, 0))
    return n - dev - test, dev, test


def _interleave_by_key(items: list, key: Callable) -> list:
    buckets: dict = {}
    for item in items:
        buckets.setdefault(key(item), []).append(item)
    return interleave(*buckets.values()) if buckets else []


def split_speakers(speakers: Sequence[Speaker], fractions, seed: int) -> dict[str, str]:
    """Speaker name -> split, by voice group (the rule: the package docstring)."""
    groups: dict[str, list[Speaker]] = {}
    for speaker in sorted(speakers, key=lambda s: s.name):
        groups.setdefault(speaker.group, []).append(speaker)
    names = sorted(groups)
    order = [names[i] for i in seeded_rng(seed, "speaker-split").permutation(len(names))]
    order = _interleave_by_key(order, lambda g: groups[g][0].engine)
    n_train, n_dev, n_test = _split_counts(len(order), fractions)
    split_of_group = {}
    for i, group in enumerate(order):
        split_of_group[group] = "test" if i < n_test else "dev" if i < n_test + n_dev else "train"
    return {s.name: split_of_group[s.group] for s in speakers}


def split_sentences(prompt_ids: Sequence[str], fractions, seed: int) -> dict[str, str]:
    """Sentence id -> split: a seeded shuffle cut by the fractions (test first, then dev)."""
    ids = sorted(prompt_ids)
    order = [ids[i] for i in seeded_rng(seed, "sentence-split").permutation(len(ids))]
    n_train, n_dev, n_test = _split_counts(len(order), fractions)
    return {pid: ("test" if i < n_test else "dev" if i < n_test + n_dev else "train") for i, pid in enumerate(order)}


def estimate_seconds(text: str) -> float:
    """Rough speaking time of ``text`` at rate 1 (fitted on 6000 default-corpus utterances)."""
    return 0.44 + 0.051 * len(text)


def plan_speech_corpus(
    prompts: Sequence[Prompt],
    speakers: Sequence[Speaker],
    seed: int = 0,
    options: SpeechCorpusOptions | None = None,
    controls: Callable[[Speaker], tuple[bool, bool]] | None = None,
    warn: Warn | None = None,
) -> CorpusPlan:
    """Every utterance to synthesise, with its split and random settings; no engine is run.

    ``controls(speaker)`` says whether rate and pitch can be changed for a speaker (a
    factor that cannot is recorded as 1). The plan depends only on its arguments.
    """
    options = (options or SpeechCorpusOptions()).checked()
    warn = warn or default_warn
    if not speakers:
        raise CorpusError("no speakers")
    names = [s.name for s in speakers]
    if len(set(names)) != len(names):
        raise CorpusError("a speaker is listed twice")
    # prompts: usable ones, a seeded choice of `sentences`
    usable: dict[str, tuple[Prompt, str]] = {}
    skipped: list[str] = []
    for prompt in prompts:
        transcript = normalize_transcript(prompt.text)
        if transcript is None:
            skipped.append(prompt.id)
        else:
            usable[prompt.id] = (prompt, transcript)
    if skipped:
        warn(
            f"{len(skipped)} prompt(s) left out: digits or symbols can be read in more than one way, so no exact "
            f"transcript exists (e.g. {', '.join(skipped[:3])})"
        )
    if not usable:
        raise CorpusError("no usable prompt (every prompt has digits or symbols)")
    ids = sorted(usable)
    if options.sentences is not None and options.sentences < len(ids):
        chosen = seeded_rng(seed, "sentences").permutation(len(ids))[: options.sentences]
        ids = sorted(ids[i] for i in chosen)
    sentence_splits = split_sentences(ids, options.sentence_split, seed)
    speaker_splits = split_speakers(speakers, options.speaker_split, seed)
    for split in SPLITS:
        has_speakers = any(v == split for v in speaker_splits.values())
        has_sentences = any(v == split for v in sentence_splits.values())
        if has_speakers != has_sentences:
            warn(f"split {split!r} has {'no sentences' if has_speakers else 'no speakers'}: it stays empty")
    # candidate sentences per speaker: its split's sentences, walked from its own offset
    by_split = {split: [] for split in SPLITS}
    for pid in ids:
        by_split[sentence_splits[pid]].append(pid)
    for split in SPLITS:
        pool = by_split[split]
        by_split[split] = [pool[i] for i in seeded_rng(seed, "sentence-order", split).permutation(len(pool))]
    ordered = sorted(speakers, key=lambda s: s.name)
    candidates: dict[str, list[str]] = {}
    for split in SPLITS:
        members = [s for s in ordered if speaker_splits[s.name] == split]
        pool = by_split[split]
        for j, speaker in enumerate(members):
            start = (j * len(pool)) // max(len(members), 1)
            candidates[speaker.name] = pool[start:] + pool[:start]
    budget = options.utterances
    if options.hours is not None:
        mean = float(np.mean([estimate_seconds(usable[pid][0].text) for pid in ids]))
        budget = max(1, int(round(options.hours * 3600.0 / mean)))
    total = sum(len(c) for c in candidates.values())
    if budget is None or budget >= total:
        picked = {name: list(c) for name, c in candidates.items()}
    else:
        # speakers take turns (in a seeded order) so that each gets an equal share
        turn = [ordered[i].name for i in seeded_rng(seed, "turns").permutation(len(ordered))]
        picked = {name: [] for name in candidates}
        taken = 0
        depth = 0
        while taken < budget:
            for name in turn:
                if depth < len(candidates[name]) and taken < budget:
                    picked[name].append(candidates[name][depth])
                    taken += 1
            depth += 1
    utterances: list[PlannedUtterance] = []
    for speaker in ordered:
        chosen = sorted(picked[speaker.name])
        sid = _sid_splits(chosen, seed, speaker.name)
        can_rate, can_pitch = controls(speaker) if controls else (True, True)
        for pid in chosen:
            prompt, transcript = usable[pid]
            uid = f"{speaker.slug}/{pid}"
            r = seeded_rng(seed, "params", uid)
            rate = round(float(r.uniform(*options.rate_range)), 3)
            pitch = round(float(r.uniform(*options.pitch_range)), 3)
            noisy = r.random() < options.noise_prob
            snr = round(float(r.uniform(*options.snr_range)), 1)
            reverberant = r.random() < options.reverb_prob
            rt60 = round(float(r.uniform(*options.rt60_range)), 2)
            utterances.append(
                PlannedUtterance(
                    id=uid,
                    path=f"wav/{uid}.wav",
                    prompt=prompt,
                    transcript=transcript,
                    speaker=speaker,
                    split=speaker_splits[speaker.name],
                    sid_split=sid[pid],
                    rate=rate if can_rate else 1.0,
                    pitch=pitch if can_pitch else 1.0,
                    snr_db=snr if noisy else None,
                    rt60=rt60 if reverberant else None,
                )
            )
    utterances.sort(key=lambda u: u.id)
    if not utterances:
        raise CorpusError("the plan has no utterance (too few sentences or speakers for the splits)")
    return CorpusPlan(utterances, speaker_splits, sentence_splits, skipped)


def _sid_splits(sentence_ids: Sequence[str], seed: int, speaker: str) -> dict[str, str]:
    """A speaker's own 80/10/10 split of its utterances, for closed-set speaker ID."""
    order = [sentence_ids[i] for i in seeded_rng(seed, "sid", speaker).permutation(len(sentence_ids))]
    n_train, n_dev, n_test = _split_counts(len(order), (0.8, 0.1, 0.1))
    return {pid: ("test" if i < n_test else "dev" if i < n_test + n_dev else "train") for i, pid in enumerate(order)}
