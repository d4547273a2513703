"""``audioembed corpus speech``: prompts, splits, plan, builder (with a fake engine) and espeak-ng."""

from __future__ import annotations

import csv
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner

from audioembed.corpus import speech
from audioembed.corpus.speech import (
    MANIFEST_COLUMNS,
    CorpusError,
    Engine,
    Prompt,
    SpeechCorpusBuilder,
    SpeechCorpusOptions,
    build_speech_corpus,
    default_speakers,
    normalize_transcript,
    plan_speech_corpus,
    read_prompts,
    resolve_speakers,
    speech_command,
)

HAVE_ESPEAK = shutil.which("espeak-ng") is not None
needs_espeak = pytest.mark.skipif(not HAVE_ESPEAK, reason="espeak-ng is not installed (apt-get install -y espeak-ng)")

WORDS = ("the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "men", "sing")


class SineEngine(Engine):
    """A fake engine: a tone whose frequency depends on the voice and pitch, length on the text and rate."""

    package = "fake-tts"
    program = ""

    def __init__(self, name: str = "fake", installed: bool = True, broken_voice: str = "broken"):
        self.name = name
        self._installed = installed
        self.broken_voice = broken_voice
        self.calls = 0

    def installed(self) -> bool:
        return self._installed

    def synthesize(self, text, voice, rate, pitch, wav_path):
        self.calls += 1
        if voice == self.broken_voice:
            raise RuntimeError("this voice is broken")
        sr = 22050
        seconds = (0.2 + 0.01 * len(text)) / rate
        t = np.arange(int(seconds * sr)) / sr
        freq = (100 + zlib.crc32(voice.encode()) % 200) * pitch
        sf.write(wav_path, 0.3 * np.sin(2 * np.pi * freq * t), sr, subtype="PCM_16")


def write_prompts(path: Path, n: int) -> Path:
    rng = np.random.default_rng(0)
    lines = []
    for i in range(n):
        words = " ".join(rng.choice(WORDS, size=4 + i % 5))
        lines.append(f'( test_{i:04d} "{words.capitalize()}." )')
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def read_manifest(path: Path) -> list[dict[str, str]]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def quiet(_message: str) -> None:
    pass


# --------------------------------------------------------------------------- prompts


def test_read_prompts_festival_format(tmp_path):
    path = tmp_path / "p.data"
    path.write_text(
        '; a comment\n'
        '( arctic_a0001 "Author of the danger trail, Philip Steels, etc." )\n'
        '\n'
        '( arctic_a0002 "He said \\"no\\" twice." )\n',
        encoding="utf-8",
    )
    prompts = read_prompts(path)
    assert prompts == [
        Prompt("arctic_a0001", "Author of the danger trail, Philip Steels, etc."),
        Prompt("arctic_a0002", 'He said "no" twice.'),
    ]


def test_read_prompts_plain_text_and_errors(tmp_path):
    plain = tmp_path / "p.txt"
    plain.write_text("First sentence here.\n\n  Second   one.\n", encoding="utf-8")
    assert read_prompts(plain) == [Prompt("line00001", "First sentence here."), Prompt("line00003", "Second one.")]
    bad = tmp_path / "bad.data"
    bad.write_text('( a "ok" )\nnot festival\n', encoding="utf-8")
    with pytest.raises(CorpusError, match="line 2"):
        read_prompts(bad)
    dup = tmp_path / "dup.data"
    dup.write_text('( a "one" )\n( a "two" )\n', encoding="utf-8")
    with pytest.raises(CorpusError, match="duplicate prompt id 'a'"):
        read_prompts(dup)
    with pytest.raises(CorpusError, match="not found"):
        read_prompts(tmp_path / "missing.data")


def test_normalize_transcript():
    assert normalize_transcript("Not at this particular case, Tom, apologized Whittemore.") == (
        "NOT AT THIS PARTICULAR CASE TOM APOLOGIZED WHITTEMORE"
    )
    assert normalize_transcript("Philip Steels, etc.") == "PHILIP STEELS ET CETERA"
    assert normalize_transcript("Don't; a well-known 'quote' \u2014 yes!") == "DON'T A WELL KNOWN QUOTE YES"
    assert normalize_transcript("At sea, March 16, 1908.") is None  # digits: no single reading
    assert normalize_transcript("...") is None


# --------------------------------------------------------------------------- engines and speakers


def test_missing_engines_name_the_package(monkeypatch, tmp_path):
    engines = {"fake": SineEngine(installed=False)}
    with pytest.raises(CorpusError, match=r"engine 'fake' \(speaker fake:a\) is not installed.*apt-get install -y fake-tts"):
        resolve_speakers(["fake:a"], engines)
    with pytest.raises(CorpusError, match="ENGINE:VOICE"):
        resolve_speakers(["no-colon"], engines)
    with pytest.raises(CorpusError, match="unknown engine 'nope'"):
        resolve_speakers(["nope:x"], engines)

    # nothing installed at all: one clear error
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(CorpusError, match=r"no speech synthesis engine is installed.*apt-get install -y espeak-ng"):
        default_speakers(engines=speech.default_engines(), warn=quiet)
    # a requested engine that is missing names its Debian package
    with pytest.raises(CorpusError, match="apt-get install -y flite"):
        resolve_speakers(["flite:slt"])
    assert "apt-get install -y festvox-kallpc16k" in speech.FestivalEngine().voice_problem("kal_diphone")


def test_absent_default_engines_are_skipped_with_the_apt_command(monkeypatch):
    engines = {"espeak-ng": SineEngine("espeak-ng"), "flite": SineEngine("flite", installed=False)}
    engines["flite"].package = "flite"
    warnings: list[str] = []
    found = default_speakers(engines=engines, warn=warnings.append)
    assert found and all(s.engine == "espeak-ng" for s in found)
    assert any("apt-get install -y flite" in w for w in warnings)
    assert [s.name for s in default_speakers(3, engines=engines, warn=quiet)] == [s.name for s in found[:3]]
    # more than the default set: further espeak-ng voices, each with a new variant (own group)
    many = default_speakers(len(found) + 5, engines=engines, warn=quiet)
    assert len(many) == len(found) + 5 and len({s.group for s in many}) == len(many)


# --------------------------------------------------------------------------- the plan


def espeak_like_speakers(n: int) -> list[speech.Speaker]:
    # espeak-ng voice names for the grouping rule; two of them share a variant (one group)
    names = [f"espeak-ng:en-us+v{i}" for i in range(n - 1)] + ["espeak-ng:en-gb+v0"]
    return resolve_speakers(names, {"espeak-ng": SineEngine("espeak-ng")})


def make_prompts(n: int) -> list[Prompt]:
    return [Prompt(f"s{i:04d}", f"Sentence number {WORDS[i % len(WORDS)]} {i % 7 * 'a'}x.") for i in range(n)]


def test_splits_are_speaker_and_sentence_disjoint():
    speakers = espeak_like_speakers(12)
    opts = SpeechCorpusOptions(utterances=None)
    plan = plan_speech_corpus(make_prompts(60), speakers, seed=3, options=opts, warn=quiet)
    by_split: dict[str, dict[str, set]] = {s: {"spk": set(), "sent": set(), "group": set()} for s in ("train", "dev", "test")}
    for u in plan.utterances:
        assert plan.speaker_splits[u.speaker.name] == u.split == plan.sentence_splits[u.prompt.id]
        by_split[u.split]["spk"].add(u.speaker.name)
        by_split[u.split]["sent"].add(u.prompt.id)
        by_split[u.split]["group"].add(u.speaker.group)
    for key in ("spk", "sent", "group"):
        for a, b in (("train", "test"), ("train", "dev"), ("dev", "test")):
            assert not by_split[a][key] & by_split[b][key], (key, a, b)
    assert all(by_split[s]["spk"] for s in by_split)
    # the two voices sharing the variant 'v0' are in one split
    assert plan.speaker_splits["espeak-ng:en-us+v0"] == plan.speaker_splits["espeak-ng:en-gb+v0"]
    # without a cap every speaker reads every sentence of its split
    sentences = {s: sum(1 for v in plan.sentence_splits.values() if v == s) for s in by_split}
    assert len(plan.utterances) == sum(sentences[plan.speaker_splits[s.name]] for s in speakers)
    assert {u.sid_split for u in plan.utterances} == {"train", "dev", "test"}


def test_plan_is_deterministic_and_order_free():
    speakers = espeak_like_speakers(8)
    prompts = make_prompts(200)  # pools (20 dev/test sentences) larger than a share (50 / 8)
    opts = SpeechCorpusOptions(utterances=50, noise_prob=0.5, reverb_prob=0.5)
    a = plan_speech_corpus(prompts, speakers, seed=1, options=opts, warn=quiet)
    b = plan_speech_corpus(list(reversed(prompts)), list(reversed(speakers)), seed=1, options=opts, warn=quiet)
    c = plan_speech_corpus(prompts, speakers, seed=2, options=opts, warn=quiet)
    assert a.utterances == b.utterances
    assert a.utterances != c.utterances
    assert len(a.utterances) == 50
    per_speaker = np.bincount([sorted(s.name for s in speakers).index(u.speaker.name) for u in a.utterances])
    assert per_speaker.max() - per_speaker.min() <= 1  # equal shares
    assert any(u.snr_db is not None for u in a.utterances) and any(u.snr_db is None for u in a.utterances)
    # a bigger corpus contains the smaller one, with the same settings (so the same audio)
    bigger = plan_speech_corpus(prompts, speakers, seed=1, options=SpeechCorpusOptions(utterances=80, noise_prob=0.5,
                                                                                       reverb_prob=0.5), warn=quiet)
    old = {u.id: u for u in bigger.utterances}
    for u in a.utterances:
        v = old[u.id]
        assert (v.split, v.rate, v.pitch, v.snr_db, v.rt60, v.path) == (u.split, u.rate, u.pitch, u.snr_db, u.rt60, u.path)


def test_plan_sizes_and_rejections():
    speakers = espeak_like_speakers(4)
    prompts = make_prompts(30) + [Prompt("digits", "Call 911 now.")]
    warnings: list[str] = []
    plan = plan_speech_corpus(prompts, speakers, options=SpeechCorpusOptions(utterances=None, sentences=10),
                              warn=warnings.append)
    assert len(plan.sentence_splits) == 10 and "digits" not in plan.sentence_splits
    assert plan.skipped_prompts == ["digits"] and any("1 prompt(s) left out" in w for w in warnings)
    hours = plan_speech_corpus(prompts, speakers, options=SpeechCorpusOptions(hours=0.01), warn=quiet)
    assert 5 <= len(hours.utterances) <= 40
    with pytest.raises(CorpusError, match="either utterances or hours"):
        SpeechCorpusOptions(utterances=10, hours=1.0).checked()
    with pytest.raises(CorpusError, match="speaker_split"):
        SpeechCorpusOptions(speaker_split=(0.0, 0.5, 0.5)).checked()
    with pytest.raises(CorpusError, match="rate_range"):
        SpeechCorpusOptions(rate_range=(1.2, 0.8)).checked()


# --------------------------------------------------------------------------- building with a fake engine


def fake_build(out: Path, prompts: Path, **kw) -> speech.BuildSummary:
    engines = kw.pop("engines", None) or {"fake": SineEngine()}
    options = SpeechCorpusOptions(**{"speaker_list": ("fake:a", "fake:b", "fake:c", "fake:d"), "utterances": None,
                                     "jobs": 2, **kw})
    return SpeechCorpusBuilder(out, prompts_path=prompts, seed=7, options=options, engines=engines, warn=quiet).run()


def test_build_manifest_audio_determinism_and_resume(tmp_path):
    prompts = write_prompts(tmp_path / "p.data", 8)
    aug = {"noise_prob": 0.5, "reverb_prob": 0.5, "rt60_range": (0.1, 0.3)}
    one = fake_build(tmp_path / "one", prompts, **aug)
    rows = read_manifest(one.manifest)
    assert tuple(rows[0]) == MANIFEST_COLUMNS
    assert len(rows) == one.utterances > 0 and not one.failed
    assert {r["split"] for r in rows} <= {"train", "dev", "test"} and {r["domain"] for r in rows} == {"speech"}
    for row in rows:
        wav = one.manifest.parent / row["path"]
        info = sf.info(wav)
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert abs(info.duration - float(row["seconds"])) < 1e-3
        assert row["transcript"] == normalize_transcript(row["text"])
        assert row["speaker"] == f"fake:{row['voice']}" and row["engine"] == "fake"
    assert any(r["snr_db"] for r in rows) and any(r["rt60"] for r in rows)
    pretrain = read_manifest(one.pretrain_manifest)
    assert {r["split"] for r in pretrain} == {"train"} and len(pretrain) == one.utterances_per_split["train"]

    # same seed and options: byte-identical manifest and audio
    two = fake_build(tmp_path / "two", prompts, **aug)
    assert two.manifest.read_bytes() == one.manifest.read_bytes()
    for row in rows:
        assert (tmp_path / "one" / row["path"]).read_bytes() == (tmp_path / "two" / row["path"]).read_bytes()

    # resume: only the deleted file is made again, and it comes back identical
    victim = tmp_path / "two" / rows[1]["path"]
    victim.unlink()
    engine = SineEngine()
    again = fake_build(tmp_path / "two", prompts, engines={"fake": engine}, **aug)
    assert again.synthesised == 1 and engine.calls == 1
    assert victim.read_bytes() == (tmp_path / "one" / rows[1]["path"]).read_bytes()
    assert again.manifest.read_bytes() == one.manifest.read_bytes()

    # other audio settings in the same folder are refused (unless overwrite)
    with pytest.raises(CorpusError, match="noise_prob"):
        fake_build(tmp_path / "two", prompts, **{**aug, "noise_prob": 0.1})
    assert not list((tmp_path / "two").rglob("*.partial"))


def test_failed_utterances_are_reported_and_the_rest_goes_on(tmp_path):
    prompts = write_prompts(tmp_path / "p.data", 6)
    summary = fake_build(tmp_path / "out", prompts, speaker_list=("fake:a", "fake:broken"),
                         speaker_split=(1.0, 0.0, 0.0), sentence_split=(1.0, 0.0, 0.0))
    assert len(summary.failed) == 6 and all(k.startswith("fake_broken/") for k in summary.failed)
    assert "this voice is broken" in next(iter(summary.failed.values()))
    rows = read_manifest(summary.manifest)
    assert len(rows) == 6 and {r["speaker"] for r in rows} == {"fake:a"}


def test_manifest_works_with_the_task_loaders_and_distill(tmp_path):
    from audioembed.distill.data import read_corpus
    from audioembed_downstreams.asr import AsrTask
    from audioembed_downstreams.classify import SpeakerIdTask

    prompts = write_prompts(tmp_path / "p.data", 20)
    summary = fake_build(tmp_path / "out", prompts)
    asr = AsrTask().load(summary.manifest, {})
    assert not asr.problems and len(asr.examples) == summary.utterances
    assert {e.split for e in asr.examples} == {"train", "dev", "test"}
    assert all(e.target == e.target.upper() and e.group.startswith("fake:") for e in asr.examples)
    sid = SpeakerIdTask().load(summary.manifest, {"split_column": "sid_split"})
    assert not sid.problems
    for split in ("train", "test"):
        assert {e.target for e in sid.examples if e.split == split} == {"fake:a", "fake:b", "fake:c", "fake:d"}
    items = read_corpus([summary.manifest], "music", 0.0, warn=quiet)
    assert len(items) == summary.utterances and {it.domain for it in items} == {"speech"}


def test_real_recordings_go_to_pretraining_only(tmp_path):
    root = tmp_path / "data"
    (root / "fsdd" / "recordings").mkdir(parents=True)
    (root / "yesno" / "waves").mkdir(parents=True)
    (root / "pocketsphinx" / "cards").mkdir(parents=True)
    tone = 0.2 * np.sin(np.arange(4000) / 8000 * 2 * np.pi * 300)
    with open(root / "fsdd" / "labels.csv", "w", encoding="utf-8") as f:
        f.write("path,digit,speaker,index,split\n")
        for index in (0, 4, 5, 7):
            sf.write(root / "fsdd" / "recordings" / f"3_bob_{index}.wav", tone, 8000)
            f.write(f"recordings/3_bob_{index}.wav,3,bob,{index},{'test' if index < 5 else 'train'}\n")
    sf.write(root / "yesno" / "waves" / "0_1.wav", tone, 8000)
    (root / "yesno" / "labels.csv").write_text("path,transcript\nwaves/0_1.wav,NO YES\n", encoding="utf-8")
    sf.write(root / "pocketsphinx" / "cards" / "001.wav", tone, 16000)
    (root / "pocketsphinx" / "cards" / "cards.transcription").write_text("<s> ten of clubs  </s> (001)\n")

    prompts = write_prompts(tmp_path / "p.data", 10)
    summary = fake_build(tmp_path / "out", prompts, real_dir=str(root))
    pretrain = read_manifest(summary.pretrain_manifest)
    real = {r["id"]: r for r in pretrain if r["source"] != "tts"}
    assert set(real) == {"real/fsdd/3_bob_5", "real/fsdd/3_bob_7", "real/yesno/0_1", "real/pocketsphinx/cards-001"}
    assert {r["split"] for r in real.values()} == {"pretrain"}
    assert real["real/fsdd/3_bob_5"]["transcript"] == "THREE" and real["real/fsdd/3_bob_5"]["speaker"] == "fsdd:bob"
    assert real["real/pocketsphinx/cards-001"]["transcript"] == "TEN OF CLUBS"
    assert sf.info(summary.pretrain_manifest.parent / real["real/yesno/0_1"]["path"]).samplerate == 16000
    # nothing real in the evaluation manifest
    assert {r["source"] for r in read_manifest(summary.manifest)} == {"tts"}
    assert summary.real == 4


# --------------------------------------------------------------------------- command line


def test_cli_errors_without_engines(monkeypatch, tmp_path):
    prompts = write_prompts(tmp_path / "p.data", 3)
    runner = CliRunner()
    monkeypatch.setattr(shutil, "which", lambda name: None)
    result = runner.invoke(speech_command, ["-o", str(tmp_path / "out"), "--prompts", str(prompts), "-q"])
    assert result.exit_code == 1
    assert "no speech synthesis engine is installed" in result.output and "apt-get install -y espeak-ng" in result.output
    result = runner.invoke(speech_command, ["-o", str(tmp_path / "out"), "--prompts", str(prompts), "--speaker",
                                            "flite:slt", "-q"])
    assert result.exit_code == 1 and "apt-get install -y flite" in result.output
    result = runner.invoke(speech_command, ["-o", "x", "--prompts", str(prompts), "--utterances", "5", "--hours", "1"])
    assert result.exit_code == 2 and "at most one of" in result.output
    result = runner.invoke(speech_command, ["-o", "x", "--prompts", str(prompts), "--rate", "1"])
    assert result.exit_code == 2 and "expected 2 comma-separated numbers" in result.output


# --------------------------------------------------------------------------- espeak-ng (real synthesis)


@needs_espeak
def test_espeak_tiny_corpus_cli_determinism_and_resume(tmp_path):
    prompts = tmp_path / "p.data"
    prompts.write_text(
        '( arctic_a0001 "Author of the danger trail, Philip Steels, etc." )\n'
        '( arctic_a0002 "Not at this particular case, Tom, apologized Whittemore." )\n'
        '( arctic_a0003 "For the twentieth time that evening the two men shook hands." )\n',
        encoding="utf-8",
    )
    args = ["--prompts", str(prompts), "--speaker", "espeak-ng:en-us+f3", "--speaker", "espeak-ng:en+m7",
            "--speaker-split", "1,0,0", "--sentence-split", "1,0,0", "--seed", "5", "-q", "-j", "2"]
    runner = CliRunner()
    result = runner.invoke(speech_command, ["-o", str(tmp_path / "a"), *args])
    assert result.exit_code == 0, result.output
    assert "6 utterances" in result.output
    rows = read_manifest(tmp_path / "a" / "manifest.csv")
    assert tuple(rows[0]) == MANIFEST_COLUMNS and len(rows) == 6
    assert {r["speaker"] for r in rows} == {"espeak-ng:en-us+f3", "espeak-ng:en+m7"}
    assert {r["engine"] for r in rows} == {"espeak-ng"} and {r["split"] for r in rows} == {"train"}
    first = next(r for r in rows if r["sentence"] == "arctic_a0001")
    assert first["transcript"] == "AUTHOR OF THE DANGER TRAIL PHILIP STEELS ET CETERA"
    for row in rows:
        info = sf.info(tmp_path / "a" / row["path"])
        assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
        assert 1.0 < info.duration < 8.0
        assert 0.85 <= float(row["rate"]) <= 1.15 and 0.85 <= float(row["pitch"]) <= 1.15

    result = runner.invoke(speech_command, ["-o", str(tmp_path / "b"), *args])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "a" / "manifest.csv").read_bytes() == (tmp_path / "b" / "manifest.csv").read_bytes()
    for row in rows:
        assert (tmp_path / "a" / row["path"]).read_bytes() == (tmp_path / "b" / row["path"]).read_bytes()

    gone = tmp_path / "b" / rows[2]["path"]
    gone.unlink()
    keep = tmp_path / "b" / rows[0]["path"]
    before = keep.stat().st_mtime_ns
    result = runner.invoke(speech_command, ["-o", str(tmp_path / "b"), *args])
    assert result.exit_code == 0, result.output
    assert "(1 synthesised in this run)" in result.output
    assert gone.read_bytes() == (tmp_path / "a" / rows[2]["path"]).read_bytes()
    assert keep.stat().st_mtime_ns == before


