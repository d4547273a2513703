"""Seeded on-the-fly augmentation of distillation crops.

Why this shape: the student must learn each teacher's function on the audio it is shown, so
a teacher's target has to be computed on exactly the augmented crop the student sees, even
when the targets come from the cache, which is built long before training and one teacher
(one sample rate) at a time. Three rules make that hold:

* **Seeded by the crop only.** Every random choice of a crop is drawn from
  ``(run seed, crop key, augmentation name)``: never from thread timing, step order or which
  rates are asked for. The cache builder and the trainer therefore draw the same plan, and
  changing one augmentation's settings leaves the others' draws alone.
* **One signal, many rates.** The crop is decoded and augmented once at a fixed processing
  rate (``[data.augment] rate``), then resampled (libsoxr, as :func:`~audioembed.audio.load`)
  to each rate a student or teacher needs. Every rate holds the same augmented signal.
* **Same length as the clean crop** at every rate, so frame counts, alignment and the
  cache's bookkeeping do not change. Speed perturbation reads a longer (faster) or shorter
  (slower) source stretch from the crop's start and zero-pads the end when the file ends
  before the stretch does.

A crop is augmented with probability ``prob``; each augmentation then applies with its own
probability, in the order speed, pitch, reverb, noise, band, gain. Unaugmented crops are
decoded exactly as without augmentation.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from ..acoustics import coloured_noise, room_response
from ..audio import AudioError, check_rate, decode_segment, probe, resample, resampled_length
from ..inputs import InputError, collect_inputs
from .config import AUGMENTATIONS, NOISE_COLOURS, AugmentSection
from .data import Crop, CorpusItem, DataError, crop_frames, crop_key, default_warn

#: bumped whenever the same plan would give other samples: caches built before are refused
ALGORITHM_VERSION = 1
#: peak kept after augmentation (noise, reverb and gain can push a crop past full scale)
PEAK = 0.99
#: the telephone band (Hz)
TELEPHONE_BAND = (300.0, 3400.0)
#: phase-vocoder window at the processing rate: about 43 ms at 24 kHz
_VOCODER_SECONDS = 1024 / 24000


class AugmentError(DataError):
    """Augmentation cannot be set up as configured; the message names the setting or file."""


def _stable_int(*parts: object) -> int:
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little")


@dataclass(frozen=True)
class NoiseFile:
    """A usable noise recording (header checked)."""

    id: str
    path: str
    sample_rate: int
    frames: int


@dataclass(frozen=True)
class AugmentPlan:
    """What is done to one crop; ``None`` = that augmentation is not applied."""

    key: str
    #: speed factor (resampling from ``rate * speed`` to ``rate``)
    speed: float | None = None
    #: pitch ratio 2^(semitones / 12)
    pitch: float | None = None
    rt60: float | None = None
    snr_db: float | None = None
    #: a colour of :data:`~.config.NOISE_COLOURS`, or ``"file"``
    noise_source: str | None = None
    #: ("lowpass", corner Hz) or ("telephone", 0.0)
    band: tuple[str, float] | None = None
    gain_db: float | None = None

    @property
    def clean(self) -> bool:
        return all(getattr(self, f.name) is None for f in dataclasses.fields(self) if f.name != "key")


class Augmenter:
    """Draws and applies the augmentation of crops for one run (``section`` and ``seed``).

    Noise recordings listed in ``noise.files`` are checked once here; unreadable ones are
    reported through ``warn`` and left out (the record says which remain, so a cache built
    with other noise files is refused).
    """

    def __init__(self, section: AugmentSection, seed: int, *, warn: Callable[[str], None] | None = None):
        self.section = section
        self.seed = int(seed)
        self.rate = check_rate(section.rate)
        self.noise_files: list[NoiseFile] = []
        if section.active and section.noise.prob > 0 and section.noise.files:
            self.noise_files = _read_noise_files(section.noise.files, warn or default_warn)

    # -- identity ------------------------------------------------------------------------

    def record(self) -> dict | None:
        """What decides the augmented audio (``None`` when off); stored with the teacher cache."""
        s = self.section
        if not s.active:
            return None
        out: dict = {"version": ALGORITHM_VERSION, "seed": self.seed, "prob": s.prob, "rate": self.rate}
        for name in AUGMENTATIONS:
            sub = dataclasses.asdict(getattr(s, name))
            if sub["prob"] <= 0:
                continue
            if name == "noise":
                sub.pop("files")
                if self.noise_files:
                    ids = "\n".join(f"{f.id}\t{f.frames}\t{f.sample_rate}" for f in self.noise_files)
                    sub["files"] = {"count": len(self.noise_files), "sha256": hashlib.sha256(ids.encode()).hexdigest()}
                else:
                    sub.pop("file_prob")
            out[name] = sub
        return out

    def check_rates(self, rates: Iterable[int], who: str) -> None:
        """Refuse rates above the processing rate: they would get band-limited audio silently."""
        high = [r for r in rates if r > self.rate]
        if high and self.section.active:
            raise AugmentError(
                f"[data.augment] rate = {self.rate} Hz is below the {max(high)} Hz {who} needs; "
                f"set it to at least {max(high)}"
            )

    # -- drawing -------------------------------------------------------------------------

    def _rng(self, key: str, part: str) -> np.random.Generator:
        return np.random.default_rng([self.seed & 0xFFFFFFFF, _stable_int("augment", part, key)])

    def draw(self, key: str) -> AugmentPlan:
        """The plan of the crop named ``key``: a pure function of (seed, key, settings)."""
        s = self.section
        if not s.active or self._rng(key, "crop").random() >= s.prob:
            return AugmentPlan(key)
        fields: dict = {}
        for name in AUGMENTATIONS:
            sub = getattr(s, name)
            rng = self._rng(key, name)
            if sub.prob <= 0 or rng.random() >= sub.prob:
                continue
            if name == "speed":
                fields["speed"] = self._quantised(rng.uniform(*sub.factor))
            elif name == "pitch":
                fields["pitch"] = self._quantised(2.0 ** (rng.uniform(*sub.semitones) / 12.0))
            elif name == "reverb":
                fields["rt60"] = float(rng.uniform(*sub.rt60))
            elif name == "noise":
                fields["snr_db"] = float(rng.uniform(*sub.snr_db))
                use_file = bool(self.noise_files) and rng.random() < sub.file_prob
                fields["noise_source"] = "file" if use_file else str(sub.colours[int(rng.integers(len(sub.colours)))])
            elif name == "band":
                if rng.random() < sub.telephone_prob:
                    fields["band"] = ("telephone", 0.0)
                else:
                    fields["band"] = ("lowpass", float(rng.uniform(*sub.lowpass_hz)))
            elif name == "gain":
                fields["gain_db"] = float(rng.uniform(*sub.db))
        return AugmentPlan(key, **fields)

    def _quantised(self, factor: float) -> float:
        # Resampling runs between integer rates: rate * factor is rounded to a whole Hz.
        return round(factor * self.rate) / self.rate

    # -- applying ------------------------------------------------------------------------

    def load(self, item: CorpusItem, crop: Crop, rates: Iterable[int]) -> dict[int, np.ndarray]:
        """The crop of ``item`` after its augmentation, mono float32, at each rate in ``rates``.

        Each array has as many samples as the clean crop at that rate
        (:func:`~audioembed.audio.resampled_length`). Raises
        :class:`~audioembed.audio.AudioError` naming the file when it cannot be used.
        """
        wanted = sorted({check_rate(r) for r in rates})
        start, count = crop_frames(item, crop)
        if count <= 0:
            raise AudioError(item.path, f"crop at {crop.start:.3f} s lies outside the file ({item.duration:.3f} s)")
        plan = self.draw(crop_key(item.id, crop.start, crop.duration))
        if plan.clean:
            return decode_segment(item.path, start, count, item.sample_rate, wanted)
        self.check_rates(wanted, "this crop")
        # speed f plays f times faster: f x the clean stretch of source becomes the crop
        source = count if plan.speed is None else int(math.ceil(count * plan.speed))
        source = max(1, min(source, item.frames - start))
        x = decode_segment(item.path, start, source, item.sample_rate, [self.rate])[self.rate]
        y = self.apply(x, plan, resampled_length(count, item.sample_rate, self.rate))
        out = {}
        for rate in wanted:
            z = resample(y, self.rate, rate)
            out[rate] = _fit(z, resampled_length(count, item.sample_rate, rate))
        return out

    def apply(self, x: np.ndarray, plan: AugmentPlan, length: int) -> np.ndarray:
        """``plan`` applied to ``x`` (at the processing rate); float32 of ``length`` samples."""
        rate = self.rate
        if plan.speed is not None:
            x = resample(x, int(round(rate * plan.speed)), rate)
        x = _fit(x, length).astype(np.float64)
        if plan.pitch is not None:
            x = pitch_shift(x, plan.pitch, rate)
        if plan.rt60 is not None:
            ir = room_response(plan.rt60, self._rng(plan.key, "room"), rate)
            x = _convolve(x, ir)
        if plan.snr_db is not None:
            x = self._add_noise(x, plan)
        if plan.band is not None:
            kind, corner = plan.band
            x = band_pass(x, rate, TELEPHONE_BAND) if kind == "telephone" else low_pass(x, rate, corner)
        if plan.gain_db is not None:
            x = x * 10.0 ** (plan.gain_db / 20.0)
        peak = float(np.max(np.abs(x))) if len(x) else 0.0
        if peak > PEAK:
            x = x * (PEAK / peak)
        y = _fit(np.asarray(x, dtype=np.float32), length)
        if not np.isfinite(y).all():  # a guard: every step above keeps finite input finite
            raise AudioError(plan.key, "augmentation produced NaN or Inf samples")
        return y

    def _add_noise(self, x: np.ndarray, plan: AugmentPlan) -> np.ndarray:
        power = float(np.mean(x**2)) if len(x) else 0.0
        if power <= 0.0:  # silence has no SNR: left as it is
            return x
        rng = self._rng(plan.key, "noise-signal")
        if plan.noise_source == "file":
            noise = self._noise_recording(len(x), rng)
        else:
            noise = coloured_noise(len(x), NOISE_COLOURS[plan.noise_source], rng, self.rate)
        noise_power = float(np.mean(noise**2))
        if noise_power <= 0.0:
            return x
        return x + noise * math.sqrt(power / noise_power / 10.0 ** (plan.snr_db / 10.0))

    def _noise_recording(self, n: int, rng: np.random.Generator) -> np.ndarray:
        f = self.noise_files[int(rng.integers(len(self.noise_files)))]
        # the stretch of the recording that becomes n samples at the processing rate, looped
        # when the recording is shorter
        need = int(math.ceil(n * f.sample_rate / self.rate)) + 1
        take = min(need, f.frames)
        start = int(rng.integers(f.frames - take + 1))
        try:
            noise = decode_segment(f.path, start, take, f.sample_rate, [self.rate])[self.rate].astype(np.float64)
        except AudioError as exc:
            # not the crop's fault: a redraw of the crop would hide a broken noise file
            raise AugmentError(f"noise recording {exc}; remove it from [data.augment.noise] files") from None
        if len(noise) == 0:
            return np.zeros(n)
        return np.resize(noise, n)


# --------------------------------------------------------------------------------------
# signal processing (float64 in, float64 out)
# --------------------------------------------------------------------------------------


def _fit(x: np.ndarray, length: int) -> np.ndarray:
    """``x`` trimmed or zero-padded at the end to ``length`` samples."""
    if len(x) >= length:
        return x[:length]
    return np.pad(x, (0, length - len(x)))


def _convolve(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """``x`` through ``ir``, cut to ``len(x)`` (the tail past the crop is dropped)."""
    from scipy.signal import fftconvolve

    if len(x) == 0:
        return x
    return fftconvolve(x, ir)[: len(x)]


def low_pass(x: np.ndarray, rate: int, corner: float) -> np.ndarray:
    """Zero-phase 8th-order Butterworth low-pass (applied forwards and backwards)."""
    from scipy.signal import butter, sosfiltfilt

    sos = butter(8, corner, btype="lowpass", fs=rate, output="sos")
    return _filtfilt(sosfiltfilt, sos, x)


def band_pass(x: np.ndarray, rate: int, band: tuple[float, float]) -> np.ndarray:
    """Zero-phase 4th-order Butterworth band-pass (the telephone channel)."""
    from scipy.signal import butter, sosfiltfilt

    sos = butter(4, list(band), btype="bandpass", fs=rate, output="sos")
    return _filtfilt(sosfiltfilt, sos, x)


def _filtfilt(sosfiltfilt, sos: np.ndarray, x: np.ndarray) -> np.ndarray:
    # sosfiltfilt pads by reflection; a crop shorter than the padding is padded less
    padlen = min(3 * (2 * len(sos) + 1), max(0, len(x) - 1))
    return sosfiltfilt(sos, x, padlen=padlen) if len(x) > 1 else x


def time_stretch(x: np.ndarray, factor: float, rate: int) -> np.ndarray:
    """``x`` made ``factor`` times longer without changing its pitch (phase vocoder).

    STFT magnitudes are interpolated between frames at steps of ``1 / factor`` frame; each
    bin's phase advances by its measured instantaneous frequency, so partials stay coherent.
    Output: ``round(len(x) * factor)`` samples.
    """
    n_out = int(round(len(x) * factor))
    n_fft = 1 << max(6, int(round(math.log2(_VOCODER_SECONDS * rate))))
    if len(x) < n_fft or n_out < 1:  # too short to analyse: plain interpolation
        return np.interp(np.linspace(0, max(len(x) - 1, 0), n_out), np.arange(len(x)), x) if len(x) else np.zeros(n_out)
    hop = n_fft // 4
    # float32 spectra (the audio is float32); the running phase is summed in float64, where
    # thousands of frames of advance lose no precision, and wrapped before going back
    window = torch.hann_window(n_fft, dtype=torch.float32)
    spec = torch.stft(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)), n_fft, hop, window=window,
                      center=True, return_complex=True)  # (F, T)
    frames = spec.shape[1]
    steps = torch.arange(0, frames, 1.0 / factor, dtype=torch.float64)
    spec = torch.cat([spec, torch.zeros_like(spec[:, :1])], dim=1)  # t + 1 exists for the last step
    left = steps.floor().long()
    frac = (steps - left).float()[None, :]
    magnitude = spec.abs()
    mag = (1 - frac) * magnitude[:, left] + frac * magnitude[:, left + 1]
    expected = 2 * math.pi * hop * torch.arange(spec.shape[0], dtype=torch.float64)[:, None] / n_fft
    angle = spec.angle().double()
    delta = angle[:, 1:] - angle[:, :-1] - expected
    delta = delta - 2 * math.pi * torch.round(delta / (2 * math.pi))
    advance = (expected + delta)[:, left]  # (F, steps)
    phase = angle[:, :1] + torch.cumsum(torch.cat([torch.zeros_like(advance[:, :1]), advance[:, :-1]], dim=1), dim=1)
    stretched = torch.polar(mag, torch.remainder(phase, 2 * math.pi).float())
    y = torch.istft(stretched, n_fft, hop, window=window, center=True, length=n_out)
    return y.numpy().astype(np.float64)


def pitch_shift(x: np.ndarray, ratio: float, rate: int) -> np.ndarray:
    """``x`` with every frequency times ``ratio`` and the same length: stretched in time by
    ``ratio``, then resampled by ``ratio`` (which restores the length and moves the pitch)."""
    stretched = time_stretch(x, ratio, rate).astype(np.float32)
    shifted = resample(stretched, int(round(rate * ratio)), rate).astype(np.float64)
    return _fit(shifted, len(x))


def _read_noise_files(sources: Sequence[str], warn: Callable[[str], None]) -> list[NoiseFile]:
    try:
        inputs = collect_inputs(list(sources))
    except InputError as exc:
        raise AugmentError(f"[data.augment.noise] files: {exc}") from None
    files = []
    for item in inputs:
        try:
            info = probe(item.path)
        except AudioError as exc:
            warn(f"skipping noise recording {exc}")
            continue
        if info.num_samples < 1:
            warn(f"skipping noise recording {item.path}: no samples")
            continue
        files.append(NoiseFile(item.id, item.path, info.sample_rate, info.num_samples))
    if not files:
        raise AugmentError(f"[data.augment.noise] files: no usable noise recording in {', '.join(sources)}")
    files.sort(key=lambda f: f.id)
    return files


# --------------------------------------------------------------------------------------
# records (stored with the teacher cache)
# --------------------------------------------------------------------------------------


def _flatten(record: dict | None, prefix: str = "") -> dict:
    out = {}
    for k, v in (record or {}).items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def describe_difference(cache: dict | None, config: dict | None) -> str:
    """One line naming how two augmentation records differ, e.g. ``seed: cache 0, config 1``."""
    if cache is None or config is None:
        return f"cache {_show_record(cache)}, config {_show_record(config)}"
    a, b = _flatten(cache), _flatten(config)
    return "; ".join(
        f"{key}: cache {_show_value(a.get(key))}, config {_show_value(b.get(key))}"
        for key in sorted(set(a) | set(b))
        if a.get(key) != b.get(key)
    )


def _show_record(record: dict | None) -> str:
    return "off" if record is None else json.dumps(record, sort_keys=True, separators=(",", ":"))


def _show_value(value) -> str:
    return "unset" if value is None else json.dumps(value)


def same_record(a: dict | None, b: dict | None) -> bool:
    """Whether two records describe the same augmentation (compared as JSON values)."""
    return json.loads(json.dumps(a)) == json.loads(json.dumps(b))


__all__ = [
    "AugmentError",
    "AugmentPlan",
    "Augmenter",
    "band_pass",
    "describe_difference",
    "low_pass",
    "pitch_shift",
    "same_record",
    "time_stretch",
]
