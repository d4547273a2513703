"""``audioembed dsuperb score``: grade a spoken language model's free-text answers offline.

The paper grades answers with an LLM judge; this scorer is the deterministic, free default,
and a judge plugin can replace it (``--judge NAME``, see ``judges.py``). Rules, by the
instance's registry metric:

- **accuracy** (single-label, multi-clip): the answer and every label of the instance are
  normalised (Unicode NFKC, case folded, a leading "the answer is"/"I think" removed,
  punctuation except ``#`` turned into spaces, the articles a/an/the dropped, number words
  zero-twenty written as digits). The answer is the label it equals; else, when the
  instruction lists lettered options ("(A) happy (B) sad") and the answer is just a letter
  ("B", "(B)", "B."), that option; else the one label that occurs in it as a whole phrase
  (a label inside a longer matching label, "speech" in "no speech", does not count). No label,
  or several different ones ("happy or sad"), make the answer **N/A**: it counts as wrong in
  the accuracy and is reported as its own N/A rate. Naming a label that is not in the
  instance's label set is N/A too, since it cannot be told from an unparsable answer.
- **f1** (multi-label): labels are ``,``/``;``-separated tag sets; the answer's tags are the
  instance's tags found in it as whole phrases; per-answer F1 against the reference set,
  averaged (N/A, no tag found, scores 0), plus the exact-set rate.
- **mae** (regression): the first number in the answer (digits, or a number word); MAE, Pearson
  r and R² over the parsed answers; answers without a number are N/A and left out.
- **wer / cer / per** (transcription-like): corpus-level error rates (``metrics``, i.e. jiwer)
  after case folding and punctuation removal (spaces between CJK characters are dropped); a
  leading "Transcription:" is removed. PER is the WER over space-separated phones.
- **none**: free generation (translation, captions, timestamps): not scored without a judge.

Answers are compared only for examples of the instance; extra ids and duplicates are
reported. Metrics are over the answered examples, and the count of unanswered ones is shown.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..errors import AudioEmbedError
from ..metrics import char_error_rate, regression_metrics, word_error_rate
from .catalog import Catalog, TaskEntry, parse_float, split_label_set
from .loader import locate_instance, open_instance
from .report import markdown_macro_table

TASK_KEYS = ("instance", "task")
ID_KEYS = ("file",)
RESPONSE_KEY = "response"
ARTICLES = frozenset({"a", "an", "the"})
NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
    "sixteen seventeen eighteen nineteen twenty".split())}
_LEAD_IN = re.compile(r"^\s*(?:(?:so|thus|therefore|hence|well)\b[\s,]*)?(?:(?:i think|i believe|i would say)\b"
                      r"[\s,]*(?:that\b\s*)?)?(?:(?:the\s+)?(?:final\s+|correct\s+|best\s+)?(?:answer|label|output|"
                      r"prediction|classification)\b\s*(?:is|would be|should be)?\s*(?::|-(?=\s))?\s*)?", re.IGNORECASE)
_TRANSCRIPT_LEAD_IN = re.compile(r"^\s*(?:here is\s+|here's\s+)?(?:the\s+)?(?:transcription|transcript|answer)"
                                 r"(?:\s+of\s+the\s+(?:audio|speech|clip|recording))?(?:\s+is)?\s*:\s*", re.IGNORECASE)
_OPTION_MARK = re.compile(r"\(([A-Ja-j])\)")
_LETTER_ANSWER = re.compile(r"^\s*(?:option\s+)?(?:\(([A-Ja-j])\)|([A-J])(?:[.):]|\s*$))\s*(.*)$",
                            re.IGNORECASE | re.DOTALL)
_CJK_GAP = re.compile(r"(?<=[\u3040-\u30ff\u3400-\u9fff]) (?=[\u3040-\u30ff\u3400-\u9fff])")
_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")
_NUMBER_WORD = re.compile(r"\b(?:" + "|".join(sorted(NUMBER_WORDS, key=len, reverse=True)) + r")\b")
REPORT_METRICS = ("accuracy", "f1", "pearson", "wer", "cer", "per", "judge", "na_rate")


class ScoreError(AudioEmbedError, ValueError):
    """The predictions cannot be scored at all; the message names the file and line."""


# ----------------------------------------------------------------------------- normalisation


def _strip_punctuation(text: str, keep: str = "#") -> str:
    return "".join(" " if unicodedata.category(ch)[0] in "PS" and ch not in keep else ch for ch in text)


def normalize_answer(text: str) -> str:
    """Case, punctuation, articles and number words removed or unified (see the module doc)."""
    text = unicodedata.normalize("NFKC", str(text)).casefold()
    text = _LEAD_IN.sub("", text, count=1)
    words = [NUMBER_WORDS.get(w, w) for w in _strip_punctuation(text).split() if w not in ARTICLES]
    return " ".join(words)


def normalize_transcript(text: str) -> str:
    """Case folded, punctuation (but apostrophes) removed, and no spaces between CJK characters,
    which Mandarin references do not have but model answers sometimes do."""
    text = _TRANSCRIPT_LEAD_IN.sub("", unicodedata.normalize("NFKC", str(text)), count=1)
    text = " ".join(_strip_punctuation(text.casefold(), keep="'").split())
    return _CJK_GAP.sub("", text)


def lettered_options(instruction: str) -> dict[str, str]:
    """``"(A) happy (B) sad"`` -> ``{"A": "happy", "B": "sad"}`` (normalised), when letters run from A."""
    marks = list(_OPTION_MARK.finditer(instruction or ""))
    letters = [m.group(1).upper() for m in marks]
    if len(marks) < 2 or letters[: len(set(letters))] != [chr(ord("A") + i) for i in range(len(set(letters)))]:
        return {}
    options = {}
    for mark, following in zip(marks, marks[1:] + [None]):
        end = following.start() if following else len(instruction)
        chunk = re.split(r"[\n.?!]", instruction[mark.end():end])[0]
        chunk = re.sub(r"\s*(?:,|;|\bor\b)\s*$", "", chunk.strip(), flags=re.IGNORECASE)
        options.setdefault(mark.group(1).upper(), normalize_answer(chunk))
    return options


def _phrase_hits(text: str, phrases: Sequence[str]) -> list[str]:
    """The phrases found in ``text`` as whole words, minus those only found inside a longer hit."""
    spans = []
    for phrase in phrases:
        for m in re.finditer(r"(?<!\S)" + re.escape(phrase) + r"(?!\S)", text):
            spans.append((m.start(), m.end(), phrase))
    hits = []
    for start, end, phrase in spans:
        inside = any(s <= start and end <= e and (e - s) > (end - start) for s, e, _ in spans)
        if not inside and phrase not in hits:
            hits.append(phrase)
    return hits


def match_label(response: str, labels: Sequence[str], instruction: str = "") -> str | None:
    """The normalised label an answer names, or None (N/A); see the module docstring."""
    norm_labels = sorted({normalize_answer(label) for label in labels} - {""})
    answer = normalize_answer(response)
    if answer in norm_labels:
        return answer
    options = lettered_options(instruction)
    # before the phrase search: normalising drops "a", which is also option A
    stripped = _LEAD_IN.sub("", unicodedata.normalize("NFKC", str(response)), count=1)
    letter = _LETTER_ANSWER.match(stripped) if options else None
    if letter:
        rest = normalize_answer(letter.group(3))
        if rest in norm_labels:
            return rest
        option = options.get((letter.group(1) or letter.group(2)).upper())
        if option is not None and not rest:
            return option if option in norm_labels else None
    hits = _phrase_hits(answer, norm_labels) if answer else []
    return hits[0] if len(hits) == 1 else None


def parse_number(response: str) -> float | None:
    """The first number in the answer (after a lead-in such as "the answer is"): digits, with
    "." as the decimal point and "," as a thousands separator, or a number word up to twenty."""
    text = _LEAD_IN.sub("", unicodedata.normalize("NFKC", str(response)).casefold(), count=1)
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)
    found = [(m.start(), parse_float(m.group(0))) for m in _NUMBER.finditer(text)][:1]
    found += [(m.start(), float(NUMBER_WORDS[m.group(0)])) for m in _NUMBER_WORD.finditer(text)][:1]
    return min(found)[1] if found else None


# ----------------------------------------------------------------------------- predictions


@dataclass(frozen=True)
class Prediction:
    task: str
    file: str
    response: str | None
    line: int


def read_predictions(path: str | Path) -> tuple[list[Prediction], list[str]]:
    """Rows of a JSONL file with ``instance`` (or ``task``), ``file`` and ``response``.

    A malformed line is reported (``FILE: line N: why``) and skipped; the rest is scored.
    """
    path = Path(path).expanduser()
    predictions, problems = [], []
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as exc:
        raise ScoreError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise ScoreError(f"{path}: not UTF-8 text ({exc.reason})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}: line {number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{where}: malformed JSON ({exc.msg})")
            continue
        if not isinstance(row, dict):
            problems.append(f"{where}: expected a JSON object")
            continue
        task = next((row[k] for k in TASK_KEYS if row.get(k)), None)
        file_id = next((row[k] for k in ID_KEYS if row.get(k) not in (None, "")), None)
        if task is None or file_id is None or RESPONSE_KEY not in row:
            problems.append(f"{where}: needs 'instance' (or 'task'), 'file' and 'response'")
            continue
        response = row[RESPONSE_KEY]
        predictions.append(Prediction(str(task), str(file_id), None if response is None else str(response), number))
    if not predictions and not problems:
        raise ScoreError(f"{path}: no predictions")
    return predictions, problems


# ----------------------------------------------------------------------------- scoring


@dataclass
class TaskScore:
    task: str
    domain: str
    category: str
    metric: str
    examples: int
    answered: int = 0
    na: int = 0
    values: dict[str, float | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def missing(self) -> int:
        return self.examples - self.answered

    def as_dict(self) -> dict:
        return {"task": self.task, "domain": self.domain, "category": self.category, "metric": self.metric,
                "examples": self.examples, "answered": self.answered, "missing": self.missing, "na": self.na,
                "values": self.values, "problems": self.problems}


def _answers(entry: TaskEntry, text, predictions: list[Prediction], score: TaskScore):
    """(row index, prediction) pairs for the instance's examples; extras and repeats reported."""
    row_of = {item_id: i for i, item_id in enumerate(text.ids)}
    seen, pairs = set(), []
    for p in predictions:
        if p.file not in row_of:
            score.problems.append(f"line {p.line}: '{p.file}' is not an example of {entry.id}")
        elif p.file in seen:
            score.problems.append(f"line {p.line}: second answer for '{p.file}' ignored")
        else:
            seen.add(p.file)
            pairs.append((row_of[p.file], p))
    score.answered = len(pairs)
    return pairs


