"""Golden outputs of the reference implementations for tests/test_{ge2e,crepe,basic_pitch}.py.

Run ONCE in a venv that has the reference packages and their own runtime dependencies
(they are needed here only, never by audioembed or its tests):

    pip install --no-deps resemblyzer==0.1.4 torchcrepe==0.0.24 basic-pitch==0.4.0
    pip install librosa==0.11.0 webrtcvad-wheels==2.0.14.post1 resampy==0.4.3 onnx==1.23.2 onnxruntime==1.32.0
    python tests/data/make_teacher_goldens.py ge2e crepe basic_pitch

(torch 2.13.0+cpu, numpy 2.4.6; each npz records the versions that made it.) torchcrepe
imports torchaudio only to read files, which is not used here, so an empty stand-in module
replaces it (see :func:`crepe_golden`); basic-pitch warns that tensorflow and tflite are
missing and uses onnxruntime for its ONNX model.

Inputs (real recordings, copied once into tests/data; licences in tests/data/README.md):

* ``speech_librivox_16k.wav``: pocketsphinx's LibriVox test utterance
  ``sense_and_sensibility_01_austen_64kb-0880`` ("he was not an ill disposed young man"),
  16 kHz, 2.99 s, copied unchanged; used for ``ge2e``;
* ``music_guitar_16k.flac`` and ``music_guitar_22k.flac``: the first 3 s of Sonic Pi's
  ``guit_harmonics.flac`` (guitar harmonics, CC0), mixed to mono and resampled to 16 kHz and
  22.05 kHz with soxr 1.1.0 (HQ), stored as 16-bit FLAC; made once by
  ``python tests/data/make_teacher_goldens.py clips PATH/TO/sonic_pi/guit_harmonics.flac``;
  used for ``crepe`` (16 kHz) and ``basic_pitch`` (22.05 kHz). The models read exactly the
  stored samples, so no resampler enters the comparison.

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
MUSIC_16K = HERE / "music_guitar_16k.flac"
MUSIC_22K = HERE / "music_guitar_22k.flac"
MUSIC_SECONDS = 3.0
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


def crepe_golden() -> dict:
    """torchcrepe: preprocess + infer (activations, block-5 maps), predict (Viterbi pitch, periodicity)."""
    import types

    import scipy.stats
    import torch

    # torchcrepe imports torchaudio only to read files (torchcrepe.load.audio), which is not
    # used here; an empty stand-in avoids installing torchaudio (and another torch build).
    sys.modules.setdefault("torchaudio", types.ModuleType("torchaudio"))
    import torchcrepe

    wav, sr = sf.read(MUSIC_16K, dtype="float32")
    audio = torch.from_numpy(wav)[None]
    out = {"versions": _versions("torchcrepe", "librosa", "resampy", "scipy")}
    for model in ("full", "tiny"):
        with torch.no_grad():
            frames = next(torchcrepe.preprocess(audio, sr, 160, None, "cpu", True))  # all frames at once
            activation = torchcrepe.infer(frames, model).numpy()  # (T, 360)
            block5 = torchcrepe.infer(frames, model, embed=True).numpy()[..., 0]  # (T, C, 8)
        np.random.seed(0)  # torchcrepe dithers the pitch with numpy's global generator
        pitch, periodicity = torchcrepe.predict(
            audio, sr, 160, 50.0, 2006.0, model, torchcrepe.decode.viterbi, return_periodicity=True, device="cpu"
        )
        np.random.seed(0)  # the same draw again: the dither that was added
        dither = scipy.stats.triang.rvs(c=0.5, loc=-20, scale=40, size=tuple(pitch.shape))[0]
        pitch = pitch[0].numpy().astype(np.float64)
        cents = 1200 * np.log2(pitch / 10.0) - dither
        bins = (cents - 1997.3794084376191) / 20
        assert np.abs(bins - np.round(bins)).max() < 1e-3, "could not recover the Viterbi bins"
        frames_kept = np.arange(0, activation.shape[0], FRAME_STEP)
        out.update({
            f"{model}_frames": frames_kept,
            f"{model}_activation": activation[frames_kept],
            f"{model}_block5_mean": block5[frames_kept].mean(axis=2),
            f"{model}_block5_raw": block5[:3 * FRAME_STEP:FRAME_STEP],
            f"{model}_pitch": pitch.astype(np.float32),
            f"{model}_dither_cents": dither.astype(np.float32),
            f"{model}_bins": np.round(bins).astype(np.int64),
            f"{model}_periodicity": periodicity[0].numpy(),
        })
    return out


def basic_pitch_golden() -> dict:
    """Basic Pitch: run_inference (ONNX model under onnxruntime), raw windows, inner maps."""
    import basic_pitch
    import onnx
    import onnxruntime
    from basic_pitch import inference

    model_path = Path(basic_pitch.ICASSP_2022_MODEL_PATH)
    assert model_path.name == "nmp.onnx"
    out = {"versions": _versions("basic-pitch", "onnxruntime", "onnx", "librosa")}
    # 1. the reference end to end: windows, ONNX model, unwrapping
    result = inference.run_inference(MUSIC_22K, inference.Model(model_path))
    frames = np.arange(0, result["contour"].shape[0], FRAME_STEP)
    out["run_frames"] = frames
    out["run_num_frames"] = np.int64(result["contour"].shape[0])
    for key in ("contour", "note", "onset"):
        out[f"run_{key}"] = result[key][frames].astype(np.float32)
    # 2. the reference's windows through the ONNX graph with inner tensors exposed
    graph = onnx.load(str(model_path))
    inner = {
        "cqt_bn": "model_1/batch_normalization/FusedBatchNormV3;model_1/batch_normalization/FusedBatchNormV33",
        "contour_maps": "Relu__38:0",
        "note_maps": "Relu__42:0",
        "onset_maps": "Relu__35:0",
    }
    for name in inner.values():
        graph.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    session = onnxruntime.InferenceSession(graph.SerializeToString())
    overlap = 30 * 256
    windows = [w for w, _, _ in inference.get_audio_input(MUSIC_22K, overlap, 43844 - overlap)]
    window_frames = np.arange(0, 172, FRAME_STEP)
    out["window_frames"] = window_frames
    out["window_audio_start"] = np.array([0, 43844 - overlap], dtype=np.int64)
    names = [o.name for o in session.get_outputs()]
    for index, window in enumerate(windows[:2]):
        values = dict(zip(names, session.run(None, {session.get_inputs()[0].name: window.astype(np.float32)})))
        out[f"w{index}_contour"] = values["StatefulPartitionedCall:0"][0][window_frames]
        out[f"w{index}_note"] = values["StatefulPartitionedCall:1"][0][window_frames]
        out[f"w{index}_onset"] = values["StatefulPartitionedCall:2"][0][window_frames]
        if index == 0:  # inner maps, reduced as the upstream reduces them
            out["w0_cqt_h1"] = values[inner["cqt_bn"]][0, window_frames, :264, 0]
            for key in ("contour_maps", "note_maps", "onset_maps"):
                out[f"w0_{key}_mean"] = values[inner[key]][0].mean(axis=0)[window_frames]
    return out


MAKERS = {"ge2e": ge2e_golden, "crepe": crepe_golden, "basic_pitch": basic_pitch_golden}


def make_music_clips(source: str) -> None:
    """The two music clips from Sonic Pi's guit_harmonics.flac (run once)."""
    import soxr

    wav, sr = sf.read(source, dtype="float32", always_2d=True)
    mono = wav.mean(axis=1)[: int(MUSIC_SECONDS * sr)]
    for path, rate in ((MUSIC_16K, 16000), (MUSIC_22K, 22050)):
        sf.write(path, soxr.resample(mono, sr, rate, quality="HQ"), rate, subtype="PCM_16")
        print(f"wrote {path} ({path.stat().st_size} bytes)")


def main(argv: list[str]) -> None:
    if argv[:1] == ["clips"]:
        make_music_clips(argv[1])
        return
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
