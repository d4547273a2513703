"""Prompt files (festival or plain text) and the ASR transcript of a prompt."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from .common import CorpusError


@dataclass(frozen=True)
class Prompt:
    id: str
    text: str


_FESTIVAL_LINE = re.compile(r'^\(\s*(\S+)\s+"((?:[^"\\]|\\.)*)"\s*\)\s*$')


def read_prompts(path: str | os.PathLike) -> list[Prompt]:
    """Prompts of a festival-format file (``( id "Text." )`` per line) or a plain text file.

    The format is recognised from the first non-blank, non-``;`` line: ``(`` means
    festival format; otherwise every non-blank line is a sentence whose id is
    ``line<NNNNN>`` (its line number). Blank lines and, in festival files, lines starting
    with ``;`` are ignored.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except FileNotFoundError:
        raise CorpusError(f"{path}: prompts file not found (the ARCTIC prompts are in ../shared/data/text/cmuarctic.data)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise CorpusError(f"{path}: cannot read prompts ({getattr(err, 'strerror', None) or err})") from None
    first = next((line.strip() for line in lines if line.strip() and not line.strip().startswith(";")), "")
    prompts: list[Prompt] = []
    if first.startswith("("):
        for lineno, line in enumerate(lines, start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith(";"):
                continue
            match = _FESTIVAL_LINE.match(stripped)
            if not match:
                raise CorpusError(f'{path}: line {lineno}: expected ( id "text" ), got {stripped[:60]!r}')
            text = re.sub(r"\\(.)", r"\1", match.group(2))
            prompts.append(Prompt(match.group(1), " ".join(text.split())))
    else:
        for lineno, line in enumerate(lines, start=1):
            if line.strip():
                prompts.append(Prompt(f"line{lineno:05d}", " ".join(line.split())))
    if not prompts:
        raise CorpusError(f"{path}: no prompts")
    seen: set[str] = set()
    for prompt in prompts:
        if prompt.id in seen:
            raise CorpusError(f"{path}: duplicate prompt id {prompt.id!r}")
        if "/" in prompt.id or prompt.id in (".", ".."):
            raise CorpusError(f"{path}: prompt id {prompt.id!r} cannot be a file name")
        seen.add(prompt.id)
    return prompts


#: abbreviations whose spoken form every engine agrees on
_ABBREVIATIONS = {"mr.": "MISTER", "mrs.": "MISSUS", "dr.": "DOCTOR", "etc.": "ET CETERA"}
_WORD = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*")


def normalize_transcript(text: str) -> str | None:
    """The ASR reference of ``text``: upper-case words, inner apostrophes kept.

    Punctuation goes, hyphens and dashes separate words, a few abbreviations are spelt out
    (Mr., Mrs., Dr., etc.). Returns None when the text has something an engine may read in
    more than one way (digits, symbols, other scripts): such prompts are left out of the
    corpus rather than given a transcript that may not match the audio.
    """
    words: list[str] = []
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    for token in text.split():
        lowered = token.lower().strip("\"()[]")
        if lowered in _ABBREVIATIONS:
            words.append(_ABBREVIATIONS[lowered])
            continue
        token = re.sub(r"[-\u2013\u2014]", " ", token)
        token = re.sub(r"[.,;:!?\"()\[\]]", " ", token)
        for word in token.split():
            word = word.strip("'")
            if not word:
                continue
            if not _WORD.fullmatch(word):
                return None
            words.append(word.upper())
    return " ".join(words) or None