def score_task(entry: TaskEntry, text, predictions: list[Prediction],
               judge: Callable[[str, str, str], float | None] | None = None) -> TaskScore:
    """Score one instance's answers (``text`` from ``Instance.read_text``)."""
    metric = "judge" if judge is not None else entry.metric
    score = TaskScore(entry.id, entry.domain, entry.category, metric, examples=len(text.ids))
    pairs = _answers(entry, text, predictions, score)
    labels = ["" if v is None else str(v).strip() for v in text.labels]
    if not pairs:
        return score
    if judge is not None:
        values = []
        for row, p in pairs:
            value = judge(text.instructions[row], labels[row], p.response) if p.response is not None else None
            score.na += value is None
            values.append(0.0 if value is None else float(value))
        score.values = {"judge": sum(values) / len(values)}
    elif metric == "accuracy":
        label_set = sorted({label for label in labels if label})
        correct = 0
        for row, p in pairs:
            matched = match_label(p.response, label_set, text.instructions[row]) if p.response is not None else None
            score.na += matched is None
            correct += matched is not None and matched == normalize_answer(labels[row])
        score.values = {"accuracy": correct / len(pairs)}
    elif metric == "f1":
        vocabulary = sorted({normalize_answer(t) for label in labels for t in split_label_set(label)} - {""})
        f1s, exact = [], 0
        for row, p in pairs:
            truth = {normalize_answer(t) for t in split_label_set(labels[row])} - {""}
            found = set(_phrase_hits(normalize_answer(p.response), vocabulary)) if p.response is not None else set()
            score.na += not found
            overlap = len(found & truth)
            f1s.append(2 * overlap / (len(found) + len(truth)) if found or truth else 1.0)
            exact += found == truth
        score.values = {"f1": sum(f1s) / len(f1s), "exact": exact / len(pairs)}
    elif metric == "mae":
        truths, guesses = [], []
        for row, p in pairs:
            truth = parse_float(labels[row])
            if truth is None:
                score.problems.append(f"{text.ids[row]}: reference '{labels[row][:40]}' is not a number")
                continue
            guess = parse_number(p.response) if p.response is not None else None
            score.na += guess is None
            if guess is not None:
                truths.append(truth)
                guesses.append(guess)
        if len(guesses) >= 2:
            score.values = regression_metrics(truths, guesses)
        elif guesses:
            score.values = {"mae": abs(truths[0] - guesses[0])}
    elif metric in ("wer", "cer", "per"):
        refs, hyps = [], []
        for row, p in pairs:
            ref = normalize_transcript(labels[row])
            if not ref:
                score.problems.append(f"{text.ids[row]}: empty reference transcript")
                continue
            if p.response is None:
                score.na += 1
                continue
            refs.append(ref)
            hyps.append(normalize_transcript(p.response))
        if refs:
            rate = char_error_rate if metric == "cer" else word_error_rate
            score.values = {metric: rate(refs, hyps)}
    else:
        score.problems.append("free generation: not scored by rules (use --judge NAME)")
    score.values["na_rate"] = score.na / len(pairs)
    return score