@needs_espeak
def test_espeak_default_splits_keep_test_unseen(tmp_path):
    prompts = write_prompts(tmp_path / "p.data", 10)
    voices = ("espeak-ng:en-us+m1", "espeak-ng:en+f1", "espeak-ng:en-us+f2", "espeak-ng:en+m3")
    manifest = build_speech_corpus(tmp_path / "out", prompts_path=prompts, seed=0, warn=quiet,
                                   options=SpeechCorpusOptions(speaker_list=voices, utterances=8, jobs=2))
    rows = read_manifest(manifest)
    assert len(rows) == 8
    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    assert train and test
    assert not {r["speaker"] for r in train} & {r["speaker"] for r in test}
    assert not {r["sentence"] for r in train} & {r["sentence"] for r in test}


@needs_espeak
def test_espeak_variant_that_would_be_ignored_is_refused():
    # espeak-ng drops "+f1" after the alias en-gb: the speaker would silently be plain en-gb
    with pytest.raises(CorpusError, match="ignores the variant"):
        resolve_speakers(["espeak-ng:en-gb+f1"])
    with pytest.raises(CorpusError, match="no variant 'nonexistent'"):
        resolve_speakers(["espeak-ng:en-us+nonexistent"])
    assert [s.group for s in resolve_speakers(["espeak-ng:en+f1", "espeak-ng:en-us+f1"])] == ["espeak-ng+f1"] * 2
