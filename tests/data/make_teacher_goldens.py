"""Generate the golden outputs of the reference implementations for tests/test_teachers_fidelity.py.

Run ONCE in a venv that has the reference packages and their own runtime dependencies
(they are needed here only, never by audioembed or its tests):

    pip install --no-deps resemblyzer==0.1.4 torchcrepe==0.0.24 basic-pitch==0.4.0
    pip install librosa==0.11.0 webrtcvad-wheels==2.0.14.post1 resampy==0.4.3 onnxruntime==1.31.1
    python tests/data/make_teacher_goldens.py ge2e crepe basic_pitch

Inputs (real recordings, copied once into tests/data; licences in tests/data/README.md):

* ``speech_librivox_16k.wav``: pocketsphinx's LibriVox test utterance
  ``sense_and_sensibility_01_austen_64kb-0880`` ("he was not an ill disposed young man"),
  16 kHz, 2.99 s; used for ``ge2e`` and ``crepe``;
* ``music_guitar_22k.wav``: see :func:`basic_pitch_golden`.

Each model writes ``<model>_golden.npz`` next to this script, with the package versions
that made it in ``versions`` (a JSON string). Only a subset of frames is stored for the
frame-level arrays to keep the files small; their indices are stored too.
"""

from __future__ import annotations

import json
import sys
from importlib import metadata
from pathlib import Path

import numpy as np
import soundfile as sf

HERE = Path(__file__).resolve().parent
SPEECH = HERE / "speech_librivox_16k.wav"
FRAME_STEP = 10  # store every 10th frame of frame-level outputs


def _versions(*dists: str) -> str:
    return json.dumps({d: metadata.version(d) for d in ("numpy", "torch", *dists)}, sort_keys=True)


def _keep_windows(normalised: np.ndarray, trimmed: np.ndarray, window: int) -> np.ndarray:
    """Which ``window``-sample blocks of ``normalised`` survive in ``trimmed`` (VAD trimming)."""
    blocks = normalised[: len(normalised) - len(normalised) % window].reshape(-1, window)
    keep = np.zeros(len(blocks), dtype=bool)
    pos = 0
    for i, block in enumerate(blocks):
        if pos + window <= len(trimmed) and np.array_equal(trimmed[pos : pos + window], block):
            keep[i] = True
            pos += window
    rebuilt = blocks[keep].reshape(-1)
    assert np.array_equal(rebuilt, trimmed), "could not recover Resemblyzer's VAD mask"
    return keep


def ge2e_golden() -> dict:
    """Resemblyzer: preprocess_wav, wav_to_mel_spectrogram, VoiceEncoder.embed_utterance."""
    import torch
    from resemblyzer import VoiceEncoder, preprocess_wav
    from resemblyzer.audio import normalize_volume, wav_to_mel_spectrogram
    from resemblyzer.hparams import sampling_rate, vad_window_length

    wav, sr = sf.read(SPEECH, dtype="float32")
    assert sr == sampling_rate == 16000
    normalised = normalize_volume(wav, -30, increase_only=True)
    gain = float(np.max(np.abs(normalised)) / np.max(np.abs(wav)))
    quiet = (wav * np.float32(0.01)).astype(np.float32)  # a quiet copy, so that the gain is not 1
    quiet_gain = float(np.max(np.abs(normalize_volume(quiet, -30, increase_only=True))) / np.max(np.abs(quiet)))
    preprocessed = preprocess_wav(wav)  # no source_sr: already 16 kHz, no resampling
    window = vad_window_length * sampling_rate // 1000
    keep = _keep_windows(normalised, preprocessed, window)

    encoder = VoiceEncoder(device="cpu", verbose=False)
    embed, partials, wav_slices = encoder.embed_utterance(preprocessed, return_partials=True)
    mel = wav_to_mel_spectrogram(preprocessed)  # (T, 40), the whole preprocessed utterance
    with torch.no_grad():
        lstm3, _ = encoder.lstm(torch.from_numpy(mel)[None])
        raw = encoder.relu(encoder.linear(lstm3))
        frame_embed = (raw / torch.norm(raw, dim=-1, keepdim=True))[0].numpy()
    frames = np.arange(0, mel.shape[0], FRAME_STEP)
    return {
        "versions": _versions("resemblyzer", "librosa", "webrtcvad-wheels"),
        "gain": np.float64(gain),
        "quiet_gain": np.float64(quiet_gain),
        "vad_window": np.int64(window),
        "vad_keep": keep,
        "num_samples": np.int64(len(preprocessed)),
        "num_frames": np.int64(mel.shape[0]),
        "frames": frames,
        "mel": mel[frames],
        "lstm3": lstm3[0].numpy()[frames],
        "frame_embedding": frame_embed[frames],
        "embedding": embed.astype(np.float32),
        "partial_embeddings": partials.astype(np.float32),
        "partial_starts": np.array([s.start // 160 for s in wav_slices], dtype=np.int64),
    }


MAKERS = {"ge2e": ge2e_golden}


def main(argv: list[str]) -> None:
    names = argv or list(MAKERS)
    for name in names:
        if name not in MAKERS:
            raise SystemExit(f"unknown model '{name}' (choose from {', '.join(MAKERS)})")
        arrays = MAKERS[name]()
        out = HERE / f"{name}_golden.npz"
        np.savez_compressed(out, **arrays)
        print(f"wrote {out} ({out.stat().st_size} bytes)")


if __name__ == "__main__":
    main(sys.argv[1:])
