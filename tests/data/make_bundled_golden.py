"""Regenerate the fixture and golden embeddings of the bundled models.

Run after replacing the bundled models (plugins/pretrained/, recipes/offline/bundle.py):

    python tests/data/make_bundled_golden.py

Writes ``bundled_fixture.wav`` (1.5 s: a tone, a sweep and noise, seeded) and
``bundled_golden.json``: for each bundled upstream (``unified_student``,
``small_hubert``, ``small_mert``) the per-layer time means of its hidden states on the
fixture, with the weights' fingerprint; tests/test_bundled_models.py compares against them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
FIXTURE = HERE / "bundled_fixture.wav"
GOLDEN = HERE / "bundled_golden.json"
SR = 16000
BUNDLED = ("unified_student", "small_hubert", "small_mert")  # upstream names = folders under plugins/pretrained/


def fixture_audio() -> np.ndarray:
    t = np.arange(int(1.5 * SR)) / SR
    sweep = np.sin(2 * np.pi * (200 * t + 400 * t**2))
    tone = np.sin(2 * np.pi * 440 * t) * (t < 0.75)
    noise = np.random.default_rng(0).standard_normal(t.size)
    return (0.3 * sweep + 0.3 * tone + 0.05 * noise).astype(np.float32)


def embed(path: Path, name: str = "unified_student") -> dict:
    import torch

    from audioembed import load_upstream
    from audioembed.audio import load as load_audio

    upstream = load_upstream(name, device="cpu")
    wav = torch.from_numpy(load_audio(str(path), upstream.sample_rate))[None]
    with torch.no_grad():
        out = upstream(wav, torch.tensor([wav.shape[1]]))
    frames = int(out.lengths[0])
    return {
        "frames": frames,
        "layer_means": [h[0, :frames].mean(0).tolist() for h in out.hidden_states],
    }


def weights_sha256(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()


def main() -> int:
    from audioembed_plugins.bundled import bundled_dir

    sf.write(FIXTURE, fixture_audio(), SR, subtype="PCM_16")
    golden = {}
    for name in BUNDLED:
        golden[name] = {"weights_sha256": weights_sha256(bundled_dir(name)), **embed(FIXTURE, name)}
        print(f"{name}: {golden[name]['frames']} frames, {len(golden[name]['layer_means'])} layers")
    GOLDEN.write_text(json.dumps(golden, indent=0) + "\n")
    print(f"wrote {FIXTURE.name} and {GOLDEN.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
