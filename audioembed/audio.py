"""Audio decoding and resampling: every file becomes a mono float32 waveform at the model's rate.

Decoding goes through libsndfile (``soundfile``) and resampling through libsoxr (``soxr``)
only, so that features do not depend on which of several backends happened to be installed.
Files are read and resampled block by block with a streaming resampler, so memory does not
grow with file length and an hour-long recording costs no more than a short one. The number
of output samples is known from the header alone (:func:`resampled_length`), which lets
callers plan windows and frame counts before decoding anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable, Iterator

import numpy as np
import soundfile as sf
import soxr

from .errors import AudioEmbedError
from .messages import printable

#: suffixes (lower case) treated as audio when a folder is searched. ``.mp3`` decodes where
#: the installed libsndfile was built with mpg123 (>= 1.1); elsewhere such a file is reported
#: as an error of its own instead of silently skipped.
AUDIO_EXTENSIONS: tuple[str, ...] = (
    ".wav",
    ".flac",
    ".ogg",
    ".oga",
    ".opus",
    ".mp3",
    ".aif",
    ".aiff",
    ".au",
    ".w64",
    ".caf",
)

#: soxr quality; fixed so that features are reproducible across runs and machines
_QUALITY = "HQ"


class AudioError(AudioEmbedError):
    """Bad or unreadable audio; ``str(err)`` is ``'<path>: <reason>'``.

    Raised per file so that a batch job can report the file and carry on with the rest.
    """

    def __init__(self, path: str, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{printable(self.path)}: {reason}")

    def __reduce__(self):
        # Keep the two-argument constructor working across process boundaries (DataLoader
        # workers, multiprocessing), where exceptions are pickled.
        return (type(self), (self.path, self.reason))


@dataclass(frozen=True)
class AudioInfo:
    """What the header says about a file, before anything is decoded."""

    path: str
    #: source sample rate in Hz
    sample_rate: int
    #: source frames (samples per channel)
    num_samples: int
    channels: int

    @property
    def duration(self) -> float:
        return self.num_samples / self.sample_rate


def _libsndfile_reason(err: Exception) -> str:
    # LibsndfileError's str() repeats the path; its error_string is just the reason.
    reason = getattr(err, "error_string", None) or str(err) or type(err).__name__
    return f"cannot decode ({reason.rstrip('.')})"


def _wav_truncation(path: str) -> str | None:
    """A RIFF/WAVE data chunk that declares more bytes than the file holds.

    libsndfile quietly shortens such a file to what is there, so a WAV cut in half would be
    read as a shorter recording; the header says otherwise, and this reads it.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[8:12] != b"WAVE" or head[:4] not in (b"RIFF", b"RIFX"):
            return None
        order = "little" if head[:4] == b"RIFF" else "big"
        block_align = 0
        pos = 12
        while pos + 8 <= size:
            f.seek(pos)
            chunk = f.read(8)
            chunk_id, chunk_size = chunk[:4], int.from_bytes(chunk[4:8], order)
            if chunk_id == b"fmt ":
                fmt = f.read(min(chunk_size, 16))
                if len(fmt) >= 14:
                    block_align = int.from_bytes(fmt[12:14], order)
            elif chunk_id == b"data":
                if chunk_size in (0, 0xFFFFFFFF):  # streaming writers leave the length open
                    return None
                held = size - (pos + 8)
                if held >= chunk_size:
                    return None
                if block_align > 0:
                    return (f"truncated: the header declares {chunk_size // block_align} frames but the file "
                            f"holds {held // block_align} ({held} of {chunk_size} data bytes)")
                return f"truncated: the data chunk declares {chunk_size} bytes but the file holds {held}"
            pos += 8 + chunk_size + (chunk_size & 1)
    return None


def _ogg_crc_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_OGG_CRC = _ogg_crc_table()
#: the largest Ogg page: 27-byte header, 255 lacing values, 255 segments of 255 bytes
_OGG_MAX_PAGE = 27 + 255 + 255 * 255


def _ogg_page_end(data: bytes, start: int) -> int | None:
    """End offset of a complete Ogg page with a valid checksum at ``start``, else None."""
    if len(data) < start + 27 or data[start + 4] != 0:
        return None
    segments = data[start + 26]
    body = start + 27 + segments
    if len(data) < body:
        return None
    end = body + sum(data[start + 27 : body])
    if len(data) < end:
        return None
    crc = 0
    page = data[start : start + 22] + b"\0\0\0\0" + data[start + 26 : end]
    for byte in page:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ _OGG_CRC[(crc >> 24) ^ byte]
    return end if crc == int.from_bytes(data[start + 22 : start + 26], "little") else None


