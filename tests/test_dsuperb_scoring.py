"""``dsuperb score`` on hand-made answers whose scores are known, including a judge plugin."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
import yaml
from click.testing import CliRunner

from test_dsuperb import make_table, tone_clip

from audioembed import hookimpl
from audioembed.dsuperb.commands import dsuperb_group
from audioembed.dsuperb.judges import JudgeSpec, available_judges
from audioembed.dsuperb.scoring import (match_label, normalize_answer, normalize_transcript, parse_number,
                                        read_predictions)
from audioembed.registry import get_registry

EMOTION_INSTRUCTION = "What emotion does the speaker convey? Choose one: (A) happy (B) sad (C) angry."


def _instance(root, name, labels, instruction="Answer the question.", audio=True):
    rows = [{"file": f"{name}_{i}", "audio": tone_clip(220.0 + 40 * i, seed=i, seconds=0.05), "instruction": instruction,
             "label": label} for i, label in enumerate(labels)]
    pq.write_table(make_table(rows), root / f"{name}.parquet")


@pytest.fixture(autouse=True)
def _no_user_registry(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("AUDIOEMBED_DSUPERB_REGISTRY", raising=False)


@pytest.fixture
def scored(tmp_path):
    """Instances of every scoring rule, a registry naming them, and the answers of a 'model'."""
    root = tmp_path / "data"
    root.mkdir()
    _instance(root, "Emotion", ["sad", "happy", "sad", "angry", "happy", "angry", "happy"], EMOTION_INSTRUCTION)
    _instance(root, "Score", ["3.5", "2", "4", "1"])
    _instance(root, "Asr", ["hello world", "good morning"])
    _instance(root, "Tags", ["rock, pop", "jazz", "pop; jazz"])
    _instance(root, "Caption", ["a dog barks in the distance"])
    registry = tmp_path / "tasks.yaml"
    registry.write_text(yaml.safe_dump({"version": 1, "tasks": [
        {"id": "Emotion", "domain": "speech", "category": "paralinguistics", "kind": "single-label"},
        {"id": "Score", "domain": "speech", "category": "phonetics", "kind": "regression"},
        {"id": "Asr", "domain": "speech", "category": "content", "kind": "generation", "metric": "wer"},
        {"id": "Tags", "domain": "music", "category": "tagging", "kind": "multi-label"},
        {"id": "Caption", "domain": "audio", "category": "captioning", "kind": "generation"},
    ]}))
    answers = [
        ("Emotion", "Emotion_0", "The answer is (B) sad"),   # correct, option with text
        ("Emotion", "Emotion_1", "Happy."),                  # correct, case and punctuation
        ("Emotion", "Emotion_2", "B"),                       # correct, bare option letter
        ("Emotion", "Emotion_3", "It is angry or sad"),      # N/A: two labels
        ("Emotion", "Emotion_4", "neutral"),                 # N/A: not a label of the instance
        ("Emotion", "Emotion_5", "SAD!"),                    # wrong
        # Emotion_6 unanswered
        ("Score", "Score_0", "The score is 3.5"),            # error 0
        ("Score", "Score_1", "two"),                         # error 0
        ("Score", "Score_2", "about 5.0 points"),            # error 1
        ("Score", "Score_3", "I cannot tell"),               # N/A
        ("Asr", "Asr_0", "Transcription: Hello, world!"),    # 0 errors
        ("Asr", "Asr_1", "good evening"),                    # 1 substitution of 4 reference words
        ("Tags", "Tags_0", "pop and rock"),                  # F1 1
        ("Tags", "Tags_1", "rock"),                          # F1 0
        ("Tags", "Tags_2", "Jazz."),                         # F1 2/3
        ("Caption", "Caption_0", "a dog"),
    ]
    predictions = tmp_path / "answers.jsonl"
    lines = [json.dumps({"instance": t, "file": f, "response": r}) for t, f, r in answers]
    lines.insert(3, "{not json")
    lines.append(json.dumps({"task": "Emotion", "file": "Emotion_0", "response": "happy"}))  # a repeat
    predictions.write_text("\n".join(lines) + "\n")
    return root, registry, predictions


def test_rule_based_scores(scored, tmp_path):
    root, registry, predictions = scored
    out = tmp_path / "scores.json"
    result = CliRunner().invoke(dsuperb_group, ["score", "-p", str(predictions), "--data-root", str(root),
                                                "--registry", str(registry), "-o", str(out)])
    assert result.exit_code == 0, result.output
    tasks = {t["task"]: t for t in json.loads(out.read_text())["tasks"]}
    emotion = tasks["Emotion"]
    assert emotion["answered"] == 6 and emotion["missing"] == 1 and emotion["na"] == 2
    assert emotion["values"]["accuracy"] == pytest.approx(3 / 6)
    assert emotion["values"]["na_rate"] == pytest.approx(2 / 6)
    assert any("second answer" in p for p in emotion["problems"])
    score = tasks["Score"]["values"]
    assert score["mae"] == pytest.approx(1 / 3) and score["na_rate"] == pytest.approx(1 / 4)
    assert score["pearson"] == pytest.approx(0.96077, abs=1e-4)
    assert tasks["Asr"]["values"]["wer"] == pytest.approx(1 / 4)
    tags = tasks["Tags"]["values"]
    assert tags["f1"] == pytest.approx((1 + 0 + 2 / 3) / 3) and tags["exact"] == pytest.approx(1 / 3)
    assert "accuracy" not in tasks["Caption"]["values"] and "use --judge" in tasks["Caption"]["problems"][0]
    assert "line 4: malformed JSON" in result.output
    # per-domain report: speech averages one accuracy task and one WER task
    assert "| speech | 0.500 (n=1) |" in result.output
    by_domain = {row["domain"]: row for row in json.loads(out.read_text())["by_domain"]}
    assert by_domain["speech"]["wer"]["tasks"] == 1 and by_domain["music"]["f1"]["tasks"] == 1


def test_judge_plugin_replaces_the_rules(scored):
    root, registry, predictions = scored

    class ExactJudge:
        @hookimpl
        def audioembed_dsuperb_judges(self):
            def judge(instruction, label, response):
                if "cannot" in response:
                    return None
                return float(normalize_answer(response) == normalize_answer(label))

            return [JudgeSpec("exact-test", judge, "exact match, for tests")]

    manager = get_registry().manager
    plugin = ExactJudge()
    manager.register(plugin, name="test:exact-judge")
    try:
        assert "exact-test" in available_judges()
        result = CliRunner().invoke(dsuperb_group, ["score", "-p", str(predictions), "--data-root", str(root),
                                                    "--registry", str(registry), "--judge", "exact-test",
                                                    "--tasks", "Score,Emotion"])
        assert result.exit_code == 0, result.output
        assert "judge 'exact-test'" in result.output
        # Emotion: only "Happy." matches exactly; Score: "two" does, "I cannot tell" is N/A
        assert "| Emotion | speech | judge | 6 / 7 | 0.000 | judge 0.167 |" in result.output
        assert "| Score | speech | judge | 4 / 4 | 0.250 | judge 0.250 |" in result.output
    finally:
        manager.unregister(plugin)
    result = CliRunner().invoke(dsuperb_group, ["score", "-p", str(predictions), "--data-root", str(root),
                                                "--registry", str(registry), "--judge", "exact-test"])
    assert result.exit_code != 0 and "unknown judge 'exact-test'" in result.output


def test_matching_rules():
    labels = ["happy", "sad", "angry"]
    assert match_label("(C)", labels, EMOTION_INSTRUCTION) == "angry"
    assert match_label("A", labels, EMOTION_INSTRUCTION) == "happy"  # "a" is also an article
    assert match_label("A", labels) is None  # no options listed: a bare letter means nothing
    assert match_label("There is no speech.", ["speech", "no speech"]) == "no speech"
    assert match_label("Yes, the same speaker.", ["yes", "no"]) == "yes"
    assert match_label("There are three speakers", ["1", "2", "3"]) == "3"
    assert match_label("", labels) is None
    assert normalize_answer("The C# minor key") == "c# minor key"
    assert parse_number("The answer is -1.5e2 dB") == -150.0 and parse_number("1,000 Hz") == 1000.0
    assert parse_number("no idea") is None
    assert normalize_transcript("Transcription: 你 好, World!") == "你好 world"


def test_unreadable_predictions(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"instance": "X"}) + "\n")
    predictions, problems = read_predictions(bad)
    assert not predictions and "needs 'instance'" in problems[0]
    result = CliRunner().invoke(dsuperb_group, ["score", "-p", str(bad), "--data-root", str(tmp_path)])
    assert result.exit_code != 0 and "no task could be scored" in result.output
