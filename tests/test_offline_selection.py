"""The rule that picks the shipped unified student, fed score tables directly."""

from __future__ import annotations

import math

from audioembed.offline.selection import CANDIDATE_KINDS, domain_scores, select_unified_student

DOMAINS = {"asr": "speech", "speaker_id": "speech", "style": "music", "tagging": "music"}
KINDS = {"mfcc": "baseline", "teacher_speech": "teacher", "teacher_music": "teacher", "speech_only": "single",
         "multi_every": "multi", "merge_l0.5-0.5": "merge", "merge_l0.2-0.8": "merge"}


def row(speech: float, music: float) -> dict[str, float]:
    """Normalised scores on every task: ``speech`` on the speech tasks, ``music`` on the music ones."""
    return {t: speech if d == "speech" else music for t, d in DOMAINS.items()}


def table(**rows: tuple[float, float]) -> dict[str, dict[str, float]]:
    return {name.replace("__", "."): row(*v) for name, v in rows.items()}


def test_picks_the_best_candidate_even_when_mfcc_and_teachers_score_higher():
    norm = {"mfcc": row(1.0, 1.0), "teacher_speech": row(1.0, 0.9), "teacher_music": row(0.9, 1.0),
            "speech_only": row(1.0, 1.0), "multi_every": row(0.4, 0.5), "merge_l0.5-0.5": row(0.6, 0.2),
            "merge_l0.2-0.8": row(0.1, 0.2)}
    chosen = select_unified_student(norm, KINDS, DOMAINS)
    assert chosen.best == "multi_every"
    assert math.isclose(chosen.overall, 0.45)
    assert KINDS[chosen.best] in CANDIDATE_KINDS and chosen.skipped == {}


def test_nothing_is_picked_without_a_candidate():
    norm = {"mfcc": row(1.0, 1.0), "teacher_speech": row(0.5, 0.5), "teacher_music": row(0.2, 0.9),
            "speech_only": row(0.8, 0.8)}
    chosen = select_unified_student(norm, KINDS, DOMAINS)
    assert chosen.best is None and chosen.overall is None


def test_unknown_kinds_are_never_candidates():
    norm = {"mystery": row(1.0, 1.0), "multi_every": row(0.1, 0.1)}
    assert select_unified_student(norm, {"multi_every": "multi"}, DOMAINS).best == "multi_every"


def test_ties_go_to_the_name_that_sorts_first_whatever_the_order():
    tied = {"merge_l0.5-0.5": row(0.5, 0.5), "merge_l0.2-0.8": row(0.2, 0.8), "multi_every": row(0.8, 0.2)}
    for order in (list(tied), list(reversed(tied))):
        norm = {"mfcc": row(1.0, 1.0), **{m: tied[m] for m in order}}
        chosen = select_unified_student(norm, KINDS, DOMAINS)
        assert chosen.best == "merge_l0.2-0.8"  # all three have overall 0.5; "merge_l0.2" < "merge_l0.5" < "multi"
        assert math.isclose(chosen.overall, 0.5)


def test_a_candidate_missing_a_task_is_skipped_and_named():
    norm = {"mfcc": row(0.5, 0.5), "multi_every": row(0.4, 0.4), "merge_l0.5-0.5": row(0.9, 0.9)}
    del norm["merge_l0.5-0.5"]["asr"]  # its average over three tasks would beat multi_every's over four
    chosen = select_unified_student(norm, KINDS, DOMAINS)
    assert chosen.best == "multi_every"
    assert chosen.skipped == {"merge_l0.5-0.5": "no result on asr"}


def test_a_task_no_model_has_does_not_disqualify_anyone():
    norm = {"mfcc": {"style": 1.0}, "multi_every": {"style": 0.2}, "merge_l0.5-0.5": {"style": 0.3}}
    assert select_unified_student(norm, KINDS, DOMAINS).best == "merge_l0.5-0.5"


def test_a_task_only_mfcc_has_makes_every_candidate_incomplete():
    norm = {"mfcc": row(1.0, 1.0), "multi_every": row(0.5, 0.5)}
    del norm["multi_every"]["tagging"]
    chosen = select_unified_student(norm, KINDS, DOMAINS)
    assert chosen.best is None and chosen.skipped == {"multi_every": "no result on tagging"}


def test_candidates_without_any_result_are_skipped():
    norm = {"mfcc": row(1.0, 1.0), "multi_every": {}, "merge_l0.5-0.5": row(0.0, 0.0)}
    chosen = select_unified_student(norm, KINDS, DOMAINS)
    assert chosen.best == "merge_l0.5-0.5" and "multi_every" in chosen.skipped


def test_no_results_at_all():
    chosen = select_unified_student({"mfcc": {}, "multi_every": {}}, KINDS, DOMAINS)
    assert chosen.best is None and chosen.skipped == {"multi_every": "no overall score"}


def test_domain_scores_average_each_domain_then_the_two():
    scores = domain_scores({"m": {"asr": 1.0, "speaker_id": 0.0, "style": 1.0, "tagging": 1.0}, "s": {"asr": 0.3},
                            "none": {}}, DOMAINS)
    assert scores["m"] == {"speech": 0.5, "music": 1.0, "overall": 0.75}
    assert scores["s"]["overall"] == 0.3 and math.isnan(scores["s"]["music"])
    assert math.isnan(scores["none"]["overall"])
