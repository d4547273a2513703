"""Loaders and metrics of the built-in downstream tasks (package ``audioembed_downstreams``).

Every layout is built on disk from tiny generated audio files, so the loaders run on the
same kind of folders users have; nothing is decoded by the loaders, but the files are real.
"""

from __future__ import annotations

import json
import os
from importlib.metadata import entry_points
from pathlib import Path

import numpy as np
import pytest
from sklearn import metrics as skm

import audio_gen
from audioembed import TaskSpec
from audioembed.metrics import KEY_LABELS
from audioembed.tasks import Task, TaskDataError, TaskKind
from audioembed_downstreams import asr, catalog, classify, emotion, music, sound_events

MODULES = {"classify": classify, "asr": asr, "emotion": emotion, "music": music, "sound_events": sound_events}
#: entry-point name -> the SpecPlugin it names in audioembed_downstreams.catalog
PLUGINS = {name: getattr(catalog, name) for name in MODULES}
TASK_NAMES = {"classify", "speaker_id", "asr", "emotion", "genre", "key", "tagging", "sound_events"}


def wav(path: Path, seed: int = 0) -> Path:
    """A 20 ms tone (format from the suffix)."""
    audio_gen.write_audio(path, audio_gen.tone(200.0 + 50 * seed, 0.02, 8000), 8000)
    return path


def task(name: str) -> Task:
    for plugin in PLUGINS.values():
        for spec in plugin.audioembed_tasks():
            if spec.name == name:
                return spec.build()
    raise KeyError(name)


def load(name: str, data: Path, **options):
    t = task(name)
    return t.load(data, t.resolve_options({k: str(v) for k, v in options.items()}))


def by_id(data):
    return {e.id: e for e in data.examples}