def _ogg_truncation(path: str) -> str | None:
    """An Ogg stream that stops before its end-of-stream page.

    libsndfile sizes an Ogg file by the last page it finds, so a cut file reads as a
    shorter one. A complete stream ends with a page flagged end-of-stream; a cut one ends
    with a partial page or a page without that flag.
    """
    size = os.path.getsize(path)
    base = max(0, size - 2 * _OGG_MAX_PAGE)  # holds the last complete page even if a cut one follows
    with open(path, "rb") as f:
        f.seek(base)
        data = f.read()
    start = data.rfind(b"OggS")
    while start >= 0:
        end = _ogg_page_end(data, start)
        if end is not None:  # the last complete page (a checksum rules out "OggS" inside audio data)
            if end < len(data) and b"OggS".startswith(data[end : end + 4]):
                return f"truncated: the Ogg stream breaks off in a page at byte {base + end} of {size}"
            if not data[start + 5] & 0x04:
                return "truncated: the Ogg stream ends without its end-of-stream page"
            return None
        start = data.rfind(b"OggS", 0, start)
    return None


def probe(path: str | os.PathLike) -> AudioInfo:
    """Read the header of ``path`` (no samples are decoded).

    Raises :class:`AudioError` for a missing, unreadable or corrupt file, for a file
    without samples (nothing downstream can make sense of an empty waveform), and for a
    WAV or Ogg file cut short (libsndfile would read it as a shorter recording).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise AudioError(path, "file not found")
    if os.path.isdir(path):
        raise AudioError(path, "is a directory, not an audio file")
    if not os.access(path, os.R_OK):
        raise AudioError(path, "permission denied")
    try:
        info = sf.info(path)
    except Exception as err:  # libsndfile reports every decoder problem its own way
        raise AudioError(path, _libsndfile_reason(err)) from err
    if info.samplerate <= 0 or info.channels <= 0:
        raise AudioError(
            path, f"invalid header (sample rate {info.samplerate}, {info.channels} channels)"
        )
    if info.frames <= 0:
        raise AudioError(path, "empty file (0 samples)")
    try:
        truncation = {"WAV": _wav_truncation, "WAVEX": _wav_truncation, "OGG": _ogg_truncation}.get(info.format)
        problem = truncation(path) if truncation else None
    except OSError as err:
        raise AudioError(path, f"cannot read ({err.strerror or err})") from None
    if problem:
        raise AudioError(path, problem)
    return AudioInfo(
        path=path,
        sample_rate=int(info.samplerate),
        num_samples=int(info.frames),
        channels=int(info.channels),
    )


def check_rate(target_sr: int) -> int:
    """``target_sr`` as an int; ``ValueError`` unless it is a positive integer."""
    if isinstance(target_sr, bool) or int(target_sr) != target_sr or target_sr <= 0:
        raise ValueError(f"target sample rate must be a positive integer, got {target_sr!r}")
    return int(target_sr)


def resampled_length(num_samples: int, src_sr: int, dst_sr: int) -> int:
    """Exact number of samples :func:`stream`/:func:`load` produce for ``num_samples`` input.

    libsoxr, once flushed, emits ``round(num_samples * dst_sr / src_sr)`` samples with halves
    rounded up, independently of how the input was chunked (checked against soxr over many
    lengths and rate pairs in ``tests/test_audio.py``). Integer arithmetic keeps this exact for
    any length.
    """
    if num_samples < 0:
        raise ValueError(f"num_samples must be >= 0, got {num_samples}")
    if src_sr <= 0 or dst_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {src_sr} and {dst_sr}")
    if src_sr == dst_sr:
        return int(num_samples)
    return (2 * int(num_samples) * int(dst_sr) + int(src_sr)) // (2 * int(src_sr))


def _mono(block: np.ndarray) -> np.ndarray:
    # block is (frames, channels); averaging (not summing) keeps the level of a mono
    # signal duplicated on all channels unchanged.
    if block.shape[1] == 1:
        return np.ascontiguousarray(block[:, 0])
    return block.mean(axis=1, dtype=np.float32)


def _blocks(info: AudioInfo, target_sr: int, block_frames: int) -> Iterator[np.ndarray]:
    path = info.path
    resampler = (
        None
        if info.sample_rate == target_sr
        else soxr.ResampleStream(info.sample_rate, target_sr, 1, dtype="float32", quality=_QUALITY)
    )
    remaining = info.num_samples
    opened = False
    try:
        with sf.SoundFile(path) as f:
            opened = True
            while remaining > 0:
                want = min(block_frames, remaining)
                raw = f.read(want, dtype="float32", always_2d=True)
                got = raw.shape[0]
                if got and not np.isfinite(raw).all():
                    raise AudioError(path, "contains NaN or Inf samples")
                remaining -= got
                if got < want:
                    # The header promised more: yielding fewer samples would break the
                    # length every caller planned with, so this is an error, not an EOF.
                    raise AudioError(
                        path,
                        f"truncated: header declares {info.num_samples} frames but only "
                        f"{info.num_samples - remaining} could be decoded",
                    )
                mono = _mono(raw)
                out = mono if resampler is None else resampler.resample_chunk(mono, last=False)
                if out.size:
                    yield out
    except (AudioError, MemoryError):
        raise
    except Exception as err:
        if opened:  # the header was fine, the data is not: e.g. a FLAC file cut short loses sync
            reason = getattr(err, "error_string", None) or str(err) or type(err).__name__
            raise AudioError(
                path,
                f"truncated or damaged: decoding failed after frame {info.num_samples - remaining} of the "
                f"{info.num_samples} the header declares ({reason.rstrip('.')})",
            ) from err
        raise AudioError(path, _libsndfile_reason(err)) from err
    if resampler is not None:
        tail = resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
        if tail.size:
            yield tail


def stream(
    path: str | os.PathLike | AudioInfo, target_sr: int, block_seconds: float = 10.0
) -> Iterator[np.ndarray]:
    """Yield consecutive 1-D float32 mono blocks of ``path`` resampled to ``target_sr``.

    The header is checked when this is called (so a missing or corrupt file fails here, not
    at the first ``next``); samples are decoded lazily, ``block_seconds`` of source audio at
    a time. Block size never changes the result: concatenating the blocks gives exactly
    :func:`load`'s array, of length :func:`resampled_length`. ``path`` may be the
    :class:`AudioInfo` :func:`probe` returned, so a caller that already checked the header
    does not read it twice (decoding still fails if the file no longer matches it).
    """
    target_sr = check_rate(target_sr)
    if not block_seconds > 0:
        raise ValueError(f"block_seconds must be > 0, got {block_seconds!r}")
    info = path if isinstance(path, AudioInfo) else probe(path)
    block_frames = max(1, int(round(block_seconds * info.sample_rate)))
    return _blocks(info, target_sr, block_frames)


def load(path: str | os.PathLike, target_sr: int) -> np.ndarray:
    """The whole file as one mono float32 array at ``target_sr`` (same samples as :func:`stream`)."""
    blocks = list(stream(path, target_sr))
    if not blocks:  # a few source samples can round to zero output samples
        return np.zeros(0, dtype=np.float32)
    return np.concatenate(blocks)


def decode_segment(
    path: str | os.PathLike, start: int, count: int, source_rate: int, rates: Iterable[int]
) -> dict[int, np.ndarray]:
    """Frames ``start .. start + count`` of ``path`` (source rate ``source_rate``), mono
    float32, at each rate in ``rates``: ``{rate: samples}``.

    Why: training reads short crops of long files many times, so only the segment is
    decoded. Each segment is resampled exactly as :func:`load` resamples a file holding just
    that segment (libsoxr, same quality, one chunk + flush), so it has
    :func:`resampled_length` samples. Raises :class:`AudioError` naming the file when the
    segment cannot be decoded, is shorter than asked, or holds NaN/Inf samples.
    """
    path = os.fspath(path)
    wanted = sorted({check_rate(r) for r in rates})
    try:
        raw = sf.read(path, frames=count, start=start, dtype="float32", always_2d=True)[0]
    except Exception as err:  # libsndfile reports every decoder problem its own way
        if not os.path.exists(path):
            raise AudioError(path, "file not found") from err
        raise AudioError(path, _libsndfile_reason(err)) from err
    if raw.shape[0] != count:
        raise AudioError(
            path, f"truncated: frames {start}..{start + count} were planned but only {raw.shape[0]} could be decoded"
        )
    if not np.isfinite(raw).all():
        raise AudioError(path, "contains NaN or Inf samples")
    mono = _mono(raw)
    out: dict[int, np.ndarray] = {}
    for rate in wanted:
        try:
            out[rate] = resample(mono, source_rate, rate)
        except Exception as err:
            raise AudioError(path, f"cannot resample {source_rate} -> {rate} Hz ({err})") from err
    return out


def resample(samples: np.ndarray, source_rate: int, rate: int) -> np.ndarray:
    """A 1-D signal resampled exactly as :func:`load` resamples a file holding just it.

    libsoxr, same quality, one chunk + flush; the result is float32 with
    :func:`resampled_length` samples (the input itself, as float32, when the rates agree).
    """
    mono = np.ascontiguousarray(samples, dtype=np.float32)
    if rate == source_rate:
        return mono
    resampler = soxr.ResampleStream(source_rate, rate, 1, dtype="float32", quality=_QUALITY)
    y = resampler.resample_chunk(mono, last=True)
    expected = resampled_length(len(mono), source_rate, rate)
    if y.shape[0] != expected:  # never seen; keeps planned frame counts honest if soxr changes
        y = np.pad(y, (0, expected - y.shape[0])) if y.shape[0] < expected else y[:expected]
    return np.ascontiguousarray(y, dtype=np.float32)
