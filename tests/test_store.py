"""Feature store internals: keys, locking, aborted utterances, recovery of sealed parts."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from audioembed.messages import printable
from audioembed.store import (
    UTTERANCES,
    FeatureReader,
    FeatureWriter,
    StoreError,
    decode_key,
    encode_key,
    parts_dir,
)

ATTRS = {
    "format_version": 1, "upstream": "x", "weights_hash": "abc", "sample_rate": 16000, "hop_length": 160,
    "layers": np.array([0, 2]), "pooling": "none", "dtype": "float32", "window_samples": 16000,
    "context_samples": 0,
}


def _write(writer, uid, frames=3):
    w = writer.begin(uid, [0, 2], 4)
    w.append({0: np.ones((frames, 4)), 2: np.full((frames, 4), 2.0)})
    writer.commit({"path": f"/{uid}", "num_samples": 10, "duration": 0.1, "metadata": "{}"})


@pytest.mark.parametrize("uid", ["a/b.wav", "100%.wav", ".", "..", "x y/ü.flac", "a%2Fb"])
def test_keys_round_trip(uid):
    key = encode_key(uid)
    assert "/" not in key and key not in (".", "..")
    assert decode_key(key) == uid


def test_odd_ids_are_stored_and_read_back(tmp_path):
    out = tmp_path / "f.h5"
    with FeatureWriter(out, ATTRS) as writer:
        for uid in ["a/b.wav", "100%.wav", "x y/ü.flac", "a%2Fb", ".", ".."]:
            _write(writer, uid)
    with FeatureReader(out) as feats:
        assert feats.ids == sorted(["a/b.wav", "100%.wav", "x y/ü.flac", "a%2Fb", ".", ".."])
        np.testing.assert_array_equal(feats.get("a/b.wav", 2), np.full((3, 4), 2.0))
        np.testing.assert_array_equal(feats.get("a/b.wav", -1), feats.get("a/b.wav", 2))
        with pytest.raises(KeyError, match="layer 1"):
            feats.get("a/b.wav", 1)


def test_second_writer_is_refused(tmp_path):
    out = tmp_path / "f.h5"
    with FeatureWriter(out, ATTRS):
        with pytest.raises(StoreError, match="another audioembed process"):
            FeatureWriter(out, ATTRS)


def test_abort_leaves_no_half_written_entry(tmp_path):
    out = tmp_path / "f.h5"
    with FeatureWriter(out, ATTRS) as writer:
        _write(writer, "ok")
        w = writer.begin("broken", [0, 2], 4)
        w.append({0: np.ones((2, 4)), 2: np.ones((2, 4))})
        writer.abort()
    with FeatureReader(out) as feats:
        assert feats.ids == ["ok"]


def test_utterances_between_checkpoints_cost_no_flush_each(tmp_path, monkeypatch):
    """A flush per utterance cost as much as writing it; only sealing a part (a checkpoint) flushes."""
    flushes = []
    real = h5py.File.flush

    def counting(self):
        flushes.append(self.filename)
        return real(self)

    out = tmp_path / "f.h5"
    with FeatureWriter(out, ATTRS, seal_seconds=3600) as writer:
        monkeypatch.setattr(h5py.File, "flush", counting)
        for i in range(20):
            _write(writer, f"u{i}")
        assert flushes == []
        writer.seal()
        assert len(flushes) == 1  # the part, before its atomic rename
    with FeatureReader(out) as feats:
        assert len(feats) == 20


def test_sealed_parts_are_visible_and_recovered(tmp_path):
    out = tmp_path / "f.h5"
    writer = FeatureWriter(out, ATTRS, seal_seconds=0)
    _write(writer, "one")
    _write(writer, "two")
    w = writer.begin("unfinished", [0, 2], 4)
    w.append({0: np.ones((2, 4)), 2: np.ones((2, 4))})
    # simulate a hard kill: nothing is closed or consolidated
    writer._release_lock()
    assert len(list(parts_dir(out).glob("part-*.h5"))) == 2
    with h5py.File(out, "r") as h5:
        assert len(h5[UTTERANCES]) == 0
    with FeatureReader(out) as feats:
        assert feats.ids == ["one", "two"]
    with FeatureWriter(out, ATTRS) as again:
        assert again.done_ids == {"one", "two"}
    assert not parts_dir(out).exists()
    with h5py.File(out, "r") as h5:
        assert sorted(h5[UTTERANCES]) == ["one", "two"]


def test_not_a_feature_file(tmp_path):
    bogus = tmp_path / "other.h5"
    with h5py.File(bogus, "w") as h5:
        h5["x"] = 1
    with pytest.raises(StoreError, match="not an audioembed feature file"):
        FeatureWriter(bogus, ATTRS)
    with pytest.raises(StoreError, match="no such feature file"):
        FeatureReader(tmp_path / "nothing.h5")


@pytest.mark.parametrize(
    "raw, shown",
    [
        ("a\nb", "a\\nb"),
        ("a\rb\tc", "a\\rb\\tc"),
        ("\x1b[2Kx", "\\x1b[2Kx"),
        ("nul\x00", "nul\\x00"),
        ("del\x7f c1\x85", "del\\x7f c1\\x85"),
        ("line\u2028sep", "line\\u2028sep"),
        ("bidi\u202eevil", "bidi\\u202eevil"),
        (os.fsdecode(b"caf\xe9.wav"), "caf\\xe9.wav"),
        ("plain/ü ok.wav", "plain/ü ok.wav"),
    ],
)
def test_printable_escapes_what_could_forge_or_break_a_line(raw, shown):
    assert printable(raw) == shown
    assert printable(raw).encode("utf-8") and "\n" not in printable(raw)


def _corrupt(path, signature=b"SNOD"):
    """Overwrite the first HDF5 symbol-table node signature, as a bad disk block would."""
    data = path.read_bytes()
    at = data.index(signature)
    path.write_bytes(data[:at] + b"XXXX" + data[at + 4 :])


def test_corrupted_feature_file_is_one_line_everywhere(tmp_path):
    from click.testing import CliRunner

    import audio_gen
    from audioembed.cli import main

    corpus = tmp_path / "in"
    audio_gen.make_corpus(corpus, n=3, seed=2, min_s=0.3, max_s=0.6)
    out = tmp_path / "f.h5"
    runner = CliRunner()
    assert runner.invoke(main, ["extract", "-u", "fbank", str(corpus), "-o", str(out), "-q"]).exit_code == 0
    _corrupt(out)
    for args in (["extract", "-u", "fbank", str(corpus), "-o", str(out), "-q"],
                 ["inspect", str(out)],
                 ["gather", str(out), "-o", str(tmp_path / "g.h5")]):
        result = runner.invoke(main, args)
        assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (args, result.exception)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1, result.output
        assert lines[0].startswith(f"Error: {out}: cannot read feature file, it may be corrupted (")
        assert "bad symbol table node signature" in lines[0]


def test_corrupted_part_is_named(tmp_path):
    out = tmp_path / "f.h5"
    writer = FeatureWriter(out, ATTRS, seal_seconds=0)
    _write(writer, "one")
    writer._release_lock()  # killed before consolidating
    (part,) = parts_dir(out).glob("part-*.h5")
    _corrupt(part)
    with pytest.raises(StoreError, match=rf"^{part}: cannot read feature file"):
        FeatureReader(out)
    with pytest.raises(StoreError, match=rf"^{part}: cannot read feature file"):
        FeatureWriter(out, ATTRS)
    assert not (tmp_path / "f.h5.consolidate.tmp").exists()


def test_reader_survives_a_consolidation_between_listing_and_opening(tmp_path, monkeypatch):
    import audioembed.store as store

    out = tmp_path / "f.h5"
    writer = FeatureWriter(out, ATTRS, seal_seconds=0)
    for uid in ("one", "two", "three"):
        _write(writer, uid)
    writer._release_lock()  # three sealed parts, not yet merged
    listed = store.resolve_store_files
    races = []

    def list_then_consolidate(paths):
        files = listed(paths)
        if not races:  # a writer merges and deletes the parts right after this reader listed them
            races.append(store.consolidate(out))
        return files

    monkeypatch.setattr(store, "resolve_store_files", list_then_consolidate)
    with FeatureReader(out) as feats:
        assert feats.ids == ["one", "three", "two"]
        np.testing.assert_array_equal(feats.get("two", 0), np.ones((3, 4)))
    assert races == [3] and not parts_dir(out).exists()