def write_csv(path: Path, header: list[str], rows: list[list[str]], delimiter: str = ",") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [delimiter.join(header)] + [delimiter.join(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- registration


def test_hooks_return_task_specs_that_build_tasks():
    names = []
    for name, plugin in PLUGINS.items():
        for spec in plugin.audioembed_tasks():
            assert isinstance(spec, TaskSpec) and spec.summary
            built = spec.build()
            assert isinstance(built, Task) and built.name == spec.name
            assert type(built).__module__ == MODULES[name].__name__  # the task lives in its plugin's module
            names.append(spec.name)
    assert sorted(names) == sorted(TASK_NAMES)


def test_registry_sees_the_tasks(tmp_path: Path, monkeypatch):
    """Through the installed entry points; until they are installed, through a stand-in
    distribution declaring the same entry points as pyproject.toml."""
    from audioembed.registry import Registry, get_registry

    installed = {ep.value for ep in entry_points(group="audioembed")}
    wanted = {name: f"audioembed_downstreams.catalog:{name}" for name in MODULES}
    if set(wanted.values()) <= installed:
        registry = get_registry()
    else:
        dist = tmp_path / "downstreams_standin-0.0.dist-info"
        dist.mkdir()
        (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: downstreams-standin\nVersion: 0.0\n")
        (dist / "entry_points.txt").write_text(
            "[audioembed]\n" + "".join(f"{name} = {value}\n" for name, value in wanted.items())
        )
        monkeypatch.syspath_prepend(str(tmp_path))
        registry = Registry()
    assert TASK_NAMES <= set(registry.tasks)
    assert not [key for key in registry.failed if key.split(":")[-1] in MODULES]
    assert isinstance(registry.task_spec("tagging").build(), music.TaggingTask)


def test_task_attributes():
    assert task("classify").kind is TaskKind.CLASSIFICATION and task("classify").primary_metric == "accuracy"
    assert task("asr").kind is TaskKind.CTC and task("asr").primary_metric == "wer"
    assert set(task("asr").lower_is_better) == {"wer", "cer"}
    assert task("key").primary_metric == "mirex"
    assert task("tagging").kind is TaskKind.MULTILABEL and task("tagging").primary_metric == "roc_auc"


# --------------------------------------------------------------------------- classify / speaker_id


@pytest.fixture()
def class_manifest(tmp_path: Path) -> Path:
    wav(tmp_path / "audio" / "a.wav")
    wav(tmp_path / "audio" / "b.wav")
    wav(tmp_path / "audio" / "c.wav")
    wav(tmp_path / "audio" / "d.wav")
    wav(tmp_path / "audio" / "e.wav")
    return write_csv(
        tmp_path / "meta" / "m.csv",
        ["path", "label", "speaker", "split", "extra"],
        [
            ["../audio/b.wav", "yes", "s2", "valid", "x"],
            ["../audio/a.wav", "no", "s1", "train", "y"],
            ["../audio/c.wav", "yes", "s1", "EVAL", ""],
            ["../audio/missing.wav", "no", "s3", "train", ""],
            ["../audio/d.wav", "", "s3", "train", ""],
            ["../audio/e.wav", "no", "s3", "holdout", ""],
            ["", "no", "s3", "train", ""],
            ["../audio/a.wav", "yes", "s1", "train", ""],
        ],
    )


def test_classify_manifest(class_manifest: Path):
    data = load("classify", class_manifest)
    ids = [e.id for e in data.examples]
    assert ids == ["../audio/a.wav", "../audio/b.wav", "../audio/c.wav"]
    ex = by_id(data)
    a = ex["../audio/a.wav"]
    assert a.path == str(class_manifest.parent.parent / "audio" / "a.wav") and os.path.isabs(a.path)
    assert (a.target, a.group, a.split) == ("no", "s1", "train")
    assert ex["../audio/b.wav"].split == "dev" and ex["../audio/c.wav"].split == "test"
    assert a.metadata["extra"] == "y"
    assert data.labels == ["no", "yes"]
    problems = "\n".join(data.problems)
    assert len(data.problems) == 5
    assert f"{class_manifest}: line 5: audio file not found" in problems
    assert "line 6: empty 'label'" in problems
    assert "line 7: unknown split 'holdout'" in problems
    assert "line 8: empty path" in problems
    assert "line 9: duplicate id '../audio/a.wav'" in problems


def test_classify_manifest_options_and_jsonl(tmp_path: Path):
    wav(tmp_path / "x.wav")
    wav(tmp_path / "y.wav")
    manifest = tmp_path / "m.jsonl"
    manifest.write_text(
        json.dumps({"id": "u1", "path": "x.wav", "emo": "happy", "spk": "A"}) + "\n"
        + json.dumps({"id": "u2", "path": "y.wav", "emo": "sad", "spk": "B", "split": "test"}) + "\n"
    )
    data = load("classify", manifest, label_column="emo", group_column="spk")
    assert [(e.id, e.target, e.group, e.split) for e in data.examples] == [
        ("u1", "happy", "A", None),
        ("u2", "sad", "B", "test"),
    ]
    # grouping off, split off
    data = load("classify", manifest, label_column="emo", group_column="", split_column="")
    assert all(e.group is None and e.split is None for e in data.examples)
    with pytest.raises(TaskDataError, match="no 'label' column"):
        load("classify", manifest)


def test_classify_tsv_without_optional_columns(tmp_path: Path):
    wav(tmp_path / "x.wav")
    manifest = write_csv(tmp_path / "m.tsv", ["path", "label"], [["x.wav", "a"]], delimiter="\t")
    (e,) = load("classify", manifest).examples
    assert (e.id, e.target, e.group, e.split) == ("x.wav", "a", None, None)


def test_classify_folders(tmp_path: Path):
    wav(tmp_path / "dog" / "1.wav")
    wav(tmp_path / "dog" / "sub" / "2.flac")
    wav(tmp_path / "cat" / "3.wav")
    wav(tmp_path / "loose.wav")
    (tmp_path / "cat" / "notes.txt").write_text("not audio")
    data = load("classify", tmp_path)
    assert [(e.id, e.target) for e in data.examples] == [
        ("cat/3.wav", "cat"),
        ("dog/1.wav", "dog"),
        ("dog/sub/2.flac", "dog"),
    ]
    assert data.labels == ["cat", "dog"]
    assert len(data.problems) == 1 and "loose.wav: not inside a class folder" in data.problems[0]


def test_speaker_id(class_manifest: Path):
    data = load("speaker_id", class_manifest)
    assert {e.id: e.target for e in data.examples} == {
        "../audio/a.wav": "s1",
        "../audio/b.wav": "s2",
        "../audio/c.wav": "s1",
        "../audio/d.wav": "s3",
    }
    assert all(e.group is None for e in data.examples)
    assert data.labels == ["s1", "s2", "s3"]
    with pytest.raises(TaskDataError, match="no option group_column"):
        task("speaker_id").resolve_options({"group_column": "speaker"})


def test_no_usable_example_and_missing_data(tmp_path: Path):
    manifest = write_csv(tmp_path / "m.csv", ["path", "label"], [["gone.wav", "a"]])
    with pytest.raises(TaskDataError, match=f"{manifest}: no usable example.*audio file not found"):
        load("classify", manifest)
    with pytest.raises(TaskDataError, match="no such file or directory"):
        load("classify", tmp_path / "nope")
    with pytest.raises(TaskDataError, match="no option bogus"):
        task("classify").resolve_options({"bogus": "1"})
    (tmp_path / "bad.csv").write_text("file,label\nx.wav,a\n")
    with pytest.raises(TaskDataError, match="no 'path' column"):
        load("classify", tmp_path / "bad.csv")


def test_classify_metrics():
    t = task("classify")
    m = t.metrics(["a", "a", "b", "b"], ["a", "b", "b", "b"], None, ["a", "b", "c"])
    assert set(m) == {"accuracy", "macro_f1"}
    assert m["accuracy"] == pytest.approx(0.75)
    # F1 a = 2/3, b = 0.8; "c" absent from targets and predictions is not averaged
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8) / 2)


# --------------------------------------------------------------------------- asr


def librispeech(root: Path) -> Path:
    def chapter(subset: str, spk: str, chap: str, lines: dict[str, str], skip_audio=()):
        folder = root / subset / spk / chap
        folder.mkdir(parents=True)
        text = "".join(f"{utt} {words}\n" if words is not None else f"{utt}\n" for utt, words in lines.items())
        (folder / f"{spk}-{chap}.trans.txt").write_text(text)
        for i, utt in enumerate(lines):
            if utt not in skip_audio:
                wav(folder / f"{utt}.flac", seed=i)

    chapter("train-clean-100", "19", "198", {"19-198-0000": "HELLO  WORLD", "19-198-0001": "Second  one ", "19-198-0002": "GONE"}, skip_audio={"19-198-0002"})
    chapter("dev-clean", "84", "121", {"84-121-0000": "DEV LINE", "84-121-0001": None})
    chapter("test-clean", "61", "70", {"61-70-0000": "TEST LINE"})
    return root


def test_asr_librispeech(tmp_path: Path):
    root = librispeech(tmp_path / "LibriSpeech")
    data = load("asr", root)
    ex = by_id(data)
    assert list(ex) == [
        "dev-clean/84/121/84-121-0000.flac",
        "test-clean/61/70/61-70-0000.flac",
        "train-clean-100/19/198/19-198-0000.flac",
        "train-clean-100/19/198/19-198-0001.flac",
    ]
    first = ex["train-clean-100/19/198/19-198-0000.flac"]
    assert first.target == "HELLO WORLD" and first.group == "19" and first.split == "train"
    assert first.path == str(root / "train-clean-100/19/198/19-198-0000.flac")
    assert ex["train-clean-100/19/198/19-198-0001.flac"].target == "Second one"  # case kept
    assert ex["dev-clean/84/121/84-121-0000.flac"].split == "dev"
    assert ex["test-clean/61/70/61-70-0000.flac"].split == "test"
    assert data.labels is None
    problems = "\n".join(data.problems)
    assert len(data.problems) == 2
    assert "84-121.trans.txt: line 2: empty transcript for 84-121-0001" in problems
    assert "19-198.trans.txt: line 3: audio file not found" in problems and "19-198-0002.flac" in problems
    # a single subset: no split from folders above --data
    sub = load("asr", root / "dev-clean")
    assert [(e.id, e.split) for e in sub.examples] == [("84/121/84-121-0000.flac", None)]


def test_asr_manifest_and_errors(tmp_path: Path):
    wav(tmp_path / "a.wav")
    wav(tmp_path / "b.wav")
    manifest = write_csv(
        tmp_path / "m.csv",
        ["path", "text", "speaker"],
        [["a.wav", " Hi   there ", "s1"], ["b.wav", "  ", "s2"]],
    )
    data = load("asr", manifest, text_column="text")
    assert [(e.id, e.target, e.group) for e in data.examples] == [("a.wav", "Hi there", "s1")]
    assert len(data.problems) == 1 and "line 3: empty 'text'" in data.problems[0]
    with pytest.raises(TaskDataError, match="no 'transcript' column"):
        load("asr", manifest)
    wav(tmp_path / "folder" / "x.wav")
    with pytest.raises(TaskDataError, match="trans.txt"):
        load("asr", tmp_path / "folder")


def test_asr_metrics():
    t = task("asr")
    m = t.metrics(["HELLO WORLD", "good  day"], ["hello word", "good day"], None, None)
    assert set(m) == {"wer", "cer"}
    assert m["wer"] == pytest.approx(1 / 4)
    assert m["cer"] == pytest.approx(1 / 19)


# --------------------------------------------------------------------------- emotion


def test_emotion_emodb(tmp_path: Path):
    for name in ["03a01Fa.wav", "03a01Wa.wav", "08b02Nb.wav", "10a05Xa.wav"]:
        wav(tmp_path / "wav" / name)
    data = load("emotion", tmp_path)
    assert [(e.id, e.target, e.group) for e in data.examples] == [
        ("wav/03a01Fa.wav", "happiness", "03"),
        ("wav/03a01Wa.wav", "anger", "03"),
        ("wav/08b02Nb.wav", "neutral", "08"),
    ]
    assert data.labels == ["anger", "happiness", "neutral"]
    assert len(data.problems) == 1 and "unknown EmoDB emotion letter 'X'" in data.problems[0]
    assert all(e.split is None for e in data.examples)


def test_emotion_ravdess_and_cremad(tmp_path: Path):
    for name in ["03-01-06-01-02-01-12.wav", "03-02-01-01-01-02-12.wav", "03-01-08-02-01-01-01.wav"]:
        wav(tmp_path / "rav" / f"Actor_{name[-6:-4]}" / name)
    data = load("emotion", tmp_path / "rav")
    assert {e.id.split("/")[-1]: (e.target, e.group) for e in data.examples} == {
        "03-01-06-01-02-01-12.wav": ("fearful", "12"),
        "03-02-01-01-01-02-12.wav": ("neutral", "12"),
        "03-01-08-02-01-01-01.wav": ("surprised", "01"),
    }
    for name in ["1001_DFA_ANG_XX.wav", "1002_IEO_HAP_HI.wav", "1002_IEO_SAD_LO.wav"]:
        wav(tmp_path / "crema" / name)
    data = load("emotion", tmp_path / "crema")
    assert [(e.id, e.target, e.group) for e in data.examples] == [
        ("1001_DFA_ANG_XX.wav", "anger", "1001"),
        ("1002_IEO_HAP_HI.wav", "happy", "1002"),
        ("1002_IEO_SAD_LO.wav", "sad", "1002"),
    ]


def test_emotion_folders_manifest_and_detection(tmp_path: Path):
    wav(tmp_path / "f" / "angry" / "x.wav")
    wav(tmp_path / "f" / "calm" / "y.wav")
    data = load("emotion", tmp_path / "f")
    assert [(e.id, e.target, e.group) for e in data.examples] == [("angry/x.wav", "angry", None), ("calm/y.wav", "calm", None)]

    # mostly EmoDB plus a stray file: refused in auto, the stray one reported when named
    for name in ["03a01Fa.wav", "03a01Wa.wav", "08b02Nb.wav"]:
        wav(tmp_path / "mixed" / "wav" / name)
    wav(tmp_path / "mixed" / "wav" / "readme.wav")
    with pytest.raises(TaskDataError, match="3 of 4 audio files are named like EmoDB.*layout=emodb"):
        load("emotion", tmp_path / "mixed")
    data = load("emotion", tmp_path / "mixed", layout="emodb")
    assert len(data.examples) == 3
    assert len(data.problems) == 1 and "readme.wav: not named like EmoDB" in data.problems[0]

    wav(tmp_path / "loose" / "a.wav")
    wav(tmp_path / "loose" / "b" / "c.wav")
    with pytest.raises(TaskDataError, match="cannot tell the layout"):
        load("emotion", tmp_path / "loose")
    with pytest.raises(TaskDataError, match="layout: expected one of"):
        load("emotion", tmp_path / "f", layout="iemocap")
    with pytest.raises(TaskDataError, match="needs a manifest file"):
        load("emotion", tmp_path / "f", layout="manifest")

    manifest = write_csv(
        tmp_path / "m.csv", ["path", "label", "speaker", "split"],
        [["f/angry/x.wav", "angry", "A", "train"], ["f/calm/y.wav", "calm", "B", "test"], ["f/none.wav", "sad", "C", ""]],
    )
    data = load("emotion", manifest)
    assert [(e.id, e.target, e.group, e.split) for e in data.examples] == [
        ("f/angry/x.wav", "angry", "A", "train"),
        ("f/calm/y.wav", "calm", "B", "test"),
    ]
    assert len(data.problems) == 1 and "audio file not found" in data.problems[0]
    with pytest.raises(TaskDataError, match="layout emodb needs a folder"):
        load("emotion", manifest, layout="emodb")


def test_emotion_metrics():
    t = task("emotion")
    targets = ["anger", "anger", "anger", "sad"]
    preds = ["anger", "anger", "sad", "sad"]
    m = t.metrics(targets, preds, None, ["anger", "neutral", "sad"])
    assert set(m) == {"accuracy", "uar"}
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["uar"] == pytest.approx((2 / 3 + 1.0) / 2)  # "neutral" absent: not averaged


# --------------------------------------------------------------------------- genre


def test_genre_gtzan_and_manifest(tmp_path: Path):
    wav(tmp_path / "genres" / "blues" / "blues.00000.wav")
    wav(tmp_path / "genres" / "rock" / "rock.00001.wav")
    wav(tmp_path / "readme.wav")
    data = load("genre", tmp_path)
    assert [(e.id, e.target) for e in data.examples] == [
        ("genres/blues/blues.00000.wav", "blues"),
        ("genres/rock/rock.00001.wav", "rock"),
    ]
    assert data.labels == ["blues", "rock"]
    assert len(data.problems) == 1 and "readme.wav: not inside a genre folder" in data.problems[0]

    manifest = write_csv(
        tmp_path / "m.csv", ["path", "genre", "artist"],
        [["genres/blues/blues.00000.wav", "blues", "X"], ["genres/rock/rock.00001.wav", "", "Y"]],
    )
    data = load("genre", manifest, label_column="genre")
    assert [(e.id, e.target, e.group) for e in data.examples] == [("genres/blues/blues.00000.wav", "blues", "X")]
    assert len(data.problems) == 1 and "empty 'genre'" in data.problems[0]


def test_genre_metrics():
    m = task("genre").metrics(["rock", "pop"], ["rock", "rock"], None, ["pop", "rock"])
    assert m == pytest.approx({"accuracy": 0.5, "macro_f1": (0.0 + 2 / 3) / 2})


# --------------------------------------------------------------------------- key


def test_key_giantsteps(tmp_path: Path):
    keys = {"1.LOFI": "C minor\n", "2.LOFI": "  Eb minor  ", "3.LOFI": "garbage", "5.LOFI": "A major"}
    for stem, text in keys.items():
        (tmp_path / "annotations" / "key").mkdir(parents=True, exist_ok=True)
        (tmp_path / "annotations" / "key" / f"{stem}.key").write_text(text)
    for i, stem in enumerate(["1.LOFI", "2.LOFI", "3.LOFI", "4.LOFI"]):
        wav(tmp_path / "audio" / f"{stem}.mp3", seed=i)
    data = load("key", tmp_path)
    assert [(e.id, e.target) for e in data.examples] == [
        ("audio/1.LOFI.mp3", "C minor"),
        ("audio/2.LOFI.mp3", "D# minor"),
    ]
    assert data.labels == list(KEY_LABELS) and len(data.labels) == 24
    problems = "\n".join(data.problems)
    assert len(data.problems) == 3
    assert "3.LOFI.key: unrecognised key 'garbage'" in problems
    assert "4.LOFI.mp3: no 4.LOFI.key annotation" in problems
    assert "5.LOFI.key: no audio file named 5.LOFI" in problems


def test_key_manifest(tmp_path: Path):
    wav(tmp_path / "a.wav")
    wav(tmp_path / "b.wav")
    manifest = write_csv(tmp_path / "m.csv", ["path", "key", "tonality"], [["a.wav", "Bb major", "Am"], ["b.wav", "H dur", "C"]])
    data = load("key", manifest)
    assert [(e.id, e.target) for e in data.examples] == [("a.wav", "A# major")]
    assert len(data.problems) == 1 and "line 3: unrecognised key 'H dur'" in data.problems[0]
    data = load("key", manifest, label_column="tonality")
    assert [e.target for e in data.examples] == ["A minor", "C major"]
    write_csv(tmp_path / "bad.csv", ["path", "key"], [["a.wav", "X"]])
    with pytest.raises(TaskDataError, match="no usable example"):
        load("key", tmp_path / "bad.csv")


def test_key_metrics():
    t = task("key")
    refs = ["C major", "C major", "A minor", "D# minor"]
    ests = ["C major", "G major", "C major", "D# minor"]
    m = t.metrics(refs, ests, None, list(KEY_LABELS))
    assert set(m) == {"mirex", "accuracy"}
    assert m["accuracy"] == pytest.approx(0.5)
    assert m["mirex"] == pytest.approx((1.0 + 0.5 + 0.3 + 1.0) / 4)


# --------------------------------------------------------------------------- tagging


def mtat(root: Path, audio_sub: str = "mp3") -> Path:
    header = ["clip_id", "rock", "guitar", "piano", "quiet", "mp3_path"]
    rows = [
        ["2", "1", "1", "0", "0", "f/artist-album-01-song_a-0-29.mp3"],
        ["6", "1", "0", "0", "1", "f/artist-album-01-song_a-30-59.mp3"],
        ["10", "0", "1", "1", "0", "0/other-album-02-song_b-0-29.mp3"],
        ["11", "0", "0", "0", "1", "0/other-album-02-song_b-30-59.mp3"],  # no top-2 tag
        ["12", "1", "0", "0", "0", "0/missing-00-x-0-29.mp3"],  # audio missing
        ["13", "1", "2", "0", "0", "0/bad-00-x-0-29.mp3"],  # bad value
    ]
    quoted = [[f'"{v}"' for v in r] for r in rows]
    csv_path = write_csv(root / "annotations_final.csv", [f'"{h}"' for h in header], quoted, delimiter="\t")
    for i, r in enumerate(rows[:4] + rows[5:]):
        wav(root / audio_sub / r[-1], seed=i)
    return csv_path


def test_tagging_mtat(tmp_path: Path):
    csv_path = mtat(tmp_path / "mtat")
    data = load("tagging", tmp_path / "mtat", top_n=2)
    # counts over valid rows: rock 3, guitar 2, quiet 2, piano 1 -> ties by name
    assert data.labels == ["rock", "guitar"]
    assert [(e.id, e.target, e.group) for e in data.examples] == [
        ("0/other-album-02-song_b-0-29.mp3", ("guitar",), "other-album-02-song_b"),
        ("f/artist-album-01-song_a-0-29.mp3", ("rock", "guitar"), "artist-album-01-song_a"),
        ("f/artist-album-01-song_a-30-59.mp3", ("rock",), "artist-album-01-song_a"),
    ]
    assert data.examples[1].path == str(tmp_path / "mtat" / "mp3" / "f" / "artist-album-01-song_a-0-29.mp3")
    assert data.examples[1].metadata == {"clip_id": "2"}
    assert data.problems == [
        f"{csv_path}: line 7: tag 'guitar' is '2', not 0 or 1",
        f"{csv_path}: line 6: audio file not found: {tmp_path / 'mtat' / 'mp3' / '0' / 'missing-00-x-0-29.mp3'}",
        f"{csv_path}: 1 clip(s) have none of the top-2 tags; skipped",
    ]
    # the csv itself, default top_n keeps every tag with a positive
    data = load("tagging", csv_path)
    assert data.labels == ["rock", "guitar", "quiet", "piano"] and len(data.examples) == 4


def test_tagging_audio_root_and_options(tmp_path: Path):
    csv_path = mtat(tmp_path / "ann", audio_sub="../audio_elsewhere")
    data = load("tagging", csv_path, audio_root=str(tmp_path / "audio_elsewhere"))
    assert len(data.examples) == 4
    with pytest.raises(TaskDataError, match="no usable example"):
        load("tagging", csv_path)  # neither the csv folder nor mp3/ holds the audio
    with pytest.raises(TaskDataError, match="audio_root: .*no such folder"):
        load("tagging", csv_path, audio_root=str(tmp_path / "nope"))
    with pytest.raises(TaskDataError, match="top_n must be >= 0"):
        load("tagging", csv_path, top_n=-1)
    with pytest.raises(TaskDataError, match="top_n: expected int"):
        task("tagging").resolve_options({"top_n": "many"})
    with pytest.raises(TaskDataError, match="no annotations_final.csv"):
        load("tagging", tmp_path / "audio_elsewhere")


def test_tagging_manifest(tmp_path: Path):
    for name in "abcd":
        wav(tmp_path / f"{name}.wav")
    manifest = write_csv(
        tmp_path / "m.csv", ["path", "labels"],
        [["a.wav", "rock| guitar"], ["b.wav", "rock"], ["c.wav", "jazz"], ["d.wav", " | "], ["gone.wav", "rock"]],
    )
    data = load("tagging", manifest, tag_column="labels", tag_separator="|", top_n=2)
    assert data.labels == ["rock", "guitar"]  # rock 2; guitar and jazz 1, tie by name
    assert [(e.id, e.target) for e in data.examples] == [("a.wav", ("rock", "guitar")), ("b.wav", ("rock",))]
    problems = "\n".join(data.problems)
    assert "line 5: no tag in '|'" in problems
    assert "line 6: audio file not found" in problems
    assert "1 row(s) have none of the top-2 tags" in problems
    assert len(data.problems) == 3


def test_tagging_metrics():
    t = task("tagging")
    labels = ["rock", "guitar", "piano"]
    targets = [("rock",), ("rock", "guitar"), ("guitar",), ()]
    scores = np.array([[0.9, 0.2, 0.1], [0.6, 0.7, 0.3], [0.4, 0.8, 0.2], [0.5, 0.1, 0.4]])
    preds = [("rock",), ("rock", "guitar"), ("guitar",), ("rock",)]
    m = t.metrics(targets, preds, scores, labels)
    assert set(m) == {"roc_auc", "pr_auc"}
    y = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]])
    # piano has no positive: skipped by the macro average
    want_auc = np.mean([skm.roc_auc_score(y[:, c], scores[:, c]) for c in (0, 1)])
    want_ap = np.mean([skm.average_precision_score(y[:, c], scores[:, c]) for c in (0, 1)])
    assert m["roc_auc"] == pytest.approx(want_auc)
    assert m["pr_auc"] == pytest.approx(want_ap)
    with pytest.raises(ValueError):
        t.metrics([("rock",)], [("rock",)], np.array([[0.5, 0.5, 0.5]]), labels)  # nothing scorable


