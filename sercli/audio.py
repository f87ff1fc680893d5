"""Audio decoding: any file soundfile (or ffmpeg) can read -> mono float32 at one rate.

Decoding streams the file in blocks, mixes every block to mono and resamples it with
soxr, so memory stays proportional to the *mono, resampled* signal, never to the
original channels or rate.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = [
    "AUDIO_EXTENSIONS",
    "FFMPEG_EXTENSIONS",
    "Audio",
    "DecodeError",
    "ArrayAudio",
    "AudioStream",
    "decode",
    "open_audio",
]

#: Extensions read by libsndfile (through ``soundfile``).
SNDFILE_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".opus", ".mp3", ".aiff", ".aif"})
#: Extensions read through an installed ``ffmpeg`` binary.
FFMPEG_EXTENSIONS = frozenset({".m4a", ".aac", ".webm", ".wma"})
#: Every extension that ``sercli`` treats as audio (compare lower-cased).
AUDIO_EXTENSIONS = SNDFILE_EXTENSIONS | FFMPEG_EXTENSIONS

_BLOCK_FRAMES = 1 << 20  # frames read per block (about 20 s at 48 kHz)


class DecodeError(Exception):
    """A file that cannot be decoded; ``status`` is a short machine-readable reason."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Audio:
    """A decoded file: ``samples`` has shape ``(n,)`` at ``sample_rate`` (the target rate).

    ``source_rate`` and ``channels`` describe the original file.
    """

    samples: np.ndarray
    sample_rate: int
    source_rate: int
    channels: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / self.sample_rate


def decode(path: str | Path, *, sample_rate: int, max_duration_s: float | None = None) -> Audio:
    """Decode ``path`` to mono float32 at ``sample_rate``.

    Raises :class:`DecodeError` with a one-sentence message for every failure:
    missing, empty, unreadable, unsupported or corrupt files, files longer than
    ``max_duration_s`` and files with NaN/inf samples.
    """
    stream = open_audio(path, sample_rate=sample_rate, max_duration_s=max_duration_s)
    parts = list(stream.blocks())
    samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
    return Audio(samples, sample_rate, stream.source_rate, stream.channels)


def read_span(path: str | Path, start_s: float | None = None, end_s: float | None = None, *,
              sample_rate: int = 16000) -> tuple[np.ndarray, int]:
    """``(samples (n,), sample_rate)``: mono float32 of ``path`` from ``start_s`` to ``end_s``
    (the whole file when they are ``None``). Decoding starts at ``start_s`` (a seek, not a
    decode from the start) and stops at ``end_s``, so a minute near the end of a 4-hour file
    costs a minute's time and memory. The samples are those of a decode from the start (the
    seek lands on a sample both rates share): exactly for WAV, FLAC, Ogg, Opus and MP3, within
    0.02 for AAC (m4a); ffmpeg's seek in WebM starts up to ~8 ms early. A span past the end is
    empty. Raises :class:`DecodeError`."""
    offset_s = max(start_s or 0.0, 0.0)
    todo = None if end_s is None else max(int(round((end_s - offset_s) * sample_rate)), 0)
    parts, seen = [], 0
    for block in open_audio(path, sample_rate=sample_rate, block_s=10.0, offset_s=offset_s).blocks():
        parts.append(block if todo is None else block[: max(todo - seen, 0)])
        seen += len(block)
        if todo is not None and seen >= todo:
            break
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), sample_rate


def _finite(y: np.ndarray) -> np.ndarray:
    """``y``, or :class:`DecodeError` ``invalid_samples`` if it holds NaN or infinite values."""
    if not np.isfinite(y).all():
        raise DecodeError("invalid_samples", "The audio contains NaN or infinite sample values.")
    return y


