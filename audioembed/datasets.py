"""The datasets the built-in tasks know: where they come from, where they live, what they look like.

A dataset is installed under the data home (``$AUDIOEMBED_DATA``, else ``<user cache>/audioembed/data``)
in a folder named after it, laid out as the task loader reads it. ``audioembed downstream TASK``
without ``--data`` uses the task's standard dataset from there, and ``audioembed data get NAME``
puts it there (:mod:`audioembed.download`).

Checksums: a file's SHA-256 (or, where only that is published, its MD5) is pinned only where
it is published by the dataset's authors or by a well-kept dataset library (torchaudio,
TensorFlow Datasets), each with its source in a comment; nothing here was computed by us.
A file without one is still downloaded, and ``audioembed data get`` says plainly that it is
not verified (docs/downstreams.md, "Datasets").
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import AudioEmbedError

ENV_VAR = "AUDIOEMBED_DATA"


class DatasetError(AudioEmbedError, ValueError):
    """A dataset is unknown, missing or cannot be installed; the message says what to do."""


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset's official release."""

    url: str
    #: SHA-256 of the file as published; None = no published SHA-256
    sha256: str | None = None
    #: how to unpack it: "tar" (any compression), "zip", or "file" (kept as is)
    unpack: str = "tar"
    #: file name to save under (default: the URL's last part)
    name: str | None = None
    #: MD5 of the file as published, for files whose publisher gives only that
    md5: str | None = None

    @property
    def filename(self) -> str:
        return self.name or self.url.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]

    @property
    def checksum(self) -> tuple[str, str] | None:
        """``(algorithm, hex digest)`` the download is checked against (SHA-256 first), or None."""
        if self.sha256:
            return "sha256", self.sha256
        if self.md5:
            return "md5", self.md5
        return None


@dataclass(frozen=True)
class Dataset:
    name: str
    title: str
    #: tasks whose loader reads this layout
    tasks: tuple[str, ...]
    #: the layout the loader expects under the dataset folder, in one line
    layout: str
    licence: str
    homepage: str
    files: tuple[RemoteFile, ...] = ()
    #: path below the dataset folder to give to --data (e.g. a manifest the preparation writes)
    data_path: str = "."
    #: a manifest written after unpacking from file names (see audioembed.download.PREPARERS)
    prepare: str | None = None
    #: why ``get`` cannot fetch it automatically (files behind a form, a script, a git LFS store)
    manual: str | None = None
    size: str = "?"
    notes: tuple[str, ...] = field(default=())

    @property
    def downloadable(self) -> bool:
        return bool(self.files) and self.manual is None


_LIBRISPEECH = "https://www.openslr.org/resources/12/"
#: SHA-256 of the OpenSLR 12 archives, as pinned by torchaudio (pytorch/audio,
#: src/torchaudio/datasets/librispeech.py, ``_CHECKSUMS``)
_LIBRISPEECH_SHA256 = {
    "train-clean-100.tar.gz": "d4ddd1d5a6ab303066f14971d768ee43278a5f2a0aa43dc716b0e64ecbbbf6e2",
    "dev-clean.tar.gz": "76f87d090650617fca0cac8f88b9416e0ebf80350acb97b343a85fa903728ab3",
    "test-clean.tar.gz": "39fde525e59672dc6d1551919b1478f724438a95aa55f874b576be21967e6c23",
}

