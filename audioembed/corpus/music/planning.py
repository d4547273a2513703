"""Generated pieces with supported keys, splits and key balancing, and the planned items."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass
from typing import Sequence

from .. import midi_styles as ms
from .chorales import KEY_VOTES, MAX_DRAWS, key_votes
from .common import MusicCorpusError, seeded_rng


def generate_labelled_piece(style: str, seed: int, item_id: str, *, seconds: float, tonic: int, mode: str) -> ms.Piece:
    """A generated piece whose key the audio supports.

    Draws ``midi_styles.generate_piece`` (draw k from the seed, the id and k) until at
    least :data:`KEY_VOTES` of the :data:`KEY_PROFILES` estimators find the intended key
    (modal progressions and thin textures often read as the subdominant or the relative
    key); after :data:`MAX_DRAWS` the first draw with the most votes is kept.
    """
    best = None
    for draw in range(MAX_DRAWS):
        piece = ms.generate_piece(style, seeded_rng(seed, "item", item_id, draw), seconds=seconds, tonic=tonic, mode=mode)
        votes = key_votes(piece)
        piece.details.update(draw=draw, key_votes=votes)
        if best is None or votes > best.details["key_votes"]:
            best = piece
        if votes >= KEY_VOTES:
            break
    return best


def _split_counts(n: int, fractions: Sequence[float]) -> tuple[int, int, int]:
    """Sizes of train/dev/test for ``n`` units; a non-empty split gets >= 1 when n allows."""
    total = sum(fractions)
    raw = [n * f / total for f in fractions]
    counts = [int(r) for r in raw]
    for i in sorted(range(3), key=lambda i: (counts[i] - raw[i], i)):
        if sum(counts) >= n:
            break
        counts[i] += 1
    for i in (2, 1):  # test, then dev, before train gets more than it needs
        if fractions[i] > 0 and counts[i] == 0 and counts[0] > 1:
            counts[i] += 1
            counts[0] -= 1
    return counts[0], counts[1], counts[2]


def split_groups(groups: Sequence[str], strata: Sequence[str], fractions: Sequence[float], seed: int,
                 salt: str) -> dict[str, str]:
    """train/dev/test per group (a group never spans two splits), stratified.

    Each stratum's groups are shuffled (seeded) and the strata interleaved into one
    sequence; test takes its share from the front, then dev, and train the rest. So every
    split sees the strata in proportion, and test (then dev) gets a group as soon as
    there are two (three).
    """
    by_stratum: dict[str, list[str]] = defaultdict(list)
    seen: set[str] = set()
    for group, stratum in zip(groups, strata):
        if group not in seen:
            seen.add(group)
            by_stratum[stratum].append(group)
    lanes = []
    for stratum in sorted(by_stratum):
        members = sorted(by_stratum[stratum])
        seeded_rng(seed, salt, "split", stratum).shuffle(members)
        lanes.append(members)
    sequence = [lane[i] for i in range(max(map(len, lanes), default=0)) for lane in lanes if i < len(lane)]
    _, n_dev, n_test = _split_counts(len(sequence), fractions)
    return {group: "test" if i < n_test else "dev" if i < n_test + n_dev else "train"
            for i, group in enumerate(sequence)}


def assign_target_tonics(chorales: Sequence[tuple[str, str, str]], transpositions: int, seed: int) -> dict[str, list[int]]:
    """Target tonics of each chorale's transpositions, balanced over the 12 tonics.

    ``chorales`` are ``(name, mode, split)``. Within each split and mode, chorales take in
    turn the ``transpositions`` distinct tonics used least so far (ties broken by a seeded
    order), so each key of a split is used equally often, to within one.
    """
    if not 1 <= transpositions <= 12:
        raise MusicCorpusError(f"transpositions must be 1-12, got {transpositions}")
    counts: dict[tuple[str, str], Counter] = defaultdict(Counter)
    result = {}
    for name, mode, split in chorales:
        order = list(range(12))
        seeded_rng(seed, "tonics", name).shuffle(order)
        used = counts[(split, mode)]
        chosen = sorted(order, key=lambda t: (used[t], order.index(t)))[:transpositions]
        used.update(chosen)
        result[name] = chosen
    return result


def transpose_interval(source: int, target: int) -> int:
    """Semitones from ``source`` to ``target`` tonic, in -6..+5 (the nearest way)."""
    return (target - source + 6) % 12 - 6


def assign_piece_keys(pieces: Sequence[tuple[int, str, str]], seed: int) -> dict[int, tuple[int, str]]:
    """Key of each generated piece ``(index, style, split)``: least used in its split, then
    in its style, ties by a seeded order."""
    split_counts: dict[str, Counter] = defaultdict(Counter)
    style_counts: dict[str, Counter] = defaultdict(Counter)
    result = {}
    for index, style, split in pieces:
        order = list(ms.KEYS)
        seeded_rng(seed, "piece-key", index).shuffle(order)
        key = min(order, key=lambda k: (split_counts[split][k], style_counts[style][k], order.index(k)))
        split_counts[split][key] += 1
        style_counts[style][key] += 1
        result[index] = key
    return result


@dataclass(frozen=True)
class PlannedItem:
    """One file to make: labels, split and what it is rendered from."""

    id: str
    source: str
    split: str
    group: str
    soundfont: str
    #: chorale: corpus name; generated: style
    origin: str
    tonic: int
    mode: str
    transpose: int = 0
    index: int = -1

    @property
    def path(self) -> str:
        return self.id + ".wav"

    @property
    def key(self) -> str:
        return ms.key_label(self.tonic, self.mode)
