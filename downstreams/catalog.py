"""Every built-in downstream task, registered without importing its loader.

Each entry point of the ``audioembed`` group in pyproject.toml names one :class:`SpecPlugin`
here (``music = "audioembed_downstreams.catalog:music"``). ``build`` is a :class:`LazyImport`
of the task class, so listing tasks imports neither numpy nor the audio and HDF5 stacks the
loaders use; a task's module is imported when that task runs.
"""

from __future__ import annotations

from audioembed.hookspecs import SpecPlugin
from audioembed.specs import LazyImport, TaskSpec

PACKAGE = "audioembed_downstreams"


def _task(name: str, target: str, summary: str) -> TaskSpec:
    return TaskSpec(name=name, build=LazyImport(f"{PACKAGE}.{target}"), summary=summary)


classify = SpecPlugin(tasks=[
    _task("classify", "classify:ClassifyTask",
          "utterance classification from a manifest (path, label[, speaker, split]) or class folders"),
    _task("speaker_id", "classify:SpeakerIdTask",
          "speaker identification: classify's loader with the speaker as the label, no speaker grouping"),
])  # fmt: skip

asr = SpecPlugin(tasks=[
    _task("asr", "asr:AsrTask",
          "speech recognition (CTC probe): LibriSpeech folders or a manifest with transcripts; WER/CER"),
])  # fmt: skip

emotion = SpecPlugin(tasks=[
    _task("emotion", "emotion:EmotionTask",
          "speech emotion recognition: EmoDB, RAVDESS, CREMA-D names, class folders or a manifest; accuracy/UAR"),
])  # fmt: skip

music = SpecPlugin(tasks=[
    _task("genre", "music:GenreTask",
          "music genre classification: GTZAN folders (<genre>/<file>) or a manifest; accuracy/macro F1"),
    _task("key", "music:KeyTask",
          "musical key detection (24 keys): GiantSteps (.key files) or a manifest; MIREX score/accuracy"),
    _task("tagging", "music:TaggingTask",
          "music auto-tagging (multi-label): MagnaTagATune annotations_final.csv or a manifest; ROC-AUC/PR-AUC"),
])  # fmt: skip

sound_events = SpecPlugin(tasks=[
    _task("sound_events", "sound_events:SoundEventsTask",
          "environmental sounds on the official folds: ESC-50, ESC-10, UrbanSound8K; accuracy/macro F1"),
])  # fmt: skip
