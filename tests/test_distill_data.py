"""Distillation data (corpus, crops, stateless sampler, loader) and the teacher target cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import audio_gen
from tiny_models import make_tiny_hf, make_tiny_mert, single_thread

from audioembed import load_upstream
from audioembed.audio import AudioError, load, resampled_length
from audioembed.distill.cache import CacheError, TeacherCache, build_teacher_cache
from audioembed.distill.config import TeacherSpec
from audioembed.distill.data import (
    BatchLoader,
    Crop,
    CorpusItem,
    DataError,
    StepSampler,
    collate,
    domain_counts,
    load_crop,
    plan_crops,
    read_corpus,
)

#: id -> (domain or None, seconds, sample rate, channels)
FILES = {
    "sp_a": ("speech", 3.0, 16000, 1),
    "sp_b": ("speech", 2.2, 16000, 1),
    "sp_c": (None, 2.5, 22050, 2),  # no domain in the manifest: default_domain
    "mu_a": ("music", 3.0, 44100, 1),
    "mu_b": ("music", 1.7, 24000, 2),
    "tiny": ("speech", 0.3, 16000, 1),  # shorter than min_seconds
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill_corpus")
    rows = []
    for i, (name, (domain, seconds, sr, ch)) in enumerate(FILES.items()):
        x = audio_gen.tone(200.0 + 90 * i, seconds, sr, amp=0.3) + audio_gen.noise(seconds, sr, seed=i, amp=0.05)
        if ch == 2:
            x = np.stack([x, audio_gen.tone(300.0 + 50 * i, seconds, sr, amp=0.2)], axis=1)
        audio_gen.write_audio(root / "audio" / f"{name}.wav", x, sr)
        row = {"path": f"audio/{name}.wav", "id": name}
        if domain is not None:
            row["domain"] = domain
        rows.append(row)
    audio_gen.write_corrupt(root / "audio" / "broken.wav")
    rows.append({"path": "audio/broken.wav", "id": "broken", "domain": "music"})
    manifest = root / "train.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root, manifest


@pytest.fixture(scope="module")
def items(corpus):
    _, manifest = corpus
    return read_corpus([str(manifest)], "speech", 0.5, warn=lambda m: None)


def test_read_corpus_domains_and_warnings(corpus):
    root, manifest = corpus
    messages = []
    items = read_corpus([str(manifest)], "speech", 0.5, warn=messages.append)
    assert [it.id for it in items] == sorted(["sp_a", "sp_b", "sp_c", "mu_a", "mu_b"])
    domains = {it.id: it.domain for it in items}
    assert domains == {"sp_a": "speech", "sp_b": "speech", "sp_c": "speech", "mu_a": "music", "mu_b": "music"}
    mu_a = next(it for it in items if it.id == "mu_a")
    assert (mu_a.sample_rate, mu_a.frames) == (44100, 3 * 44100) and mu_a.duration == pytest.approx(3.0)
    broken = [m for m in messages if "broken.wav" in m]
    assert len(broken) == 1 and "cannot decode" in broken[0]
    short = [m for m in messages if "shorter than" in m]
    assert len(short) == 1 and "1 item" in short[0]
    assert len(messages) == 2
    # another default domain only changes rows without a domain column
    other = read_corpus([str(manifest)], "noise", 0.5, warn=lambda m: None)
    assert {it.id: it.domain for it in other}["sp_c"] == "noise"
    with pytest.raises(DataError, match="no usable audio"):
        read_corpus([str(manifest)], "speech", 10.0, warn=lambda m: None)
    with pytest.raises(DataError, match="missing.jsonl"):
        read_corpus([str(root / "missing.jsonl")], "speech", 0.5, warn=lambda m: None)


def test_plan_crops_cover(items):
    crops = plan_crops(items, 1.0, 0.5, "cover", seed=0)
    by_item = {}
    for c in crops:
        by_item.setdefault(items[c.item].id, []).append((c.start, round(c.duration, 6)))
    assert by_item["sp_a"] == [(0.0, 1.0), (1.0, 1.0), (2.0, 1.0)]
    assert by_item["sp_b"] == [(0.0, 1.0), (1.0, 1.0)]  # last 0.2 s < min_seconds: dropped
    assert by_item["sp_c"] == [(0.0, 1.0), (1.0, 1.0), (2.0, 0.5)]  # last 0.5 s kept
    assert by_item["mu_b"] == [(0.0, 1.0), (1.0, 0.7)]
    assert plan_crops(items, 1.0, 0.5, "cover", seed=5) == crops
    whole = plan_crops(items, 4.0, 0.5, "cover", seed=0)  # every item shorter than a crop
    assert [(c.start, c.duration) for c in whole] == [(0.0, it.duration) for it in items]
    keys = [c.key(items) for c in crops]
    assert len(set(keys)) == len(keys) and keys[0] == f"{items[0].id}@0.000+1.000"


def test_plan_crops_random(items):
    a = plan_crops(items, 1.0, 0.5, 3, seed=7)
    assert a == plan_crops(items, 1.0, 0.5, 3, seed=7)
    assert a != plan_crops(items, 1.0, 0.5, 3, seed=8)
    assert len(a) == 3 * len(items)
    for c in a:
        item = items[c.item]
        assert c.duration == 1.0 and 0.0 <= c.start <= item.duration - 1.0
        assert c.start == round(c.start, 3)
    # an item's crops depend on its index and the seed only
    extra = CorpusItem("zz", items[0].path, "speech", 5.0, 16000, 80000)
    b = plan_crops(list(items) + [extra], 1.0, 0.5, 3, seed=7)
    assert b[: len(a)] == a
    # short items: one whole-item crop, not N copies
    short = plan_crops(items, 2.8, 0.5, 4, seed=0)
    assert sum(1 for c in short if items[c.item].id == "sp_b") == 1
    with pytest.raises(DataError, match="cache_crops"):
        plan_crops(items, 1.0, 0.5, "tile", seed=0)


def test_sampler_is_a_function_of_seed_and_step(items):
    s1 = StepSampler(items, 8, seed=3, crop_seconds=1.0)
    s2 = StepSampler(items, 8, seed=3, crop_seconds=1.0)
    assert s1.global_batch(5) == s2.global_batch(5)
    assert s1.global_batch(5) != s1.global_batch(6)
    assert s1.global_batch(5) != StepSampler(items, 8, seed=4, crop_seconds=1.0).global_batch(5)
    for c in s1.global_batch(9):
        item = items[c.item]
        assert 0 <= c.start and c.start + c.duration <= item.duration + 1e-9
        assert c.duration == min(1.0, item.duration)
    # ranks partition the global batch
    glob = s1.global_batch(11)
    r0, r1 = s1.local_batch(11, 0, 2), s1.local_batch(11, 1, 2)
    assert len(r0) == len(r1) == 4
    assert sorted(r0 + r1, key=glob.index) == glob and [c for pair in zip(r0, r1) for c in pair] == glob
    with pytest.raises(DataError, match="divisible"):
        s1.local_batch(0, 0, 3)
    counts = domain_counts(glob, items)
    assert sum(counts.values()) == 8 and set(counts) <= {"speech", "music"}
    # cached mode: slots come from the given crops only
    crops = plan_crops(items, 1.0, 0.5, "cover", seed=0)[:4]
    cached = StepSampler(items, 8, seed=3, crop_seconds=1.0, crops=crops)
    assert set(cached.global_batch(2)) <= set(crops)


def test_sampler_domain_weights(items):
    s = StepSampler(items, 200, seed=0, crop_seconds=1.0, domain_weights={"speech": 0.9, "music": 0.1})
    counts = domain_counts(s.global_batch(0), items)
    assert 160 <= counts["speech"] <= 195, counts
    only = StepSampler(items, 50, seed=0, crop_seconds=1.0, domain_weights={"speech": 1, "music": 0})
    assert domain_counts(only.global_batch(1), items) == {"speech": 50}
    with pytest.raises(DataError, match="'noise'"):
        StepSampler(items, 8, seed=0, crop_seconds=1.0, domain_weights={"speech": 1, "music": 1, "noise": 1})
    with pytest.raises(DataError, match="'music'.*no entry"):
        StepSampler(items, 8, seed=0, crop_seconds=1.0, domain_weights={"speech": 1})


@pytest.mark.parametrize("item_id", ["sp_c", "mu_a", "mu_b"])
def test_load_crop_matches_whole_file(items, item_id):
    index = next(i for i, it in enumerate(items) if it.id == item_id)
    item = items[index]
    crop = Crop(index, 0.5, 1.0)  # starts on a whole sample at every rate involved
    out = load_crop(item, crop, [16000, 24000])
    count = item.sample_rate
    for rate in (16000, 24000):
        assert out[rate].dtype == np.float32
        assert len(out[rate]) == resampled_length(count, item.sample_rate, rate)
        whole = load(item.path, rate)
        ref = whole[rate // 2 : rate // 2 + len(out[rate])]
        edge = rate // 50  # the resampler's filter edges differ; interior samples must agree
        np.testing.assert_allclose(out[rate][edge:-edge], ref[edge:-edge], atol=1e-3)
    tail = load_crop(item, Crop(index, 1.0, 1.0), [item.sample_rate])[item.sample_rate]
    assert len(tail) == min(item.sample_rate, item.frames - item.sample_rate)  # clipped to the file
    with pytest.raises(AudioError, match="outside"):
        load_crop(item, Crop(index, item.duration + 1, 1.0), [16000])
    wavs, lengths = collate([out[16000], out[16000][:100]])
    assert wavs.shape == (2, len(out[16000])) and lengths.tolist() == [len(out[16000]), 100]
    assert wavs.dtype == torch.float32 and lengths.dtype == torch.long and float(wavs[1, 100:].abs().sum()) == 0


def _with_broken(items, tmp_path):
    bad = audio_gen.write_corrupt(tmp_path / "gone.wav")
    return list(items) + [CorpusItem("gone", bad, "music", 2.0, 16000, 32000)]


def test_batch_loader_deterministic_and_replaces_broken_files(items, tmp_path):
    all_items = _with_broken(items, tmp_path)
    sampler = StepSampler(all_items, 8, seed=1, crop_seconds=1.0)
    runs = {}
    for workers in (0, 1, 3):
        messages = []
        loader = BatchLoader(all_items, sampler, [16000, 24000], start_step=2, max_steps=7, rank=1, world=2,
                             accumulate=2, workers=workers, warn=messages.append)
        runs[workers] = list(loader)
        loader.close()
        assert all("gone.wav" in m for m in messages) and len(messages) <= 1
    ref = runs[0]
    assert len(ref) == 5
    drew_broken = False
    for step_index, step in enumerate(ref):
        micro, counts, seconds = step
        step_no = 2 + step_index
        glob = sampler.global_batch(step_no)
        assert counts == domain_counts(glob, all_items) and seconds == pytest.approx(sum(c.duration for c in glob))
        local = glob[1::2]
        assert len(micro) == 2 and [len(b.crops) for b in micro] == [2, 2]
        drew_broken |= any(all_items[c.item].id == "gone" for c in local)
        for b in micro:
            assert b.step == step_no
            assert all(all_items[c.item].id != "gone" for c in b.crops)
            assert b.domains == [all_items[c.item].domain for c in b.crops]
            for rate in (16000, 24000):
                wavs, lengths = b.audio[rate]
                assert wavs.shape[0] == 2 and lengths.tolist() == [
                    resampled_length(round(c.duration * all_items[c.item].sample_rate), all_items[c.item].sample_rate, rate)
                    for c in b.crops
                ]
        if not any(all_items[c.item].id == "gone" for c in local):
            assert [c for b in micro for c in b.crops] == local
    assert drew_broken, "pick a seed whose batches draw the broken file"
    for workers in (1, 3):
        for a, b in zip(ref, runs[workers]):
            for ma, mb in zip(a.micro_batches, b.micro_batches):
                assert ma.crops == mb.crops and ma.domains == mb.domains
                for rate in ma.audio:
                    assert torch.equal(ma.audio[rate][0], mb.audio[rate][0])
                    assert torch.equal(ma.audio[rate][1], mb.audio[rate][1])
    with pytest.raises(DataError, match="divisible"):
        BatchLoader(all_items, sampler, [16000], max_steps=1, world=3)


def test_batch_loader_stops_early(items):
    sampler = StepSampler(items, 2, seed=0, crop_seconds=1.0)
    loader = BatchLoader(items, sampler, [16000], max_steps=1000, workers=2)
    for i, _ in enumerate(loader):
        if i == 2:
            break
    loader.close()
    assert loader._thread is None


# --------------------------------------------------------------------------------------
# teacher target cache
# --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill_teachers")
    hubert = make_tiny_hf(root / "hubert", "hubert", seed=0)
    mert = make_tiny_mert(root / "mert", version="v1", seed=0)
    other = make_tiny_hf(root / "hubert_other", "hubert", seed=1)
    specs = [
        TeacherSpec(name="speech", upstream="hubert", model=str(hubert)),
        TeacherSpec(name="music", upstream="mert", model=str(mert), layers=[2, 1]),
    ]
    ups = [load_upstream(s.upstream, model=s.model) for s in specs]
    assert [u.sample_rate for u in ups] == [16000, 24000]
    other_up = load_upstream("hubert", model=str(other))
    return list(zip(specs, ups)), other_up


def test_teacher_cache_build_read_resume_refuse(items, teachers, tmp_path):
    pairs, other_up = teachers
    all_items = _with_broken(items, tmp_path)
    crops = plan_crops(all_items, 1.0, 0.5, "cover", seed=0)
    cache_dir = tmp_path / "cache"
    messages = []
    with single_thread():
        written = build_teacher_cache(all_items, crops, pairs, cache_dir, batch_size=4, progress=False, warn=messages.append)
    broken_keys = [c.key(all_items) for c in crops if all_items[c.item].id == "gone"]
    assert len(broken_keys) == 2
    assert written == {"speech": len(crops) - 2, "music": len(crops) - 2}
    assert sum("gone.wav" in m for m in messages) == 1 and any("2 of" in m for m in messages)
    lines = (cache_dir / "crops.jsonl").read_text().splitlines()
    assert [json.loads(x)["key"] for x in lines] == [c.key(all_items) for c in crops]

    # resume: nothing new
    with single_thread():
        again = build_teacher_cache(all_items, crops, pairs, cache_dir, progress=False, warn=lambda m: None)
    assert again == {"speech": 0, "music": 0}

    cache = TeacherCache(cache_dir, pairs, warn=messages.append)
    assert cache.missing_keys == broken_keys
    messages.clear()
    cached = cache.crops(all_items)
    assert len(cached) == len(crops) - 2 and all(all_items[c.item].id != "gone" for c in cached)
    assert any("2 of" in m and "missing" in m for m in messages)
    # mapped back onto a corpus with other indices (the broken item dropped)
    assert [c.key(items) for c in cache.crops(items)] == [c.key(all_items) for c in cached]
    assert cache.sample_rate("music") == 24000 and cache.frame_rate("speech") == pytest.approx(16000 / 20)
    assert cache.layers == {"speech": [1, 2], "music": [2, 1]}

    picked = [cached[0], cached[5], cached[-1]]
    keys = [c.key(all_items) for c in picked]
    with single_thread(), torch.no_grad():
        for (spec, up), rate in zip(pairs, (16000, 24000)):
            targets, lengths = cache.targets(spec.name, keys)
            layers = cache.layers[spec.name]
            assert targets.dtype == torch.float32 and targets.shape[:2] == (3, len(layers))
            for row, crop in enumerate(picked):
                wave = load_crop(all_items[crop.item], crop, [rate])[rate]
                out = up(torch.from_numpy(wave)[None], torch.tensor([len(wave)]))
                n = up.num_frames(len(wave))
                assert int(lengths[row]) == n
                ref = torch.stack([out.hidden_states[layer][0, :n] for layer in layers])
                torch.testing.assert_close(targets[row, :, :n], ref, rtol=2e-3, atol=2e-3)
                assert float(targets[row, :, n:].abs().sum()) == 0.0
    with pytest.raises(CacheError, match="not cached"):
        cache.targets("speech", broken_keys[:1])
    cache.close()

    # other weights: refused when reading and when building
    swapped = [(pairs[0][0], other_up), pairs[1]]
    with pytest.raises(CacheError, match="other weights.*distill-cache"):
        TeacherCache(cache_dir, swapped)
    with pytest.raises(CacheError, match="other weights"):
        build_teacher_cache(all_items, crops, swapped, cache_dir, progress=False, warn=lambda m: None)
    # other target layers, other crop plan
    relayered = [(TeacherSpec(name="speech", upstream="hubert", model=pairs[0][0].model, layers=[2]), pairs[0][1]), pairs[1]]
    with pytest.raises(CacheError, match="layers"):
        TeacherCache(cache_dir, relayered)
    with pytest.raises(CacheError, match="other crops"):
        build_teacher_cache(all_items, plan_crops(all_items, 0.8, 0.5, "cover", 0), pairs, cache_dir, progress=False)
    # without upstreams the files are trusted
    with TeacherCache(cache_dir, [(spec, None) for spec, _ in pairs], warn=lambda m: None) as trusted:
        assert len(trusted.crops(items)) == len(cached)


def test_teacher_cache_errors(items, teachers, tmp_path):
    pairs, _ = teachers
    with pytest.raises(CacheError, match="crops.jsonl"):
        TeacherCache(tmp_path / "nothing", pairs)
    bad = [(TeacherSpec(name="speech", upstream="hubert", model=pairs[0][0].model, layers=[7]), pairs[0][1])]
    with pytest.raises(CacheError, match=r"target layers \[7\]"):
        build_teacher_cache(items, plan_crops(items, 1.0, 0.5, 1, 0), bad, tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()
    # a teacher file deleted after the build
    crops = plan_crops(items, 1.0, 0.5, 1, 0)[:2]
    with single_thread():
        build_teacher_cache(items, crops, pairs[:1], tmp_path / "d", progress=False, warn=lambda m: None)
    with pytest.raises(CacheError, match="music.h5"):
        TeacherCache(tmp_path / "d", pairs)