@dataclass
class ScoreSummary:
    scores: list[TaskScore]
    problems: list[str]
    judge: str | None = None

    def as_dict(self) -> dict:
        items = [_report_item(s) for s in self.scores]
        from .report import macro_average_rows

        return {"judge": self.judge, "tasks": [s.as_dict() for s in self.scores], "problems": self.problems,
                "by_domain": macro_average_rows(items, ("domain",), REPORT_METRICS),
                "by_category": macro_average_rows(items, ("domain", "category"), REPORT_METRICS)}


def _log(message: str) -> None:
    print(f"audioembed: {message}", file=sys.stderr)


def score_predictions(predictions_path: str | Path, data_root: str | Path | None, tasks: str | None = None,
                      registry: str | None = None, judge_name: str | None = None) -> ScoreSummary:
    """Score every task that has answers in ``predictions_path`` (or only the ``tasks`` selection)."""
    judge = None
    if judge_name:
        from .judges import get_judge

        judge = get_judge(judge_name).judge
    predictions, problems = read_predictions(predictions_path)
    catalog = Catalog.load(registry)
    by_task: dict[str, list[Prediction]] = defaultdict(list)
    for p in predictions:
        entry = catalog.find(p.task)
        if entry is None:
            problems.append(f"line {p.line}: task '{p.task}' is not registered (add it with `audioembed dsuperb add`)")
            continue
        by_task[entry.id].append(p)
    selected = [e.id for e in catalog.select(tasks)] if tasks else list(by_task)
    unanswered = [task_id for task_id in selected if task_id not in by_task]
    if unanswered:
        shown = ", ".join(unanswered[:10]) + (f", ... ({len(unanswered) - 10} more)" if len(unanswered) > 10 else "")
        problems.append(f"no answers in {predictions_path} for {len(unanswered)} selected task(s): {shown}")
    scores = []
    for task_id in (t for t in selected if t in by_task):
        entry = catalog.get(task_id)
        try:
            text = open_instance(locate_instance(entry, data_root)).read_text()
        except Exception as exc:  # one unreadable instance must not stop the others
            problems.append(f"{task_id}: {exc}")
            _log(f"{task_id}: cannot score: {exc}")
            continue
        scores.append(score_task(entry, text, by_task[task_id], judge))
    return ScoreSummary(scores=scores, problems=problems, judge=judge_name)


