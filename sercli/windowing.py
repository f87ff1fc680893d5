"""Signals -> model windows: fixed-size windows of log-mel frames (3 s, half a window apart by
default), each normalised on its own (:func:`~sercli.features.normalize_window`), computed
block by block (:class:`WindowStream`) so memory does not grow with a file's length; and the
same windows from cached log-mel frames, for training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .features import FeatureParams, level_db, mel_frames, normalize_window

__all__ = ["TRIM_MARGIN", "WindowStream", "Windows", "concat_windows", "trim_bounds", "trim_threshold", "windows", "windows_from_log_mel"]


@dataclass(frozen=True)
class Windows:
    """Model inputs of one signal.

    ``x``: ``(n_windows, n_features, window_frames)``; ``start_s``/``end_s``: ``(n_windows,)``;
    ``silent``: ``(n_windows,)`` bool, windows with no speech energy.
    """

    x: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    silent: np.ndarray


def windows(y: np.ndarray, params: FeatureParams, *, hop_s: float | None = None) -> Windows:
    """Cut a mono signal at ``params.sample_rate`` into normalised model windows.

    Windows are ``params.window_s`` long, ``hop_s`` apart (default: half a window); the
    last one ends at the signal's end, and a signal shorter than one window gives one
    padded window. The same as feeding ``y`` to a :class:`WindowStream` in any blocks.
    """
    stream = WindowStream(params, hop_s=hop_s)
    return concat_windows([stream.feed(y), stream.finish()], params)


def concat_windows(parts: list[Windows], params: FeatureParams) -> Windows:
    """One :class:`Windows` from several, in order."""
    parts = [w for w in parts if len(w.x)] or parts[:1]
    return Windows(x=np.concatenate([w.x for w in parts]), start_s=np.concatenate([w.start_s for w in parts]),
                   end_s=np.concatenate([w.end_s for w in parts]), silent=np.concatenate([w.silent for w in parts]))


#: Frames of context kept before the first and after the last speech frame when trimming (80 ms).
TRIM_MARGIN = 5


#: Trimming never treats frames louder than this (dBFS) as non-speech.
_TRIM_ABS_DB = -60.0


#: Longest run of quiet frames a stream holds back as possible trailing non-speech (60 s).
_MAX_HELD = 3750


def trim_threshold(level_db: np.ndarray, params: FeatureParams) -> float:
    """Frames at or below this level (dBFS) count as leading/trailing non-speech."""
    return max(float(level_db.max()) - params.trim_db, _TRIM_ABS_DB) if len(level_db) else _TRIM_ABS_DB


def trim_bounds(level_db: np.ndarray, params: FeatureParams) -> tuple[int, int]:
    """``(first, end)`` frames of a file's log-mel to keep when ``params.trim_db`` is set
    (all of it otherwise): from :data:`TRIM_MARGIN` frames before the first frame above
    :func:`trim_threshold` to as many after the last.

    >>> p = FeatureParams(trim_db=30)
    >>> trim_bounds(np.array([-90.0] * 10 + [-20.0] * 3 + [-90.0] * 10), p)
    (5, 18)
    """
    n = len(level_db)
    if params.trim_db is None or n == 0:
        return 0, n
    loud = np.flatnonzero(level_db > trim_threshold(level_db, params))
    if len(loud) == 0:
        return 0, n
    return max(0, int(loud[0]) - TRIM_MARGIN), min(n, int(loud[-1]) + 1 + TRIM_MARGIN)


def _hop_frames(params: FeatureParams, hop_s: float | None) -> int:
    return max(1, int(round((hop_s if hop_s is not None else params.window_s / 2)
                            * params.sample_rate / params.hop_length)))


class WindowStream:
    """The windows of a signal that arrives block by block, with memory independent of its length.

    ``feed(block)`` returns the windows that are complete so far, ``finish()`` the rest;
    together they are exactly :func:`windows` of the whole signal. Only the samples of
    one unfinished frame and the log-mel frames of one unfinished window are kept.
    ``shift``: ``(n_mels,)`` dB added to every log-mel frame before a window is normalised
    (corpus adaptation, :mod:`sercli.adaptation`).
    """

    def __init__(self, params: FeatureParams, *, hop_s: float | None = None, offset_s: float = 0.0,
                 shift: Sequence[float] | np.ndarray | None = None) -> None:
        self.params = params
        if shift is not None and len(shift) != params.n_mels:
            raise ValueError(f"the shift has {len(shift)} bands; the features have {params.n_mels}.")
        self._shift = None if shift is None else np.asarray(shift, np.float32)[:, None]  # (n_mels, 1)
        self.offset_s = offset_s  # time of the first sample in the file (a speech region's start)
        self.hop_frames = _hop_frames(params, hop_s)
        self._samples = np.zeros(params.n_fft // 2, np.float32)  # the zeros centring adds before the start
        self._mel = np.zeros((params.n_mels, 0), np.float32)
        self._level = np.zeros(0, np.float32)
        self._first = 0  # frame index of self._mel[:, 0]
        self._next = 0  # first frame of the next window on the hop grid
        self._emitted_end = 0  # end frame of the last window emitted
        self.n_samples = 0
        # trimming (params.trim_db): frames are counted from self._origin, the first frame kept;
        # frames that may be trailing non-speech wait in self._held until speech follows them
        self._origin = 0
        self._threshold: float | None = None
        self._held = (np.zeros((params.n_mels, 0), np.float32), np.zeros(0, np.float32))
        self._cut_tail = False
        self._heard = False  # any frame above the threshold yet: leading non-speech is over

    def feed(self, y: np.ndarray) -> Windows:
        """Add samples; returns the windows completed by them (possibly none)."""
        self.n_samples += len(y)
        self._samples = np.concatenate([self._samples, np.asarray(y, np.float32)])
        self._frame(len(self._samples))
        return self._emit(final=False)

    def finish(self) -> Windows:
        """The remaining windows, the last one ending at the signal's end."""
        half = self.params.n_fft // 2
        self._samples = np.concatenate([self._samples, np.zeros(half, np.float32)])
        self._frame(len(self._samples), final=True)
        return self._emit(final=True)

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.params.sample_rate

    def _frame(self, available: int, *, final: bool = False) -> None:
        p = self.params
        mel, level = np.zeros((p.n_mels, 0), np.float32), np.zeros(0, np.float32)
        if available >= p.n_fft:
            n = 1 + (available - p.n_fft) // p.hop_length
            used = self._samples[: (n - 1) * p.hop_length + p.n_fft]
            mel, level = mel_frames(used, p)[:, :n], level_db(used, n, p)
            self._samples = self._samples[n * p.hop_length:]
        self._add(mel, level, final=final)

    def _add(self, mel: np.ndarray, level: np.ndarray, *, final: bool) -> None:
        """Take new log-mel frames (shifted, when asked) and their levels (trimming them when asked)."""
        if self._shift is not None:
            mel = mel + self._shift
        if self.params.trim_db is not None:
            mel, level = self._trim(mel, level, final=final)
        self._mel = np.concatenate([self._mel, mel], axis=1)
        self._level = np.concatenate([self._level, level])

    def _trim(self, mel: np.ndarray, level: np.ndarray, *, final: bool) -> tuple[np.ndarray, np.ndarray]:
        """The frames to keep now: leading non-speech is dropped (but :data:`TRIM_MARGIN` frames),
        possible trailing non-speech is held back until speech follows, and dropped at the end.
        The same frames as :func:`trim_bounds` on the whole file when its first block holds its
        loudest frame."""
        if self._threshold is None and len(level):
            self._threshold = trim_threshold(level, self.params)
        mel = np.concatenate([self._held[0], mel], axis=1)
        level = np.concatenate([self._held[1], level])
        loud = np.flatnonzero(level > self._threshold) if self._threshold is not None else np.zeros(0, int)
        if not self._heard:
            if len(loud) == 0 and not final:
                skip = max(0, len(level) - TRIM_MARGIN)
                self._origin += skip
                self._held = (mel[:, skip:], level[skip:])
                return mel[:, :0], level[:0]
            skip = max(0, int(loud[0]) - TRIM_MARGIN) if len(loud) else 0
            self._origin += skip
            mel, level, loud = mel[:, skip:], level[skip:], loud - skip
        if final:
            if len(loud):
                cut = min(len(level), int(loud[-1]) + 1 + TRIM_MARGIN)
            else:  # the context after speech released earlier; a file with no speech frame at all is kept
                cut = min(len(level), TRIM_MARGIN) if self._heard else len(level)
            self._cut_tail = cut < len(level)
        else:
            cut = int(loud[-1]) + 1 if len(loud) else 0
            cut = max(cut, len(level) - _MAX_HELD)  # a long pause is released, not held for ever
        self._heard = self._heard or bool(len(loud))
        self._held = (mel[:, cut:], level[cut:])
        return mel[:, :cut], level[:cut]

    def _emit(self, *, final: bool) -> Windows:
        wf = self.params.window_frames
        have = self._first + self._mel.shape[1]  # frames computed so far
        starts = []
        while self._next + wf <= have:
            starts.append(self._next)
            self._next += self.hop_frames
        if final:
            n_frames = have  # == 1 + n_samples // hop_length
            if n_frames <= wf:
                starts = [0] if self._emitted_end == 0 and not starts else starts
            elif (starts[-1] if starts else self._emitted_end - wf) + wf < n_frames:
                starts.append(n_frames - wf)
        out = self._windows(starts)
        if starts:
            self._emitted_end = starts[-1] + wf
        # keep what the next grid window, or an end-aligned last window, may still need
        keep_from = have if final else max(0, min(self._next, have - wf))
        drop = max(0, keep_from - self._first)
        self._mel, self._level, self._first = self._mel[:, drop:], self._level[drop:], self._first + drop
        return out

    def _windows(self, starts: list[int]) -> Windows:
        p, wf = self.params, self.params.window_frames
        if not starts:
            return Windows(np.zeros((0, p.n_features, wf), np.float32), np.zeros(0), np.zeros(0), np.zeros(0, bool))
        local = [s - self._first for s in starts]
        x = np.stack([normalize_window(self._mel[:, s: s + wf], p) for s in local])
        silent = np.array([self._level[s: s + wf].max() < p.silence_db for s in local])
        start_s = (self._origin + np.array(starts, dtype=np.float64)) * p.hop_length / p.sample_rate
        limit = self.duration_s
        if self._origin or self._cut_tail:  # trimmed: windows end where the kept frames end
            kept_end = self._origin + self._first + self._mel.shape[1]
            limit = min(limit, kept_end * p.hop_length / p.sample_rate)
        end_s = np.minimum(start_s + p.window_s, limit) + self.offset_s
        start_s = start_s + self.offset_s
        return Windows(x=x, start_s=start_s, end_s=end_s, silent=silent)


def windows_from_log_mel(
    log_mel_db: np.ndarray,
    level_db: np.ndarray,
    params: FeatureParams,
    *,
    duration_s: float,
    hop_s: float | None = None,
) -> Windows:
    """:func:`windows` from a precomputed :func:`~sercli.features.log_mel` and
    :func:`~sercli.features.frame_db` (training's cache), cut by the same :class:`WindowStream` code."""
    stream = WindowStream(params, hop_s=hop_s)
    stream.n_samples = int(round(duration_s * params.sample_rate))
    stream._add(np.asarray(log_mel_db, np.float32), np.asarray(level_db, np.float32), final=True)
    return stream._emit(final=True)