# --------------------------------------------------------------------------- sound_events (official folds)


def test_esc50_loader_sets_official_folds_and_esc10_subset(tmp_path: Path):
    root = tmp_path / "ESC-50"
    rows = []
    for i in range(6):
        name = f"{i % 3 + 1}-{100 + i}-A-0.wav"
        wav(root / "audio" / name, seed=i)
        rows.append([name, str(i % 3 + 1), str(i % 2), "dog" if i % 2 == 0 else "rain", "True" if i < 4 else "False",
                     str(100 + i // 2), "A"])
    rows.append(["missing.wav", "1", "0", "dog", "True", "999", "A"])
    write_csv(root / "meta" / "esc50.csv", ["filename", "fold", "target", "category", "esc10", "src_file", "take"], rows)
    data = load("sound_events", root)
    assert len(data.examples) == 6 and data.fold_column == "fold of esc50.csv"
    assert {e.fold for e in data.examples} == {"1", "2", "3"}
    assert by_id(data)["audio/1-100-A-0.wav"].group == "100"
    assert any("missing.wav" in p for p in data.problems)
    assert len(load("sound_events", root / "meta" / "esc50.csv", subset="esc10").examples) == 4
    with pytest.raises(TaskDataError, match="subset"):
        load("sound_events", root, subset="esc99")


def test_urbansound8k_loader_reads_fold_folders(tmp_path: Path):
    root = tmp_path / "UrbanSound8K"
    rows = []
    for i in range(4):
        fold = str(i % 2 + 1)
        name = f"{200 + i}-0-0-{i}.wav"
        wav(root / "audio" / f"fold{fold}" / name, seed=i)
        rows.append([name, str(200 + i), "0", "1", "1", fold, "3", "dog_bark" if i < 2 else "siren"])
    write_csv(root / "metadata" / "UrbanSound8K.csv",
              ["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"], rows)
    data = load("sound_events", root)
    assert [e.fold for e in data.examples] == ["1", "1", "2", "2"]  # sorted by id
    assert data.examples[0].id == "audio/fold1/200-0-0-0.wav" and data.examples[0].group == "200"
    with pytest.raises(TaskDataError, match="--fold-column"):
        load("sound_events", write_csv(tmp_path / "other.csv", ["path", "label"], [["a.wav", "x"]]))
