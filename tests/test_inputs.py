"""Folders, manifests and files become an explicit, collision-free list of items."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from audio_gen import tone, write_audio
from audioembed.inputs import InputError, InputItem, collect_inputs, shard_items


def _touch_audio(path) -> str:
    return write_audio(path, tone(440.0, 0.05, 8000), 8000)


@pytest.fixture
def tree(tmp_path):
    """``data/`` with nested audio, non-audio files and hidden droppings."""
    root = tmp_path / "data"
    for rel in ["b.wav", "a.flac", "spk1/utt3.wav", "spk1/utt1.WAV", "spk2/deep/x.ogg"]:
        _touch_audio(root / rel)
    (root / "notes.txt").write_text("not audio")
    (root / "spk1" / "list.csv").write_text("path\nutt1.WAV\n")  # manifests inside are not audio
    _touch_audio(root / "._b.wav")  # macOS resource fork
    _touch_audio(root / ".cache" / "z.wav")
    return root


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """Run from an unrelated cwd, so resolving against it would be caught."""
    d = tmp_path / "elsewhere"
    d.mkdir()
    monkeypatch.chdir(d)
    return d


def test_directory_is_searched_recursively(tree):
    items = collect_inputs([tree])
    assert [i.id for i in items] == [
        "a.flac",
        "b.wav",
        "spk1/utt1.WAV",
        "spk1/utt3.wav",
        "spk2/deep/x.ogg",
    ]
    for item in items:
        assert os.path.isabs(item.path)
        assert item.path == os.path.join(str(tree), *item.id.split("/"))
        assert item.metadata == {}
    assert collect_inputs([str(tree)]) == items  # str and PathLike alike


def test_directory_extensions_filter(tree):
    assert [i.id for i in collect_inputs([tree], extensions=[".ogg"])] == ["spk2/deep/x.ogg"]
    assert [i.id for i in collect_inputs([tree], extensions=["FLAC"])] == ["a.flac"]


def test_relative_directory_argument(tree, monkeypatch):
    monkeypatch.chdir(tree.parent)
    items = collect_inputs(["data"])
    assert items[0] == InputItem("a.flac", str(tree / "a.flac"))


def test_single_audio_file(tree):
    items = collect_inputs([tree / "spk1" / "utt3.wav"])
    assert items == [InputItem("utt3.wav", str(tree / "spk1" / "utt3.wav"))]
    assert collect_inputs(tree / "b.wav")[0].id == "b.wav"  # a lone path, not a sequence


def _csv_manifest(tmp_path, delimiter: str, suffix: str):
    man_dir = tmp_path / "manifests"
    audio = man_dir / "audio"
    _touch_audio(audio / "one.wav")
    _touch_audio(audio / "two.wav")
    absolute = _touch_audio(tmp_path / "abs" / "three.wav")
    rows = [
        ["id", "path", "speaker", "label"],
        ["u1", "audio/one.wav", "spk1", "yes"],
        ["", "audio/two.wav", "spk2", "no"],  # empty id falls back to the path
        ["u3", absolute, "spk1", ""],
        ["u4", "audio/missing.wav", "spk3", "maybe"],
    ]
    p = man_dir / f"list{suffix}"
    p.write_text("\n".join(delimiter.join(r) for r in rows) + "\n")
    return p, man_dir, absolute


@pytest.mark.parametrize("delimiter,suffix", [(",", ".csv"), ("\t", ".tsv")])
def test_csv_tsv_manifest(tmp_path, elsewhere, delimiter, suffix):
    manifest, man_dir, absolute = _csv_manifest(tmp_path, delimiter, suffix)
    # also refer to the manifest relatively from the unrelated cwd
    arg = os.path.relpath(manifest, elsewhere)
    items = collect_inputs([arg])
    assert [i.id for i in items] == ["u1", "audio/two.wav", "u3", "u4"]
    assert items[0].path == str(man_dir / "audio" / "one.wav")
    assert items[1].path == str(man_dir / "audio" / "two.wav")
    assert items[2].path == absolute
    # rows whose audio is missing are kept; the extractor reports them per file
    assert items[3].path == str(man_dir / "audio" / "missing.wav")
    assert not os.path.exists(items[3].path)
    assert items[0].metadata == {"speaker": "spk1", "label": "yes"}
    assert items[2].metadata == {"speaker": "spk1", "label": ""}
    assert os.getcwd() == str(elsewhere) != str(man_dir)


def test_jsonl_manifest(tmp_path, elsewhere):
    man_dir = tmp_path / "m"
    _touch_audio(man_dir / "sub" / "a.wav")
    lines = [
        {"path": "sub/a.wav", "lang": "fr", "age": 31, "ok": True, "x": None, "tags": ["a"]},
        {"path": "../m/sub/a.wav", "id": "again"},
        {"path": "sub/b.wav", "id": 7},
    ]
    p = man_dir / "list.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in lines[:2]) + "\n\n" + json.dumps(lines[2]) + "\n")
    items = collect_inputs([p])
    assert [i.id for i in items] == ["sub/a.wav", "again", "7"]
    assert items[0].path == items[1].path == str(man_dir / "sub" / "a.wav")
    assert items[2].path == str(man_dir / "sub" / "b.wav")
    assert items[0].metadata == {"lang": "fr", "age": "31", "ok": "true", "x": "", "tags": '["a"]'}
    assert items[1].metadata == {}


def test_csv_with_bom_quotes_and_no_id(tmp_path):
    _touch_audio(tmp_path / "a b.wav")
    p = tmp_path / "l.csv"
    p.write_text('\ufeffpath,text\n"a b.wav","hello, world"\n', encoding="utf-8")
    [item] = collect_inputs([p])
    assert item.id == "a b.wav"
    assert item.path == str(tmp_path / "a b.wav")
    assert item.metadata == {"text": "hello, world"}


def test_order_follows_inputs(tree, tmp_path):
    extra = _touch_audio(tmp_path / "solo" / "zz.wav")
    man = tmp_path / "m.csv"
    man.write_text("path,id\nsolo/zz.wav,m1\n")
    items = collect_inputs([extra, tree, man])
    assert items[0].id == "zz.wav"
    assert [i.id for i in items[1:-1]] == sorted(i.id for i in items[1:-1])
    assert items[-1].id == "m1"


# --- errors ------------------------------------------------------------------------------


def test_missing_argument(tmp_path):
    with pytest.raises(InputError, match="nope.wav"):
        collect_inputs([tmp_path / "nope.wav"])


def test_unknown_file_type(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("hi")
    with pytest.raises(InputError, match="x.txt"):
        collect_inputs([p])


def test_nothing_found(tmp_path):
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "readme.md").write_text("")
    with pytest.raises(InputError, match="no audio"):
        collect_inputs([tmp_path / "d"])
    with pytest.raises(InputError):
        collect_inputs([])


def test_duplicate_ids(tmp_path):
    a = _touch_audio(tmp_path / "x" / "utt.wav")
    b = _touch_audio(tmp_path / "y" / "utt.wav")
    with pytest.raises(InputError) as info:
        collect_inputs([a, b])
    msg = str(info.value)
    assert a in msg and b in msg and "'id'" in msg and "manifest" in msg
    # two folders with the same layout collide too
    with pytest.raises(InputError, match="duplicate id 'utt.wav'"):
        collect_inputs([tmp_path / "x", tmp_path / "y"])
    # a manifest with ids is the way out
    man = tmp_path / "m.tsv"
    man.write_text("path\tid\nx/utt.wav\tx_utt\ny/utt.wav\ty_utt\n")
    assert [i.id for i in collect_inputs([man])] == ["x_utt", "y_utt"]


def test_duplicate_ids_within_manifest(tmp_path):
    man = tmp_path / "m.csv"
    man.write_text("path,id\na.wav,same\nb.wav,same\n")
    with pytest.raises(InputError, match="duplicate id 'same'"):
        collect_inputs([man])


def test_manifest_without_path_column(tmp_path):
    man = tmp_path / "m.csv"
    man.write_text("file,id\na.wav,1\n")
    with pytest.raises(InputError, match=r"m\.csv.*'path'"):
        collect_inputs([man])
    j = tmp_path / "m.jsonl"
    j.write_text('{"path": "a.wav"}\n{"file": "b.wav"}\n')
    with pytest.raises(InputError, match=r"m\.jsonl: line 2.*'path'"):
        collect_inputs([j])


def test_malformed_jsonl_names_the_line(tmp_path):
    j = tmp_path / "bad.jsonl"
    j.write_text('{"path": "a.wav"}\n\n{"path": "b.wav",\n')
    with pytest.raises(InputError, match=r"bad\.jsonl: line 3: malformed JSON"):
        collect_inputs([j])
    j.write_text('["a.wav"]\n')
    with pytest.raises(InputError, match=r"line 1: expected a JSON object"):
        collect_inputs([j])


def test_empty_path_names_file_and_row(tmp_path):
    man = tmp_path / "m.csv"
    man.write_text("path,id\na.wav,1\n  ,2\n")
    with pytest.raises(InputError, match=r"m\.csv: line 3: empty path"):
        collect_inputs([man])
    j = tmp_path / "m.jsonl"
    j.write_text('{"path": null}\n')
    with pytest.raises(InputError, match=r"m\.jsonl: line 1: empty path"):
        collect_inputs([j])


def test_csv_row_with_too_many_fields(tmp_path):
    man = tmp_path / "m.csv"
    man.write_text("path,id\na.wav,1,extra\n")
    with pytest.raises(InputError, match=r"line 2"):
        collect_inputs([man])


def test_empty_manifest(tmp_path):
    man = tmp_path / "m.csv"
    man.write_text("")
    with pytest.raises(InputError, match=r"m\.csv"):
        collect_inputs([man])
    man.write_text("path,id\n")
    with pytest.raises(InputError, match="no audio"):
        collect_inputs([man])


# --- ids the feature store cannot hold ------------------------------------------------------


def test_unstorable_ids_name_the_row_and_the_rest_goes_on(tmp_path):
    _touch_audio(tmp_path / "a.wav")
    _touch_audio(tmp_path / "b.wav")
    man = tmp_path / "m.csv"
    man.write_text("path,id\na.wav,good\nb.wav,bad\x00id\n")
    with pytest.raises(InputError, match=r"m\.csv: line 3: id 'bad\\x00id' contains a NUL character"):
        collect_inputs([man])
    rejected = []
    items = collect_inputs([man], rejected=rejected)
    assert [i.id for i in items] == ["good"]
    assert rejected == [("bad\x00id", f"{man}: line 3: id 'bad\\x00id' contains a NUL character, which HDF5 cannot store")]
    j = tmp_path / "m.jsonl"
    j.write_text(json.dumps({"path": "a.wav", "id": "x\u0000"}) + "\n")
    rejected = []
    assert collect_inputs([j], rejected=rejected) == []
    assert "line 1" in rejected[0][1]


def test_file_name_that_is_not_utf8(tmp_path):
    root = tmp_path / "d"
    _touch_audio(root / "ok.wav")
    bad = os.path.join(os.fsencode(root), b"caf\xe9.wav")
    with open(os.path.join(os.fsencode(root), b"ok.wav"), "rb") as src, open(bad, "wb") as dst:
        dst.write(src.read())
    rejected = []
    items = collect_inputs([root], rejected=rejected)
    assert [i.id for i in items] == ["ok.wav"]
    (uid, message), = rejected
    assert "caf\\xe9.wav" in message and "not valid UTF-8" in message
    message.encode("utf-8")  # the message itself prints anywhere


# --- sharding ----------------------------------------------------------------------------


def _items(n: int, seed: int) -> list[InputItem]:
    rng = np.random.default_rng(seed)
    ids = [f"utt{int(v):06d}" for v in rng.permutation(n)]
    return [InputItem(i, f"/data/{i}.wav") for i in ids]


@pytest.mark.parametrize("n,count", [(0, 1), (1, 3), (10, 1), (10, 3), (37, 4), (5, 8)])
def test_shards_are_disjoint_complete_and_deterministic(n, count):
    items = _items(n, seed=n)
    shards = [shard_items(items, k, count) for k in range(count)]
    ids = [i.id for s in shards for i in s]
    assert sorted(ids) == sorted(i.id for i in items)  # complete
    assert len(ids) == len(set(ids))  # disjoint
    assert max(len(s) for s in shards) - min(len(s) for s in shards) <= 1  # balanced
    # independent of input order
    reordered = list(reversed(items))
    assert [shard_items(reordered, k, count) for k in range(count)] == shards
    # position rule on the id-sorted list
    ordered = sorted(items, key=lambda i: i.id)
    for k, shard in enumerate(shards):
        assert shard == [it for pos, it in enumerate(ordered) if pos % count == k]


def test_shard_arguments():
    items = _items(4, seed=0)
    assert shard_items(items, np.int64(1), np.int64(2)) == shard_items(items, 1, 2)
    for index, count in [(2, 2), (-1, 2), (0, 0), (0, -1), (1.0, 2), (True, 2)]:
        with pytest.raises(ValueError):
            shard_items(items, index, count)


def test_items_are_hashable_and_compare_without_metadata():
    a = InputItem("x", "/x.wav", {"k": "v"})
    b = InputItem("x", "/x.wav")
    assert a == b and hash(a) == hash(b)
    assert b.metadata == {} and b.metadata is not InputItem("y", "/y").metadata