def _report_item(score: TaskScore) -> dict:
    values = {k: v for k, v in score.values.items() if k in REPORT_METRICS}
    return {"domain": score.domain, "category": score.category, "values": values}


def score_report_markdown(summary: ScoreSummary) -> str:
    scorer = f"judge '{summary.judge}'" if summary.judge else "rule-based scorer"
    lines = [f"# Dynamic-SUPERB answers ({scorer})", "",
             "| task | domain | metric | answered / examples | N/A rate | scores |", "|---|---|---|---|---|---|"]
    for s in summary.scores:
        shown = ", ".join(f"{k} {v:.3f}" for k, v in s.values.items() if k != "na_rate" and v is not None) or "-"
        na = s.values.get("na_rate")
        lines.append(f"| {s.task} | {s.domain} | {s.metric} | {s.answered} / {s.examples} | "
                     f"{'-' if na is None else f'{na:.3f}'} | {shown} |")
    items = [_report_item(s) for s in summary.scores]
    lines += ["", "## By domain (macro average over tasks; n = tasks in the cell; MAE is not averaged "
              "across tasks, its scale differs per task)", ""]
    lines += markdown_macro_table(items, ("domain",), REPORT_METRICS)
    lines += ["## By category", ""]
    lines += markdown_macro_table(items, ("domain", "category"), REPORT_METRICS)
    notes = summary.problems + [f"{s.task}: {p}" for s in summary.scores for p in s.problems]
    if notes:
        lines += ["## Problems", ""] + [f"- {p}" for p in notes[:50]]
        if len(notes) > 50:
            lines.append(f"- ... {len(notes) - 50} more (see the JSON output)")
        lines.append("")
    return "\n".join(lines)
