"""Shard sets: a gathered or read set is complete, or the user is told which shard is short."""

from __future__ import annotations

import warnings

import h5py
import pytest
from click.testing import CliRunner

import audio_gen

from audioembed import FeatureReader, extract
from audioembed.cli import main
from audioembed.store import UTTERANCES, StoreError, StoreWarning, gather, shard_path


def _extract_shards(corpus, out, count=2):
    return [extract(corpus, "fbank", out, shard=(k, count), progress=False) for k in range(count)]


def _drop_utterances(path, n):
    """What a killed shard run leaves: fewer utterances than its input list assigned it."""
    with h5py.File(path, "a") as h5:
        for key in sorted(h5[UTTERANCES])[:n]:
            del h5[UTTERANCES][key]


def test_complete_set_records_its_counts_and_gathers(small_corpus, tmp_path):
    out = tmp_path / "f.h5"
    summaries = _extract_shards(small_corpus, out)
    with h5py.File(shard_path(out, 1, 2), "r") as h5:
        assert h5.attrs["shard_item_count"] == summaries[1].extracted
        assert h5.attrs["input_item_count"] == 8
        assert len(h5.attrs["shard_ids_sha256"]) == len(h5.attrs["input_ids_sha256"]) == 32
    assert gather(out, tmp_path / "all.h5") == 8
    with FeatureReader(tmp_path / "all.h5") as feats:
        assert len(feats) == 8 and "shard_index" not in feats.attrs


def test_short_shard_is_refused_unless_allowed(small_corpus, tmp_path):
    out = tmp_path / "f.h5"
    _extract_shards(small_corpus, out)
    _drop_utterances(shard_path(out, 1, 2), 3)
    with pytest.raises(StoreError, match=r"shard 1/2 \(f-shard1of2.h5\) has 1 of 4 utterances \(short by 3\)"):
        gather(out, tmp_path / "all.h5")
    assert not (tmp_path / "all.h5").exists()
    with pytest.raises(StoreError, match="incomplete shard set"):
        FeatureReader(out)
    with pytest.warns(StoreWarning, match="short by 3"):
        assert gather(out, tmp_path / "all.h5", allow_incomplete=True) == 5

    runner = CliRunner()
    refused = runner.invoke(main, ["gather", str(out), "-o", str(tmp_path / "cli.h5")])
    assert refused.exit_code != 0 and "short by 3" in refused.output and "--allow-incomplete" in refused.output
    assert "Traceback" not in refused.output
    allowed = runner.invoke(main, ["gather", str(out), "-o", str(tmp_path / "cli.h5"), "--allow-incomplete"])
    assert allowed.exit_code == 0, allowed.output
    assert "warning" in allowed.output and "short by 3" in allowed.output and "5 utterances" in allowed.output

    # rerunning the killed shard's command finishes it, and the set is complete again
    again = extract(small_corpus, "fbank", out, shard=(1, 2), progress=False)
    assert again.extracted == 3
    assert gather(out, tmp_path / "all.h5") == 8


def test_missing_shard_file(small_corpus, tmp_path):
    out = tmp_path / "f.h5"
    extract(small_corpus, "fbank", out, shard=(0, 3), progress=False)
    with pytest.raises(StoreError, match=r"missing shard\(s\) 1/3, 2/3"):
        gather(out, tmp_path / "all.h5")
    with pytest.warns(StoreWarning, match="missing shard"):
        with FeatureReader(out, allow_incomplete=True) as feats:
            assert len(feats) == 3


def test_bad_inputs_count_as_done(tmp_path):
    corpus = tmp_path / "in"
    corpus.mkdir()
    for i in range(4):
        audio_gen.write_audio(corpus / f"ok{i}.wav", audio_gen.tone(200.0 + 50 * i, 0.5, 16000), 16000)
    audio_gen.write_corrupt(corpus / "bad.wav")
    out = tmp_path / "f.h5"
    summaries = _extract_shards(corpus, out)
    assert sum(len(s.failed) for s in summaries) == 1
    with FeatureReader(out) as feats:  # the shard that met the bad file finished: complete
        assert len(feats) == 4
        assert list(feats.failed) == ["bad.wav"] and "bad.wav" in feats.failed["bad.wav"]
    assert gather(out, tmp_path / "all.h5") == 4
    with FeatureReader(tmp_path / "all.h5") as feats:
        assert list(feats.failed) == ["bad.wav"]


def test_old_shard_files_without_counts_warn(small_corpus, tmp_path):
    out = tmp_path / "f.h5"
    _extract_shards(small_corpus, out)
    for k in range(2):
        with h5py.File(shard_path(out, k, 2), "a") as h5:
            for key in ("shard_item_count", "shard_ids_sha256", "input_item_count", "input_ids_sha256"):
                del h5.attrs[key]
    with pytest.warns(StoreWarning, match="older audioembed"):
        assert gather(out, tmp_path / "all.h5") == 8
    result = CliRunner().invoke(main, ["gather", str(out), "-o", str(tmp_path / "cli.h5")])
    assert result.exit_code == 0 and "older audioembed" in result.output


def test_shards_of_another_input_list_are_refused(small_corpus, tmp_path):
    out = tmp_path / "f.h5"
    extract(small_corpus, "fbank", out, shard=(0, 2), progress=False)
    fewer = sorted(small_corpus.iterdir())[:5]
    with pytest.raises(StoreError, match="another list of inputs"):
        extract(fewer, "fbank", out, shard=(0, 2), progress=False)
    # a set mixed from two input lists is refused even when each shard is full
    extract(fewer, "fbank", tmp_path / "g.h5", shard=(1, 2), progress=False)
    shard_path(tmp_path / "g.h5", 1, 2).rename(shard_path(out, 1, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(StoreError, match="different runs"):
            FeatureReader(out, allow_incomplete=True)