DATASETS: dict[str, Dataset] = {d.name: d for d in (
    Dataset(
        "gtzan", "GTZAN genre collection (10 genres x 100 clips of 30 s)", ("genre",),
        "genres/<genre>/<file>.wav (one folder per genre)",
        "research use only; the audio is copyrighted by its owners", "https://marsyas.info/index.html",
        # SHA-256 as pinned by TensorFlow Datasets (tensorflow_datasets/audio/gtzan/checksums.tsv, with the
        # size 1225571541 bytes) and by torchaudio (src/torchaudio/datasets/gtzan.py, _CHECKSUMS)
        files=(RemoteFile("http://opihi.cs.uvic.ca/sound/genres.tar.gz",
                          "24347e0223d2ba798e0a558c4c172d9d4a19c00bb7963fe055d183dadb4ef2c6"),), size="1.2 GB",
    ),
    Dataset(
        "giantsteps_key", "GiantSteps key dataset (604 two-minute EDM previews)", ("key",),
        "audio/<id>.mp3 next to annotations/key/<id>.key",
        "annotations CC BY-SA 4.0; audio previews are Beatport's", "https://github.com/GiantSteps/giantsteps-key-dataset",
        manual="the audio is fetched by the dataset's own script from Beatport: clone the repository and run "
               "audio_dl.sh, then copy it to the folder below",
        size="1.5 GB",
    ),
    Dataset(
        "magnatagatune", "MagnaTagATune (25,863 clips, 188 tags)", ("tagging",),
        "annotations_final.csv next to the mp3 folders 0/ ... f/",
        "CC BY-NC-SA 1.0 (Magnatune)", "https://mirg.city.ac.uk/codeapps/the-magnatagatune-dataset",
        # no published checksum: the MIRG page gives none, and neither TensorFlow Datasets nor torchaudio has these
        files=(
            RemoteFile("https://mirg.city.ac.uk/datasets/magnatagatune/mp3.zip.001", unpack="part"),
            RemoteFile("https://mirg.city.ac.uk/datasets/magnatagatune/mp3.zip.002", unpack="part"),
            RemoteFile("https://mirg.city.ac.uk/datasets/magnatagatune/mp3.zip.003", unpack="zip-parts"),
            RemoteFile("https://mirg.city.ac.uk/datasets/magnatagatune/annotations_final.csv", unpack="file"),
        ),
        size="3.0 GB",
    ),
    Dataset(
        "emodb", "Berlin Database of Emotional Speech (535 utterances, 10 speakers)", ("emotion",),
        "wav/<speaker><text><emotion><version>.wav (EmoDB file names)",
        "free for research; cite Burkhardt et al. 2005", "http://emodb.bilderbar.info/",
        # no published checksum (the EmoDB site gives none; not in TensorFlow Datasets or torchaudio)
        files=(RemoteFile("http://emodb.bilderbar.info/download/download.zip", unpack="zip"),), size="40 MB",
    ),
    Dataset(
        "ravdess", "RAVDESS speech (1,440 utterances, 24 actors)", ("emotion",),
        "Actor_<nn>/03-01-<emotion>-...wav (RAVDESS file names)",
        "CC BY-NC-SA 4.0", "https://zenodo.org/record/1188976",
        # MD5 that Zenodo publishes for this file on record 1188976 (Zenodo lists MD5 only), as quoted with
        # its size (208,468,073 bytes) by projects that verified their downloads against it
        files=(RemoteFile("https://zenodo.org/record/1188976/files/Audio_Speech_Actors_01-24.zip", unpack="zip",
                          md5="bc696df654c87fed845eb13823edef8a"),),
        size="200 MB",
    ),
    Dataset(
        "crema_d", "CREMA-D (7,442 clips, 91 actors)", ("emotion",),
        "AudioWAV/<actor>_<sentence>_<emotion>_<level>.wav (CREMA-D file names)",
        "Open Database License 1.0", "https://github.com/CheyneyComputerScience/CREMA-D",
        manual="the audio is stored with git LFS: `git lfs clone` the repository, then copy AudioWAV/ to the folder below",
        size="600 MB",
    ),
    Dataset(
        "librispeech", "LibriSpeech train-clean-100, dev-clean and test-clean", ("asr",),
        "LibriSpeech/{train-clean-100,dev-clean,test-clean}/<spk>/<chapter>/*.flac + *.trans.txt",
        "CC BY 4.0", "https://www.openslr.org/12",
        files=tuple(RemoteFile(_LIBRISPEECH + part, _LIBRISPEECH_SHA256[part]) for part in
                    ("train-clean-100.tar.gz", "dev-clean.tar.gz", "test-clean.tar.gz")),
        size="6.9 GB",
    ),
    Dataset(
        "librispeech_small", "LibriSpeech dev-clean and test-clean only (small ASR runs)", ("asr",),
        "LibriSpeech/{dev-clean,test-clean}/<spk>/<chapter>/*.flac + *.trans.txt",
        "CC BY 4.0", "https://www.openslr.org/12",
        files=tuple(RemoteFile(_LIBRISPEECH + part, _LIBRISPEECH_SHA256[part])
                    for part in ("dev-clean.tar.gz", "test-clean.tar.gz")),
        size="680 MB",
        notes=("without a train-* folder the asr task trains on a part of dev-clean",),
    ),
    Dataset(
        "speech_commands", "Speech Commands v0.02 (105,829 one-second words, 35 classes)", ("classify",),
        "<word>/<speaker>_nohash_<n>.wav (class folders)",
        "CC BY 4.0", "https://www.tensorflow.org/datasets/catalog/speech_commands",
        # SHA-256 as pinned by TensorFlow Datasets (tensorflow_datasets/url_checksums/speech_commands.txt, with
        # the size 2428923189 bytes) and by torchaudio (torchaudio/datasets/speechcommands.py, _CHECKSUMS)
        files=(RemoteFile("http://download.tensorflow.org/data/speech_commands_v0.02.tar.gz",
                          "af14739ee7dc311471de98f5f9d2c9191b18aedfe957f4a6ff791c709868ff58"),), size="2.3 GB",
    ),
    Dataset(
        "esc50", "ESC-50 environmental sounds (2,000 clips of 5 s, 50 classes, 5 folds)", ("classify",),
        "audio/*.wav + meta/esc50.csv; manifest.csv (path, label = category, fold) written after unpacking",
        "CC BY-NC 3.0", "https://github.com/karolpiczak/ESC-50",
        # no published checksum: an archive of a branch, which GitHub builds on demand
        files=(RemoteFile("https://github.com/karolpiczak/ESC-50/archive/refs/heads/master.zip", unpack="zip",
                          name="ESC-50-master.zip"),),
        data_path="manifest.csv", prepare="esc50", size="600 MB",
    ),
    Dataset(
        "fsdd", "Free Spoken Digit Dataset (3,000 recordings of digits, 6 speakers)", ("classify", "speaker_id"),
        "recordings/<digit>_<speaker>_<n>.wav; labels.csv (path, label = digit, speaker) written after unpacking",
        "CC BY-SA 4.0", "https://github.com/Jakobovski/free-spoken-digit-dataset",
        # no published checksum for v1.0.10 (TensorFlow Datasets pins only v1.0.9, an older release of 2,500 files)
        files=(RemoteFile("https://github.com/Jakobovski/free-spoken-digit-dataset/archive/refs/tags/v1.0.10.tar.gz",
                          name="free-spoken-digit-dataset-1.0.10.tar.gz"),),
        data_path="labels.csv", prepare="fsdd", size="20 MB",
    ),
)}

