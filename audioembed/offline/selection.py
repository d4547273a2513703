"""The rule that picks the unified student an offline run ships as the default model.

Kept apart from the page that reports it (``results.py``) so that the rule can be read in one
place and tested on score tables alone.

The rule, on the normalised scores of the full training sets (model -> task -> score in
[0, 1], 1 = best model on that task; see ``results.normalised``):

1. **Candidates** are the unified students only: models of kind ``multi`` (one student
   distilled from several teachers) or ``merge`` (task-vector merges). Baselines (``mfcc``),
   teachers and single-teacher students are never picked, however well they score.
2. **Complete results only**: the tasks of the comparison are every task on which any model
   has a score; a candidate without a score on one of them is not eligible (its average
   over fewer tasks would not be comparable), and it is named in ``Selection.skipped``.
3. The eligible candidate with the highest **overall** score wins: the mean of its speech and
   music averages (``domain_scores``); a candidate whose overall score is not a number is
   skipped.
4. **Ties** (equal overall scores) go to the name that sorts first, so the pick never depends
   on the order of the models in the recipe or in a dict.

No candidate eligible: nothing is selected (``best`` is None) and no unified student is copied.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

#: model kinds that may be selected (see the module docstring, rule 1)
CANDIDATE_KINDS = ("multi", "merge")


def domain_scores(norm: Mapping[str, Mapping[str, float]], domains: Mapping[str, str]) -> dict[str, dict[str, float]]:
    """model -> {"speech", "music", "overall"}: the mean normalised score over each domain's
    tasks (``domains``: task -> "speech" | "music"), and the mean of the two domain means
    (one domain alone when the model has no task of the other; NaN when it has neither)."""
    out = {}
    for model, per_task in norm.items():
        speech = [v for t, v in per_task.items() if domains.get(t) == "speech"]
        music = [v for t, v in per_task.items() if domains.get(t) == "music"]
        s = float(np.mean(speech)) if speech else float("nan")
        mu = float(np.mean(music)) if music else float("nan")
        out[model] = {"speech": s, "music": mu, "overall": float(np.nanmean([s, mu])) if speech or music else float("nan")}
    return out


@dataclass(frozen=True)
class Selection:
    """The outcome of the rule: the pick (or None), the score it won with, and why the other
    candidates were left out (model -> reason)."""

    best: str | None
    overall: float | None = None
    skipped: dict[str, str] = field(default_factory=dict)


def select_unified_student(norm: Mapping[str, Mapping[str, float]], kinds: Mapping[str, str],
                           domains: Mapping[str, str]) -> Selection:
    """Apply the rule of this module to ``norm`` (model -> task -> normalised score; a missing
    task is a missing key), ``kinds`` (model -> recipe kind) and ``domains`` (task -> domain)."""
    tasks = {t for per_task in norm.values() for t in per_task}
    overall = {m: d["overall"] for m, d in domain_scores(norm, domains).items()}
    eligible: dict[str, float] = {}
    skipped: dict[str, str] = {}
    for model in sorted(norm):
        if kinds.get(model) not in CANDIDATE_KINDS:
            continue
        missing = sorted(tasks - set(norm[model]))
        if missing:
            skipped[model] = f"no result on {', '.join(missing)}"
        elif not math.isfinite(overall[model]):
            skipped[model] = "no overall score"
        else:
            eligible[model] = overall[model]
    if not eligible:
        return Selection(None, None, skipped)
    best = min(eligible, key=lambda m: (-eligible[m], m))
    return Selection(best, eligible[best], skipped)