@dataclass
class AudioStream:
    """A file opened for decoding block by block: :meth:`blocks` yields mono float32 blocks at
    ``sample_rate`` (about ``block_s`` seconds each), so memory does not depend on the file's length.

    ``source_rate``, ``channels`` and ``frames`` (0 when unknown) describe the original file.
    ``offset_s`` seconds at the start are skipped by seeking. Errors met while reading raise
    :class:`DecodeError`.
    """

    path: Path
    sample_rate: int
    source_rate: int
    channels: int
    frames: int
    max_duration_s: float | None = None
    block_s: float = 60.0
    offset_s: float = 0.0

    def blocks(self) -> Iterator[np.ndarray]:
        seek_s, skip = _aligned_seek(self.offset_s, self.source_rate, self.sample_rate)
        if self.path.suffix.lower() in FFMPEG_EXTENSIONS:
            raw = _ffmpeg_blocks(self.path, self.sample_rate, self.max_duration_s, self.block_s, seek_s)
        else:
            raw = _sndfile_blocks(self, seek_s)
        for block in raw:
            if skip:
                block, skip = block[skip:], max(skip - len(block), 0)
            yield _finite(block)


def _aligned_seek(offset_s: float, source_rate: int, sample_rate: int) -> tuple[float, int]:
    """``(seek_s, skip)``: where to seek so that the resampled samples fall on the grid of a
    decode from the start (a source sample that is also an output sample), and how many output
    samples to drop after it to reach ``offset_s``."""
    if offset_s <= 0:
        return 0.0, 0
    first = int(round(offset_s * sample_rate))
    step = sample_rate // math.gcd(source_rate, sample_rate)  # output samples between shared grid points
    return first // step * step / sample_rate, first % step


@dataclass
class ArrayAudio:
    """In-memory audio as a source for the pipeline: ``samples`` ``(n,)`` or ``(n, channels)``
    at ``source_rate``; :meth:`blocks` yields it mono, resampled to ``sample_rate``."""

    samples: np.ndarray
    source_rate: int
    sample_rate: int
    name: str = "<array>"
    block_s: float = 60.0

    @property
    def channels(self) -> int:
        return 1 if np.ndim(self.samples) == 1 else int(np.shape(self.samples)[1])

    def blocks(self) -> Iterator[np.ndarray]:
        import soxr

        y = np.asarray(self.samples, dtype=np.float32)
        if y.ndim == 2:
            y = y.mean(axis=1, dtype=np.float32)
        y = _finite(y)
        if self.source_rate != self.sample_rate:
            y = soxr.resample(y, self.source_rate, self.sample_rate, quality="HQ").astype(np.float32)
        step = max(1024, int(self.block_s * self.sample_rate))
        for i in range(0, len(y), step):
            yield y[i:i + step]


def open_audio(path: str | Path, *, sample_rate: int, max_duration_s: float | None = None,
               block_s: float = 60.0, offset_s: float = 0.0) -> AudioStream:
    """Check ``path`` and read its header; see :class:`AudioStream`. Raises :class:`DecodeError`."""
    path = Path(path)
    _check_readable(path)
    if path.suffix.lower() in FFMPEG_EXTENSIONS:
        if shutil.which("ffmpeg") is None:
            raise DecodeError("unsupported", f"Reading {path.suffix.lower()} files needs ffmpeg, which is not installed.")
        source_rate, channels = _ffprobe_format(path)
        return AudioStream(path, sample_rate, source_rate or sample_rate, channels or 1, 0, max_duration_s, block_s,
                           offset_s)
    import soundfile as sf

    try:
        info = sf.info(os.fsencode(path))  # bytes: names need not be UTF-8
    except (sf.LibsndfileError, RuntimeError, ValueError, EOFError) as exc:
        raise DecodeError("corrupt", _sndfile_message(exc)) from None
    source_rate, channels, frames = int(info.samplerate), int(info.channels), int(info.frames)
    if source_rate <= 0 or channels <= 0:
        raise DecodeError("corrupt", "The file header declares no sample rate or no channels.")
    if max_duration_s is not None and frames > max_duration_s * source_rate:
        raise DecodeError("too_long", f"The file is {frames / source_rate:.0f} s long, over the "
                          f"{max_duration_s:.0f} s limit.")
    return AudioStream(path, sample_rate, source_rate, channels, frames, max_duration_s, block_s, offset_s)