#: a task's standard dataset (used when ``downstream`` gets no ``--data``)
TASK_DEFAULTS: dict[str, str] = {
    "classify": "fsdd",
    "speaker_id": "fsdd",
    "asr": "librispeech",
    "emotion": "emodb",
    "genre": "gtzan",
    "key": "giantsteps_key",
    "tagging": "magnatagatune",
}


def data_home() -> Path:
    """``$AUDIOEMBED_DATA``, else ``<user cache dir>/audioembed/data`` (XDG_CACHE_HOME honoured)."""
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        return Path(explicit).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache).expanduser() / "audioembed" / "data"


def get_dataset(name: str) -> Dataset:
    key = name.strip().lower().replace("-", "_")
    if key not in DATASETS:
        raise DatasetError(f"unknown dataset '{name}' (known: {', '.join(DATASETS)}; see `audioembed data list`)")
    return DATASETS[key]


def dataset_folder(dataset: Dataset | str) -> Path:
    dataset = get_dataset(dataset) if isinstance(dataset, str) else dataset
    return data_home() / dataset.name


def default_data_for_task(task: str) -> Path:
    """``--data`` for ``task`` when none is given: its standard dataset under the data home.

    Raises a one-line :class:`DatasetError` that says where it looked, the layout it expects,
    and the command that installs it.
    """
    name = TASK_DEFAULTS.get(task)
    if name is None:
        raise DatasetError(f"task '{task}' has no standard dataset: give --data PATH (a folder or a manifest)")
    dataset = DATASETS[name]
    folder = dataset_folder(dataset)
    target = folder / dataset.data_path
    if not target.exists() or (target.is_dir() and not any(target.iterdir())):
        how = (f"get it with `audioembed data get {dataset.name}`" if dataset.downloadable
               else f"see `audioembed data get {dataset.name}` for how to get it")
        raise DatasetError(
            f"no --data given and the standard dataset of task '{task}' ({dataset.name}) is not in {folder} "
            f"(expected layout: {dataset.layout}; data home: ${ENV_VAR} or {data_home()}); "
            f"{how}, or pass --data PATH"
        )
    return target
