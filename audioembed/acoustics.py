"""Synthetic acoustics: coloured noise and room impulse responses.

Why one module: the speech corpus renders noisy, reverberant utterances with these, and
distillation augments training crops with the same generators, so both mean the same thing
by "pink noise" or "RT60 0.5 s". Every function takes its random generator: the caller's
seeding decides what is drawn.
"""

from __future__ import annotations

import numpy as np


def coloured_noise(n: int, alpha: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """``n`` samples of Gaussian noise with a 1/f^alpha power spectrum, unit RMS (float64).

    ``alpha`` 0 is white, 1 pink, 2 brown noise.
    """
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, d=1.0 / sample_rate)
    freqs[0] = freqs[1] if n > 1 else 1.0
    shaped = np.fft.irfft(spectrum / freqs ** (alpha / 2.0), n=n)
    return shaped / (np.sqrt(np.mean(shaped**2)) + 1e-12)


def room_response(rt60: float, rng: np.random.Generator, sample_rate: int) -> np.ndarray:
    """A synthetic room: a direct path plus exponentially decaying noise (float64).

    The tail is 60 dB down after ``rt60`` seconds, low-passed (walls absorb highs: a random
    3-7 kHz corner), starts after a 2-10 ms gap, and holds a random 0-8 dB less energy than
    the direct path (direct-to-reverberant ratio).
    """
    length = max(1, int(rt60 * sample_rate))
    t = np.arange(length) / sample_rate
    tail = rng.standard_normal(length) * np.exp(-6.9078 * t / rt60)
    cutoff = rng.uniform(3000.0, 7000.0)
    freqs = np.fft.rfftfreq(length, d=1.0 / sample_rate)
    tail = np.fft.irfft(np.fft.rfft(tail) / np.sqrt(1.0 + (freqs / cutoff) ** 4), n=length)
    delay = int(rng.uniform(0.002, 0.01) * sample_rate)
    tail[:delay] = 0.0
    drr_db = rng.uniform(0.0, 8.0)
    tail *= np.sqrt(10 ** (-drr_db / 10.0) / (np.sum(tail**2) + 1e-12))
    tail[0] = 1.0
    return tail
