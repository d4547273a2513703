"""Seeded distillation augmentation: determinism, one signal at every rate, each effect
measured on synthetic signals, and cached targets that match online teachers on the same
augmented crops (tiny random models, short crops)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import audio_gen
from tiny_models import single_thread
from test_distill_train import raw_config, world  # noqa: F401  (world is a fixture)

from audioembed.audio import resample
from audioembed.distill.augment import AugmentError, AugmentPlan, Augmenter, band_pass, low_pass, pitch_shift
from audioembed.distill.cache import AUGMENT_FILE, CacheError, prepare_teacher_cache
from audioembed.distill.config import AugmentSection, config_from_dict, dump_toml, load_config
from audioembed.distill.data import BatchLoader, Crop, load_crop, read_corpus
from audioembed.distill.trainer import Trainer
from audioembed.training.config import ConfigError, build_section
from audioembed.training.runlog import read_log

RATE = 24000
ALL_ON = {name: {"prob": 1.0} for name in ("speed", "pitch", "reverb", "noise", "band", "gain")}


def section(**values) -> AugmentSection:
    return build_section(AugmentSection, values, "test")


def dominant_frequency(x: np.ndarray, rate: int) -> float:
    """Peak of the windowed spectrum, refined by parabolic interpolation."""
    spectrum = np.abs(np.fft.rfft(x * np.hanning(len(x)), n=8 * len(x)))
    k = int(np.argmax(spectrum))
    a, b, c = np.log(spectrum[k - 1 : k + 2] + 1e-30)
    return (k + 0.5 * (a - c) / (a - 2 * b + c)) * rate / (8 * len(x))


def band_energy(x: np.ndarray, rate: int, low: float, high: float) -> float:
    spectrum = np.abs(np.fft.rfft(x)) ** 2
    freqs = np.fft.rfftfreq(len(x), 1.0 / rate)
    return float(spectrum[(freqs >= low) & (freqs < high)].sum())


@pytest.fixture(scope="module")
def items(tmp_path_factory):
    root = tmp_path_factory.mktemp("augment_corpus")
    rows = []
    for name, sr in (("speech", 16000), ("music", 44100)):
        x = audio_gen.chirp(200, 1500, 2.0, sr, amp=0.3) + audio_gen.noise(2.0, sr, seed=1, amp=0.02)
        audio_gen.write_audio(root / f"{name}.wav", x, sr)
        rows.append({"path": f"{name}.wav", "id": name, "domain": name})
    audio_gen.write_audio(root / "sine.wav", audio_gen.tone(440.0, 2.0, 16000, amp=0.3), 16000)
    rows.append({"path": "sine.wav", "id": "sine", "domain": "speech"})
    manifest = root / "corpus.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return read_corpus([str(manifest)], "speech", 0.5, warn=lambda m: None)


def pick(items, name: str, start: float, duration: float = 1.0):
    """``(item, crop)`` of the corpus file ``name``."""
    index = [it.id for it in items].index(name)
    return items[index], Crop(index, start, duration)


def test_config_defaults_off_and_validation(tmp_path):
    base = {"teachers": [{"name": "t", "upstream": "hubert"}]}
    assert not config_from_dict(base).data.augment.active  # default: off, nothing changes
    raw = {**base, "data": {"augment": {"prob": 0.8, "noise": {"prob": 0.5, "snr_db": [0, 20], "files": ["noise"]},
                                        "gain": {"prob": 0.3}}}}
    cfg = config_from_dict(raw, base_dir=tmp_path)
    aug = cfg.data.augment
    assert aug.active and aug.noise.snr_db == [0.0, 20.0] and aug.gain.db == [-12.0, 6.0]
    assert aug.noise.files == [str(tmp_path / "noise")]  # relative to the config file
    path = tmp_path / "cfg.toml"
    path.write_text(dump_toml(cfg))  # the run folder's copy reads back as the same run
    assert load_config(path).identity() == cfg.identity()
    assert load_config(path, ["data.augment.pitch.prob=0.25"]).data.augment.pitch.prob == 0.25  # --set reaches it
    assert not config_from_dict({**base, "data": {"augment": {"prob": 0.0, "noise": {"prob": 1.0}}}}).data.augment.active

    bad = [
        ({"noise": {"prob": 1.5}}, "noise.prob"),
        ({"noise": {"snr_db": [20, 5]}}, "noise.snr_db"),
        ({"noise": {"colours": ["green"]}}, "noise.colours"),
        ({"speed": {"factor": 1.1}}, "speed.factor"),
        ({"pitch": {"semitonez": [1, 2]}}, "semitonez"),
        ({"band": {"prob": 0.5, "lowpass_hz": [3000, 13000]}}, "lowpass_hz"),
        ({"rate": 4000}, "rate"),
        ({"reverb": 0.5}, "reverb"),
    ]
    for values, field in bad:
        with pytest.raises(ConfigError, match=field) as info:
            config_from_dict({**base, "data": {"augment": values}})
        assert "[data].augment" in str(info.value) and "\n" not in str(info.value)


def test_same_seed_and_key_give_the_same_crop_at_every_rate(items):
    sec = section(**ALL_ON)
    item, crop = pick(items, "music", 0.25)  # the 44.1 kHz file
    rates = [16000, 22050, 24000]
    a = Augmenter(sec, seed=3).load(item, crop, rates)
    b = Augmenter(sec, seed=3).load(item, crop, rates)
    clean = load_crop(item, crop, rates)
    for rate in rates:
        assert a[rate].dtype == np.float32 and np.isfinite(a[rate]).all()
        assert len(a[rate]) == len(clean[rate])  # same length as the clean crop
        np.testing.assert_array_equal(a[rate], b[rate])
        # one rate at a time (what the cache builder does, teacher by teacher) gives the same
        np.testing.assert_array_equal(Augmenter(sec, seed=3).load(item, crop, [rate])[rate], a[rate])
        assert not np.allclose(a[rate], clean[rate], atol=1e-3)
    other_key = Augmenter(sec, seed=3).load(item, Crop(crop.item, 0.251, 1.0), [16000])[16000]
    other_seed = Augmenter(sec, seed=4).load(item, crop, [16000])[16000]
    assert not np.allclose(other_key, a[16000], atol=1e-3)
    assert not np.allclose(other_seed, a[16000], atol=1e-3)
    assert load_crop(item, crop, [16000], Augmenter(sec, seed=3))[16000].tobytes() == a[16000].tobytes()


def test_every_rate_holds_the_same_augmented_signal(items):
    sec = section(**ALL_ON)
    item, crop = pick(items, "speech", 0.5)
    out = Augmenter(sec, seed=0).load(item, crop, [16000, 22050, 24000])
    for rate in (22050, 24000):
        back = resample(out[rate], rate, 16000)[: len(out[16000])]
        edge = 200  # resampling filters ring at the crop's ends
        diff = back[edge:-edge] - out[16000][edge:-edge]
        assert np.sqrt(np.mean(diff**2)) < 0.01 * np.sqrt(np.mean(out[16000] ** 2)), rate


def test_a_share_of_crops_stays_clean(items):
    aug = Augmenter(section(prob=0.4, gain={"prob": 1.0}), seed=0)
    plans = [aug.draw(f"x@{i / 1000:.3f}+1.000") for i in range(400)]
    augmented = sum(not p.clean for p in plans)
    assert 120 <= augmented <= 200  # binomial(400, 0.4): mean 160, sd ~10
    # an unaugmented crop is exactly the plain decoding, an augmented one is not
    crops = [pick(items, "music", i / 100) for i in range(20)]
    kinds = {aug.draw(crop.key(items)).clean: (item, crop) for item, crop in crops}
    for clean, (item, crop) in kinds.items():
        loaded = aug.load(item, crop, [16000, 24000])
        for rate, wave in load_crop(item, crop, [16000, 24000]).items():
            assert np.array_equal(loaded[rate], wave) == clean
    assert set(kinds) == {True, False}
    off = Augmenter(section(), seed=0)
    assert off.record() is None and all(off.draw(f"x@{i}").clean for i in range(20))


def test_noise_is_added_at_the_drawn_snr():
    aug = Augmenter(section(noise={"prob": 1.0, "snr_db": [3.0, 12.0]}), seed=0)
    x = audio_gen.tone(300.0, 1.0, RATE, amp=0.2).astype(np.float64)
    colours = set()
    for i in range(12):
        plan = aug.draw(f"n@{i}")
        assert 3.0 <= plan.snr_db <= 12.0
        colours.add(plan.noise_source)
        noise = aug.apply(x, plan, len(x)).astype(np.float64) - x
        measured = 10 * np.log10(np.mean(x**2) / np.mean(noise**2))
        assert measured == pytest.approx(plan.snr_db, abs=0.05)
    assert colours == {"white", "pink", "brown"}
    # the colours have their slopes: brown noise keeps most energy low, white spreads it
    low_share = {}
    for colour in ("white", "pink", "brown"):
        noise = aug.apply(x, AugmentPlan("c", snr_db=0.0, noise_source=colour), len(x)) - x
        low_share[colour] = band_energy(noise, RATE, 0, 500) / band_energy(noise, RATE, 0, RATE / 2)
    assert low_share["white"] < 0.1 < low_share["pink"] < low_share["brown"]


def test_noise_recordings_from_a_manifest(tmp_path):
    audio_gen.write_audio(tmp_path / "hum.wav", audio_gen.tone(60.0, 0.3, 8000, amp=0.5), 8000)
    audio_gen.write_corrupt(tmp_path / "broken.wav")
    warnings = []
    sec = section(noise={"prob": 1.0, "file_prob": 1.0, "files": [str(tmp_path)], "snr_db": [6.0, 6.0]})
    aug = Augmenter(sec, seed=0, warn=warnings.append)
    assert [f.id for f in aug.noise_files] == ["hum.wav"] and any("broken.wav" in w for w in warnings)
    assert aug.record()["noise"]["files"]["count"] == 1
    x = audio_gen.tone(1000.0, 1.0, RATE, amp=0.2).astype(np.float64)  # longer than the recording: looped
    plan = aug.draw("k")
    assert plan.noise_source == "file"
    noise = aug.apply(x, plan, len(x)) - x
    assert 10 * np.log10(np.mean(x**2) / np.mean(noise**2)) == pytest.approx(6.0, abs=0.05)
    assert dominant_frequency(noise, RATE) == pytest.approx(60.0, abs=2.0)
    with pytest.raises(AugmentError, match="no usable noise"):
        Augmenter(section(noise={"prob": 1.0, "files": [str(tmp_path / "broken.wav")]}), 0, warn=lambda m: None)


@pytest.mark.parametrize("factor", [0.9, 1.12])
def test_speed_changes_pitch_by_the_factor(items, factor):
    aug = Augmenter(section(speed={"prob": 1.0, "factor": [factor, factor]}), seed=0)
    item, crop = pick(items, "sine", 0.2)  # a 440 Hz sine (2 s at 16 kHz)
    plan = aug.draw(crop.key(items))
    assert plan.speed == pytest.approx(factor, abs=1e-4)
    wave = aug.load(item, crop, [16000])[16000]
    assert len(wave) == 16000  # the crop keeps its length: a longer/shorter stretch is read
    assert dominant_frequency(wave, 16000) == pytest.approx(440.0 * plan.speed, rel=2e-3)
    assert np.abs(wave[-200:]).max() > 0.1  # no padding: the file had the source stretch
    # at the end of the file a faster crop runs out of source: the end is zero-padded
    last = aug.load(item, Crop(crop.item, 1.0, 1.0), [16000])[16000]
    if factor > 1:
        assert len(last) == 16000 and np.abs(last[-1000:]).max() == 0.0 and np.abs(last[:8000]).max() > 0.1


def test_pitch_shift_keeps_duration_and_moves_the_frequency():
    x = np.zeros(RATE)  # a 440 Hz burst from 0.4 s to 0.7 s of a 1 s signal
    t = np.arange(int(0.3 * RATE)) / RATE
    x[int(0.4 * RATE) : int(0.7 * RATE)] = 0.3 * np.sin(2 * np.pi * 440.0 * t)
    for semitones in (-3.0, 2.0):
        ratio = 2 ** (semitones / 12)
        y = pitch_shift(x, ratio, RATE)
        assert len(y) == len(x)
        burst = y[int(0.45 * RATE) : int(0.65 * RATE)]
        assert dominant_frequency(burst, RATE) == pytest.approx(440.0 * ratio, rel=3e-3)
        # no tempo change: the burst stays where it was (energy envelope within 25 ms)
        envelope = np.convolve(y**2, np.ones(240) / 240, mode="same")
        on = np.flatnonzero(envelope > 0.5 * envelope.max())
        assert abs(on[0] / RATE - 0.4) < 0.025 and abs(on[-1] / RATE - 0.7) < 0.025
    aug = Augmenter(section(pitch={"prob": 1.0, "semitones": [4.0, 4.0]}), seed=0)
    y = aug.apply(x, aug.draw("p"), len(x))
    assert y.dtype == np.float32 and len(y) == len(x)
    assert dominant_frequency(y[int(0.45 * RATE) : int(0.65 * RATE)], RATE) == pytest.approx(440 * 2 ** (4 / 12), rel=3e-3)


def test_band_limiting_removes_energy_outside_the_band():
    x = np.random.default_rng(0).standard_normal(RATE) * 0.1
    y = low_pass(x, RATE, 3000.0)
    assert band_energy(y, RATE, 4500, 12000) < 1e-4 * band_energy(x, RATE, 4500, 12000)
    assert band_energy(y, RATE, 100, 2000) == pytest.approx(band_energy(x, RATE, 100, 2000), rel=0.05)
    z = band_pass(x, RATE, (300.0, 3400.0))
    assert band_energy(z, RATE, 6000, 12000) < 1e-4 * band_energy(x, RATE, 6000, 12000)
    assert band_energy(z, RATE, 0, 100) < 1e-3 * band_energy(x, RATE, 0, 100)
    aug = Augmenter(section(band={"prob": 1.0, "lowpass_hz": [4000, 5000], "telephone_prob": 0.0}), seed=0)
    plan = aug.draw("b")
    assert plan.band[0] == "lowpass" and 4000 <= plan.band[1] <= 5000
    y = aug.apply(x, plan, len(x))
    assert band_energy(y, RATE, 7000, 12000) < 1e-4 * band_energy(x, RATE, 7000, 12000)


def test_reverb_adds_a_decaying_tail_and_gain_keeps_the_peak():
    x = np.zeros(RATE)
    x[int(0.2 * RATE) : int(0.3 * RATE)] = audio_gen.tone(500.0, 0.1, RATE, amp=0.3)
    aug = Augmenter(section(reverb={"prob": 1.0, "rt60": [0.5, 0.5]}), seed=0)
    y = aug.apply(x, aug.draw("r"), len(x)).astype(np.float64)
    after = slice(int(0.35 * RATE), int(0.5 * RATE))
    assert np.mean(y[after] ** 2) > 1e-3 * np.mean(x[int(0.2 * RATE) : int(0.3 * RATE)] ** 2)
    assert np.mean(y[int(0.8 * RATE) :] ** 2) < np.mean(y[after] ** 2)  # and it decays
    assert np.abs(y[: int(0.2 * RATE)]).max() < 1e-6  # nothing before the sound (FFT round-off only)

    gain = Augmenter(section(gain={"prob": 1.0, "db": [-6.0, -6.0]}), seed=0)
    quiet = gain.apply(x, gain.draw("g"), len(x))
    np.testing.assert_allclose(quiet, x * 10 ** (-6 / 20), atol=1e-6)
    loud = Augmenter(section(gain={"prob": 1.0, "db": [20.0, 20.0]}), seed=0)
    y = loud.apply(x, loud.draw("g"), len(x))
    assert np.abs(y).max() == pytest.approx(0.99, abs=1e-6)  # peak protection, not clipping
    np.testing.assert_allclose(y / 0.99, x / np.abs(x).max(), atol=1e-6)


def test_a_rate_above_the_augmentation_rate_is_refused(world, tmp_path):  # noqa: F811
    raw = raw_config(world, tmp_path / "run", data={"augment": {"rate": 16000, "gain": {"prob": 1.0}}})
    with pytest.raises(AugmentError, match="16000 Hz is below the 24000 Hz teacher 'music' needs"):
        Trainer(config_from_dict(raw), progress=False, warn=lambda m: None)


AUGMENT = {"prob": 0.8, "speed": {"prob": 0.5}, "pitch": {"prob": 0.5}, "reverb": {"prob": 0.5},
           "noise": {"prob": 0.7, "snr_db": [5.0, 20.0]}, "band": {"prob": 0.5}, "gain": {"prob": 0.5}}


def test_cached_targets_on_augmented_crops_give_the_online_loss(world, tmp_path):  # noqa: F811
    raw = raw_config(world, tmp_path / "run", data={"cache_dir": str(tmp_path / "cache"), "augment": AUGMENT})
    with single_thread():
        built = prepare_teacher_cache(config_from_dict(raw), device="cpu", batch_size=3, progress=False, warn=lambda m: None)
        assert built.written["speech"] == built.crops > 0
        record = json.loads((tmp_path / "cache" / AUGMENT_FILE).read_text())["augment"]
        assert record["seed"] == 0 and record["noise"]["snr_db"] == [5.0, 20.0]
        cached = Trainer(config_from_dict(raw), progress=False, warn=lambda m: None)
        online_raw = json.loads(json.dumps(raw))
        online_raw["data"]["cache_dir"] = ""
        online = Trainer(config_from_dict(online_raw), progress=False, warn=lambda m: None)
        loader = BatchLoader(cached.items, cached._sampler(), [16000, 24000], max_steps=1, workers=0, augment=cached.augment)
        batches = list(loader)[0]
        assert sum(not cached.augment.draw(c.key(cached.items)).clean for c in batches[0][0].crops) >= 1
        a = cached.evaluate(batches[0], batches[1])
        b = online.evaluate(batches[0], batches[1])
        clean = list(BatchLoader(cached.items, cached._sampler(), [16000, 24000], max_steps=1, workers=0))[0]
        c = online.evaluate(clean[0], clean[1])
    assert a.loss == pytest.approx(b.loss, rel=2e-3)
    for name in ("speech", "music"):
        for kind in ("l1", "cos"):
            for layer, value in a.per_teacher[name][kind].items():
                assert value == pytest.approx(b.per_teacher[name][kind][layer], rel=5e-3, abs=1e-4)
    assert abs(c.loss - b.loss) > 1e-3 * abs(b.loss)  # the same crops unaugmented: another loss

    with single_thread():  # training from the augmented cache runs, and the student records it
        cached.run(until_step=2)
    assert [r["step"] for r in read_log(tmp_path / "run")] == [1, 2]
    assert cached.student_metadata()["training"]["augment"] == record

    # other settings: refused by the trainer and by a resumed build, naming both values
    changed = json.loads(json.dumps(raw))
    changed["data"]["augment"]["noise"]["snr_db"] = [0.0, 10.0]
    changed["run"]["output_dir"] = str(tmp_path / "run2")
    with pytest.raises(CacheError) as info:
        Trainer(config_from_dict(changed), progress=False, warn=lambda m: None)
    message = str(info.value)
    assert "\n" not in message and "[data.augment]" in message
    assert "noise.snr_db: cache [5.0, 20.0], config [0.0, 10.0]" in message
    with pytest.raises(CacheError, match="noise.snr_db"):
        prepare_teacher_cache(config_from_dict(changed), device="cpu", progress=False, warn=lambda m: None)
    reseeded = json.loads(json.dumps(raw))
    reseeded["run"]["seed"] = 1
    with pytest.raises(CacheError, match="seed: cache 0, config 1"):
        Trainer(config_from_dict(reseeded), progress=False, warn=lambda m: None)
    plain = json.loads(json.dumps(raw))
    plain["data"].pop("augment")
    with pytest.raises(CacheError, match=r"cache \{.*\}, config off"):
        Trainer(config_from_dict(plain), progress=False, warn=lambda m: None)


def test_a_clean_cache_is_refused_by_an_augmenting_trainer(world, tmp_path):  # noqa: F811
    raw = raw_config(world, tmp_path / "run", data={"cache_dir": str(tmp_path / "cache")})
    with single_thread():
        prepare_teacher_cache(config_from_dict(raw), device="cpu", progress=False, warn=lambda m: None)
    (tmp_path / "cache" / AUGMENT_FILE).unlink()  # caches made before the record existed are clean
    Trainer(config_from_dict(raw), progress=False, warn=lambda m: None)
    raw["data"]["augment"] = {"gain": {"prob": 1.0}}
    with pytest.raises(CacheError, match=r"cache off, config \{"):
        Trainer(config_from_dict(raw), progress=False, warn=lambda m: None)
    with pytest.raises(CacheError, match="cache off"):
        prepare_teacher_cache(config_from_dict(raw), device="cpu", progress=False, warn=lambda m: None)
