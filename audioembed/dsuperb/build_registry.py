"""Regenerates the packaged Dynamic-SUPERB task registry (``tasks.yaml``) from the organisers' list.

Why a generator instead of a hand-written YAML: the list (``instances.csv``: name, Hub path,
pinned commit, category, note, Speech/Music/Audio flags) has domain flags on only 46 of 259
rows and calls many probe-able tasks "Text generation". Domain, category, task kind and metric
are therefore derived here by ordered rule tables that a reviewer can read in one screen, plus a
short list of hand corrections, each with its reason. Rerun after the list changes::

    python -m audioembed.dsuperb.build_registry /path/to/instances.csv

Rules are regular expressions searched (case-sensitively: ids are CamelCase, and e.g. "cat"
occurs inside "Classification") in the instance id, i.e. the Hub repository name without the
``DynamicSuperb/`` prefix; the first matching rule wins. Where the CSV does flag a domain and
the rules disagree, the build fails unless the row is listed in ``CSV_FLAG_DISAGREEMENTS`` with
the reason we deviate, so no disagreement goes unreviewed.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import re
import sys
from collections import Counter
from pathlib import Path

import yaml

from ..errors import AudioEmbedError
from .catalog import DOMAINS, KINDS, METRICS, packaged_registry_path

HUB_PREFIX = "DynamicSuperb/"

#: (pattern, domain, category) -- first match wins. Order matters where names overlap: music and
#: environmental-audio rules come before the speech rules because names such as
#: "SingingVoiceDeepfakeDetection" or "HumanNonSpeechSoundRecognition" also contain speech words.
DOMAIN_RULES: list[tuple[str, str, str]] = [
    # ---- music. Sung input is music, whatever the question is about (lyrics, MOS, deepfakes).
    (r"Separation", "music", "source separation"),
    (r"EmotionClassificaitonInSongs|MoodTheme", "music", "emotion & mood"),
    (r"Sing|Song|Lyric|VocalTechnique|VocalSet|_CSD$", "music", "singing"),
    (r"Genre", "music", "genre"),
    (r"MusicSpeech", "music", "music detection"),
    (r"MusicTagging", "music", "tagging"),
    (r"KeyDetection|Chord|Tonic|Pitch", "music", "pitch & harmony"),
    (r"Instrument|Percussion|Mridangam", "music", "instrument"),
    (r"Beat|Rhythm", "music", "rhythm"),
    (r"MusicTranscription", "music", "transcription"),
    (r"^SoundEffectDetection_IDMT", "music", "production & effects"),  # guitar/bass effect units
    # ---- environmental and other non-speech audio
    (r"^Animal|Bird|^CatEmotion|Beehive", "audio", "bioacoustics"),
    (r"Covid|Cough", "audio", "health"),
    (r"VocalSound|VocalImitation|NonSpeech|Scream", "audio", "human sounds"),
    (r"SoundPosition|Multichannel|STARSS", "audio", "spatial"),
    (r"ESC50|UrbanSound|EnvironmentRecognition|Emergency_traffic|DESED|DCASE|SoundEvent|Clotho", "audio", "sound events"),
    # ---- speech
    (r"SuperbSS|SuperbSE|VoiceConversion", "speech", "speech generation"),
    (r"Spoof|DeepFake|Deepfake|SceneFake|Fraud|Robocall", "speech", "security"),
    (r"Spatial|HowFarAreYou", "speech", "spatial"),
    (r"Noise|Reverberation|Enhancement|AudioEditing|SpeechDetection|AudioDuration", "speech", "signal & degradation"),
    (r"LanguageIdentification|Accent", "speech", "language"),
    (r"Phonolog|Phone|Pronunciation|L2English|Prosod|ToneSandhi|Heteronym", "speech", "phonetics & prosody"),
    (r"Emotion|Emoji|Sarcasm|Stutter|VoiceDisorder|Stress|SuperbER", "speech", "paralinguistics"),
    (r"SpeechRecognition|ASR|Asr|SuperbPR|SpokenTerm|SpeechTextMatching|^SpeechCommandRecognition|SuperbKS|"
     r"SpokenCommands|SpokenDigit|NBest|SuperbQbE", "speech", "content"),
    (r"Speaker|SuperbSV|SuperbSD|^AgeClassification|^Gender", "speech", "speaker"),
    (r"Intent|SuperbIC|SuperbSF|SuperbST|Sentiment|Named_Entity|PoS_Estimation|Dialogue|ConversationMatching|"
     r"SemanticTextualSimilarity|GrammarAcceptability|NonceWord", "speech", "understanding"),
]

#: rows whose CSV flag we knowingly overrule, with the reason (checked: a stale entry fails the build)
CSV_FLAG_DISAGREEMENTS: dict[str, str] = {
    "LyricTranslation_SingSet": "input is sung audio (SingSet): music, like every singing task",
    "Children_Song_Transcript_Verification_CSD": "input is children's singing (CSD): music",
    "SingingVoiceDeepfakeDetection_CtrSVDD_ACEKiSing_M4Singer": "input is singing (CtrSVDD): music",
    "SingingVoiceSynthesis_ACEOpencpop-Test700": "output is singing: music",
    "SingingAutomaticMOSPrediction_SingMOS": "input is singing (SingMOS): music",
    "PitchExtractionByLyrics_CSD": "input is children's singing (CSD): music",
    "HumanScreamingDetection_Environmentdb": "screams are non-speech vocal sounds from an environmental corpus: audio",
}

#: CSV "Text generation" rows -> (pattern, kind, metric); first match wins, unmatched rows stay
#: generation (skipped by eval; scored only by a judge)
TEXT_GENERATION_RULES: list[tuple[str, str, str]] = [
    # tag sets: several labels per clip
    (r"MTGTop50|MagnaTagATune|MTG-Genre|MTGMoodTheme|MTGInstrument|OpenMIC", "multi-label", "f1"),
    # one label from a closed set, only phrased as free text (HEAR/MARBLE folds without listed options)
    (r"^HEARLanguageIdentification|^HEAREnvironmentalSound|^HEARSpeakerCount|^HEARMusicGenre|"
     r"^MARBLEGenreClassification_GTZAN$|^SpeechCommandRecognition_AudioMNIST$", "single-label", "accuracy"),
    # closed-set answers judged from the task names (eval checks the labels and refuses free text)
    (r"^EmotionChangeDetection_|^AudioEditingIdentification_|^Children_Song_Transcript_Verification_",
     "single-label", "accuracy"),
    # transcription-like: error rates. Character level where words are not space-delimited.
    (r"SuperbOODAsrZh|^Code-switchSpeechRecognition", "generation", "cer"),
    (r"^SuperbPR_", "generation", "per"),
    (r"SpeechRecognition_(MLS|CORAA)|TargetSpeaker-ASR|SongLyricRecognition|SuperbASR|SuperbOODAsr(Ar|Es|Spon)",
     "generation", "wer"),
]

#: CSV "Classification" rows compared across two (or three) clips; the loader still decides from
#: the columns actually present (audio2/audio3/audio1, enrollment/testing, query/doc)
MULTI_CLIP = (r"SpeakerVerification|SuperbSV|SuperbQbE|PronunciationSimilarity|SemanticTextualSimilarity|"
              r"DialogueActPairing|AcceptabilityComparison")

#: the CSV's last 55 rows are the Phase-1 instances (README); this is the first of them
PHASE1_FIRST = "SpeakerCounting_LibriTTS-TestClean"
PHASE1_COUNT = 55

_SHA1 = re.compile(r"^[0-9a-f]{40}$")


class BuildError(AudioEmbedError, ValueError):
    """The list cannot be turned into a registry; the message names the rows."""


def _first(rules, name: str):
    for rule in rules:
        if re.search(rule[0], name):
            return rule
    return None


def _csv_domain(row: dict) -> str | None:
    flagged = [d for d, col in (("speech", "Speech"), ("music", "Music"), ("audio", "Audio"))
               if row.get(col, "").strip().upper() == "TRUE"]
    if len(flagged) > 1:
        raise BuildError(f"{row['InstanceName']}: several domain flags {flagged}")
    return flagged[0] if flagged else None


def _kind_and_metric(task_id: str, csv_category: str) -> tuple[str, str]:
    if csv_category == "Regression":
        return "regression", "mae"
    if csv_category in ("Speech generation", "Audio generation"):
        return "generation", "none"
    if csv_category == "Classification":
        return ("multi-clip", "accuracy") if re.search(MULTI_CLIP, task_id) else ("single-label", "accuracy")
    if csv_category == "Text generation":
        rule = _first(TEXT_GENERATION_RULES, task_id)
        return (rule[1], rule[2]) if rule else ("generation", "none")
    raise BuildError(f"{task_id}: unknown CSV category '{csv_category}'")


def build_entries(csv_path: Path) -> list[dict]:
    """Registry entries in CSV order; raises BuildError listing every row that needs review."""
    with open(csv_path, encoding="utf-8-sig", newline="") as f:
        rows = list(csv.DictReader(f))
    names = [r["InstanceName"].strip() for r in rows]
    if PHASE1_FIRST not in names or len(names) - names.index(PHASE1_FIRST) != PHASE1_COUNT:
        raise BuildError(f"{csv_path}: expected the last {PHASE1_COUNT} rows to start at {PHASE1_FIRST}")
    phase1_start = names.index(PHASE1_FIRST)
    revisions = Counter(r["Version"].strip() for r in rows if r["Version"].strip())
    entries, problems, used_disagreements = [], [], set()
    for index, row in enumerate(rows):
        hub_path = row["HuggingfacePath"].strip()
        if not hub_path.startswith(HUB_PREFIX):
            problems.append(f"{row['InstanceName']}: Hub path '{hub_path}' is not under {HUB_PREFIX}")
            continue
        task_id = hub_path[len(HUB_PREFIX):]
        rule = _first(DOMAIN_RULES, task_id)
        if rule is None:
            problems.append(f"{task_id}: no domain rule matches; add one to DOMAIN_RULES")
            continue
        _, domain, category = rule
        flagged = _csv_domain(row)
        if flagged and flagged != domain:
            if task_id not in CSV_FLAG_DISAGREEMENTS:
                problems.append(f"{task_id}: rules say {domain}, the CSV flags {flagged}; "
                                "fix the rules or list it in CSV_FLAG_DISAGREEMENTS")
            used_disagreements.add(task_id)
        kind, metric = _kind_and_metric(task_id, row["Category"].strip())
        notes = [row["Note"].strip()] if row["Note"].strip() else []
        revision = row["Version"].strip() or None
        if revision and not _SHA1.match(revision):
            notes.append(f"revision '{revision}' is not a full 40-hex commit id; resolve it on the Hub before pinning")
        if revision and revisions[revision] > 1:
            notes.append("revision shared with another instance in the list (likely a copy-paste slip); check it")
        if revision is None:
            notes.append("no pinned revision in the list; fetch main and record the commit")
        if task_id in CSV_FLAG_DISAGREEMENTS:
            notes.append(f"domain overrules CSV flag '{flagged}': {CSV_FLAG_DISAGREEMENTS[task_id]}")
        entry = {
            "id": task_id,
            "name": row["InstanceName"].strip(),
            "hub_id": hub_path,
            "revision": revision,
            "phase": 1 if index >= phase1_start else 2,
            "domain": domain,
            "category": category,
            "kind": kind,
            "metric": metric,
            "csv_category": row["Category"].strip(),
        }
        if flagged:
            entry["csv_domain"] = flagged
        if "no audio input" in row["Note"].lower():
            entry["has_audio"] = False
        if notes:
            entry["note"] = "; ".join(notes)
        entries.append(entry)
    stale = sorted(set(CSV_FLAG_DISAGREEMENTS) - used_disagreements)
    if stale:
        problems.append(f"CSV_FLAG_DISAGREEMENTS lists rows that no longer disagree: {stale}")
    for entry in entries:
        assert entry["domain"] in DOMAINS and entry["kind"] in KINDS and entry["metric"] in METRICS, entry
    if problems:
        raise BuildError("cannot build the registry:\n  " + "\n  ".join(problems))
    return entries


def counts_table(entries: list[dict]) -> str:
    """Instances per kind (rows) and domain (columns), for the header and the build log."""
    table = Counter((e["kind"], e["domain"]) for e in entries)
    lines = [f"{'kind':<14}" + "".join(f"{d:>8}" for d in DOMAINS) + f"{'total':>8}"]
    for kind in KINDS:
        cells = [table[(kind, d)] for d in DOMAINS]
        lines.append(f"{kind:<14}" + "".join(f"{c:>8}" for c in cells) + f"{sum(cells):>8}")
    totals = [sum(table[(k, d)] for k in KINDS) for d in DOMAINS]
    lines.append(f"{'total':<14}" + "".join(f"{c:>8}" for c in totals) + f"{sum(totals):>8}")
    return "\n".join(lines)


def render(entries: list[dict], csv_path: Path) -> str:
    digest = hashlib.sha256(csv_path.read_bytes()).hexdigest()
    header = [
        "# Dynamic-SUPERB task registry -- GENERATED, do not edit by hand.",
        "# Regenerate: python -m audioembed.dsuperb.build_registry instances.csv",
        "# Domain/category/kind rules and hand corrections live in audioembed/dsuperb/build_registry.py.",
        f"# Source: {csv_path.name} (sha256 {digest})",
        "#",
        *("# " + line for line in counts_table(entries).splitlines()),
        "",
    ]
    body = yaml.safe_dump({"version": 1, "tasks": entries}, sort_keys=False, allow_unicode=True, width=200)
    return "\n".join(header) + body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("csv", type=Path, help="instances.csv of the Dynamic-SUPERB organisers")
    parser.add_argument("-o", "--output", type=Path, default=packaged_registry_path(),
                        help="registry file to write [default: the packaged tasks.yaml]")
    args = parser.parse_args(argv)
    try:
        entries = build_entries(args.csv)
    except (BuildError, OSError, KeyError) as exc:
        print(f"build_registry: {exc}", file=sys.stderr)
        return 1
    text = render(entries, args.csv)
    tmp = args.output.with_name(args.output.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.output)
    print(f"wrote {args.output}: {len(entries)} instances")
    print(counts_table(entries))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