def _check_readable(path: Path) -> None:
    if path.is_symlink() and not path.exists():
        raise DecodeError("missing", "The file is a symbolic link whose target does not exist.")
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise DecodeError("missing", "The path does not exist.") from None
    except OSError as exc:
        raise DecodeError("unreadable", f"The file cannot be accessed ({exc.strerror}).") from None
    if path.is_dir():
        raise DecodeError("unreadable", "The path is a directory, not an audio file.")
    if size == 0:
        raise DecodeError("empty", "The file is empty (0 bytes).")
    try:
        with open(path, "rb") as fh:
            fh.read(1)
    except PermissionError:
        raise DecodeError("unreadable", "The file cannot be read (permission denied).") from None
    except OSError as exc:
        raise DecodeError("unreadable", f"The file cannot be read ({exc.strerror}).") from None


def _sndfile_blocks(stream: AudioStream, seek_s: float = 0.0) -> Iterator[np.ndarray]:
    import soundfile as sf
    import soxr

    block_frames = max(1024, int(stream.block_s * stream.source_rate))
    try:
        with sf.SoundFile(os.fsencode(stream.path)) as fh:
            if seek_s > 0:
                fh.seek(min(int(round(seek_s * stream.source_rate)), stream.frames))
            resampler = None
            if stream.source_rate != stream.sample_rate:
                resampler = soxr.ResampleStream(stream.source_rate, stream.sample_rate, 1, dtype="float32",
                                                quality="HQ")
            while True:
                block = fh.read(block_frames, dtype="float32", always_2d=True)
                last = len(block) < block_frames
                mono = block.mean(axis=1, dtype=np.float32) if stream.channels > 1 else block[:, 0]
                if resampler is not None:
                    mono = resampler.resample_chunk(mono, last=last)
                yield np.ascontiguousarray(mono, dtype=np.float32)
                if last:
                    break
    except DecodeError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, EOFError) as exc:
        raise DecodeError("corrupt", _sndfile_message(exc)) from None


def _sndfile_message(exc: Exception) -> str:
    text = str(exc).lower()
    if "format not recognised" in text or "unknown format" in text:
        return "The file is not in a recognised audio format (corrupt, or not audio)."
    if "unsupported" in text:
        return "The file uses an unsupported audio encoding."
    return "The audio data is corrupt or truncated and could not be decoded."


def _ffmpeg_blocks(path: Path, sample_rate: int, max_duration_s: float | None, block_s: float,
                   offset_s: float = 0.0) -> Iterator[np.ndarray]:
    """ffmpeg decodes to 32-bit float mono at ``sample_rate`` on a pipe, read block by block
    (from ``offset_s``: an input seek)."""
    cmd = [shutil.which("ffmpeg") or "ffmpeg", "-nostdin", "-v", "error"]
    if offset_s > 0:
        cmd += ["-ss", f"{offset_s:.6f}"]
    cmd += ["-i", str(path)]
    if max_duration_s is not None:
        cmd += ["-t", str(max_duration_s + 1)]
    cmd += ["-f", "f32le", "-ac", "1", "-ar", str(sample_rate), "-"]
    block_bytes = 4 * max(1024, int(block_s * sample_rate))
    total = 0
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL) as proc:
        try:
            while True:
                data = proc.stdout.read(block_bytes)
                if not data:
                    break
                total += len(data) // 4
                if max_duration_s is not None and total > max_duration_s * sample_rate:
                    raise DecodeError("too_long", f"The file is over the {max_duration_s:.0f} s limit.")
                yield np.frombuffer(data[: len(data) // 4 * 4], dtype="<f4").copy()
            proc.wait()
        finally:
            if proc.poll() is None:  # stopped early: by an error, or by the reader
                proc.kill()
                proc.wait()
    if proc.returncode != 0 or (total == 0 and offset_s == 0):  # past the end, a seek gives nothing
        raise DecodeError("corrupt", "ffmpeg could not decode the file (corrupt, or not audio).")


def _ffprobe_format(path: Path) -> tuple[int, int]:
    ffprobe = shutil.which("ffprobe")
    if ffprobe is None:
        return 0, 0
    proc = subprocess.run(
        [ffprobe, "-v", "error", "-select_streams", "a:0", "-show_entries",
         "stream=sample_rate,channels", "-of", "csv=p=0", str(path)],
        capture_output=True, text=True, check=False,
    )
    try:
        rate, channels = proc.stdout.strip().split(",")[:2]
        return int(rate), int(channels)
    except ValueError:
        return 0, 0
