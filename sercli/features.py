"""Audio -> model input: the one implementation used by training and by ``annotate``.

A signal becomes a log-mel spectrogram (:func:`log_mel`), cut into fixed-size
windows, each normalised on its own and turned into the model's features, log-mel
or MFCCs (:func:`normalize_window`, :func:`from_log_mel`). Training caches :func:`log_mel` output and calls the same
:func:`from_log_mel` and :func:`normalize_window`, so a shipped model sees at
inference exactly what it saw in training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Literal, Sequence

import numpy as np

__all__ = [
    "FeatureParams",
    "WindowStream",
    "Windows",
    "concat_windows",
    "trim_bounds",
    "whisper_params",
    "frame_db",
    "from_log_mel",
    "log_mel",
    "mel_filters",
    "mel_frequencies",
    "normalize_window",
    "windows",
    "windows_from_log_mel",
]

_AMIN = 1e-10
_FRAMES_PER_BLOCK = 256


@dataclass(frozen=True)
class FeatureParams:
    """Everything that defines a model's input; saved next to the model weights."""

    #: "mel" / "mfcc": the CNNs' features; "whisper": Whisper's own log-mel front end
    #: (:func:`whisper_params`: 80 bands, 25 ms / 10 ms, log10, clamped at the maximum minus 8)
    kind: Literal["mel", "mfcc", "whisper"] = "mfcc"
    sample_rate: int = 16000
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 64
    n_mfcc: int = 40
    fmin: float = 50.0
    fmax: float = 8000.0
    window_s: float = 3.0
    #: frames below this RMS level (dBFS) are "silent"; a window whose loudest frame is
    #: below it carries no speech energy and is skipped when aggregating.
    silence_db: float = -55.0
    #: if set, each window's log-mel is floored this many dB below its loudest bin, so digital
    #: silence and studio noise floors look alike (dynamic range, not the floor, carries emotion)
    floor_db: float | None = None
    #: if set, leading and trailing frames quieter than this many dB below the loudest frame
    #: (of the first minute) are dropped, keeping ``TRIM_MARGIN`` frames of context
    trim_db: float | None = None

    @property
    def n_features(self) -> int:
        """Rows of the model input: mel bands or MFCC coefficients."""
        return self.n_mfcc if self.kind == "mfcc" else self.n_mels

    @property
    def window_frames(self) -> int:
        """Columns of the model input (frames per window); Whisper drops the last STFT frame."""
        return (self.kind != "whisper") + int(round(self.window_s * self.sample_rate)) // self.hop_length

    @property
    def min_samples(self) -> int:
        """Shortest signal that can be classified: a quarter of a second."""
        return self.sample_rate // 4

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FeatureParams:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def whisper_params(**overrides) -> FeatureParams:
    """Whisper's front end: 16 kHz, 400-sample Hann frames every 160 samples, 80 Slaney mel bands
    from 0 to 8 kHz (``librosa.filters.mel(sr=16000, n_fft=400, n_mels=80)``), 3 s windows of
    300 frames (the encoder turns them into 150 steps)."""
    return FeatureParams(**{"kind": "whisper", "n_fft": 400, "hop_length": 160, "n_mels": 80,
                            "fmin": 0.0, "fmax": 8000.0, **overrides})


def log_mel(y: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Log-mel power spectrogram in dB, shape ``(n_mels, 1 + len(y) // hop_length)``.

    Frames are centred (zeros beyond both ends), as ``librosa.feature.melspectrogram``
    frames them; a test checks the two agree.
    """
    return _mel_frames(_centred(y, params), params)


def _centred(y: np.ndarray, params: FeatureParams) -> np.ndarray:
    """``y`` with half a frame of zeros before and after, so frame ``t`` is centred on sample ``t * hop``."""
    half = np.zeros(params.n_fft // 2, np.float32)
    return np.concatenate([half, np.asarray(y, np.float32), half])


def _mel_frames(padded: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Log-mel (dB) of an already padded signal, frame ``t`` being ``padded[t * hop : t * hop + n_fft]``.

    NumPy/SciPy only: importing librosa costs about 2 s in every worker process (its numba
    code), and its first use after an install compiles for 7-19 s.
    """
    import scipy.fft

    n = 1 + (len(padded) - params.n_fft) // params.hop_length if len(padded) >= params.n_fft else 0
    if n == 0:
        return np.zeros((params.n_mels, 0), np.float32)
    frames = np.lib.stride_tricks.sliding_window_view(padded, params.n_fft)[:: params.hop_length][:n]
    window, filters = _hann(params.n_fft), mel_filters(params)
    out = np.empty((params.n_mels, n), np.float32)
    for i in range(0, n, _FRAMES_PER_BLOCK):  # blocks that stay in cache
        spec = scipy.fft.rfft(frames[i:i + _FRAMES_PER_BLOCK] * window, axis=1)
        power = np.square(spec.real) + np.square(spec.imag)
        out[:, i:i + _FRAMES_PER_BLOCK] = filters @ power.T
    return 10.0 * np.log10(np.maximum(out, _AMIN, out=out), out=out)


@lru_cache(maxsize=4)
def _hann(n: int) -> np.ndarray:
    """Periodic Hann window (the STFT convention)."""
    return (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n)).astype(np.float32)


def _hz_to_mel(hz) -> np.ndarray:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above (librosa's default)."""
    hz = np.asarray(hz, dtype=np.float64)
    log = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log, hz / (200.0 / 3))


def _mel_to_hz(mel) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    return np.where(mel >= 15.0, 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0)), mel * (200.0 / 3))


def mel_frequencies(params: FeatureParams) -> np.ndarray:
    """Edges and centres of the mel bands in Hz, shape ``(n_mels + 2,)``."""
    return _mel_to_hz(np.linspace(_hz_to_mel(params.fmin), _hz_to_mel(params.fmax), params.n_mels + 2))


@lru_cache(maxsize=8)
def mel_filters(params: FeatureParams) -> np.ndarray:
    """Slaney-normalised triangular mel filters, shape ``(n_mels, 1 + n_fft // 2)``: what
    ``librosa.filters.mel`` gives with its defaults (a test checks it)."""
    edges = mel_frequencies(params)
    fft_hz = np.linspace(0.0, params.sample_rate / 2.0, 1 + params.n_fft // 2)
    ramps = edges[:, None] - fft_hz[None, :]
    width = np.diff(edges)
    weights = np.maximum(0.0, np.minimum(-ramps[:-2] / width[:-1, None], ramps[2:] / width[1:, None]))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


def from_log_mel(log_mel_db: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Model features from a log-mel spectrogram: itself, or ``(n_mfcc, frames)`` MFCCs."""
    if params.kind == "mel":
        return log_mel_db
    import scipy.fft

    return scipy.fft.dct(log_mel_db, axis=0, type=2, norm="ortho")[: params.n_mfcc].astype(np.float32)


def frame_db(y: np.ndarray, params: FeatureParams) -> np.ndarray:
    """RMS level of each frame in dBFS, shape ``(1 + len(y) // hop_length,)``.

    Frames are centred as in :func:`log_mel` (zeros beyond both ends). Computed from a
    cumulative sum of squares, so no frame matrix is built.
    """
    return _level_db(_centred(y, params), 1 + len(y) // params.hop_length, params)


def _level_db(padded: np.ndarray, n_frames: int, params: FeatureParams) -> np.ndarray:
    """RMS dBFS of the first ``n_frames`` frames of an already padded signal (frame ``t`` is
    ``padded[t * hop : t * hop + n_fft]``), from sums of squares over hop-long blocks."""
    hop, n_fft = params.hop_length, params.n_fft
    if n_fft % hop:  # frames that do not tile into hops: a cumulative sum does it
        sq = np.concatenate([[0.0], np.cumsum(np.square(padded, dtype=np.float64))])
        starts = np.arange(n_frames) * hop
        energy = sq[starts + n_fft] - sq[starts]
    else:
        k = n_fft // hop
        m = n_frames + k - 1
        b = padded[: m * hop].reshape(m, hop)
        blocks = np.square(b).sum(axis=1, dtype=np.float64)
        energy = np.convolve(blocks, np.ones(k), mode="valid")[:n_frames]
    return (10.0 * np.log10(np.maximum(energy / n_fft, 1e-14))).astype(np.float32)


def normalize_window(log_mel_db: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Model input for one window of log-mel frames, padded to ``params.window_frames``.

    ``log_mel_db`` has shape ``(n_mels, t)`` with ``t <= window_frames``. The window's
    mean level is removed (so gain does not matter, but the spectral envelope stays),
    the features computed (:func:`from_log_mel`) and scaled to unit variance. The
    result has shape ``(n_features, window_frames)``; padded columns are 0 (the mean).
    """
    if params.kind == "whisper":
        return _whisper_window(log_mel_db, params)
    if params.floor_db is not None and log_mel_db.size:
        log_mel_db = np.maximum(log_mel_db, log_mel_db.max() - params.floor_db)
    feat = from_log_mel(log_mel_db - log_mel_db.mean(), params)
    out = np.zeros((feat.shape[0], params.window_frames), dtype=np.float32)
    out[:, : feat.shape[1]] = feat / (feat.std() + 1e-5)
    return out


def _whisper_window(log_mel_db: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Whisper's scaling of one window: log10 power clamped at its maximum minus 8, then
    ``(x + 4) / 4``. Columns past the signal get the value of zero samples (log10 1e-10,
    clamped), as Whisper pads its own 30 s inputs. Shape ``(80, window_frames)``."""
    x = log_mel_db / 10.0
    top = float(x.max()) if x.size else -10.0
    out = np.full((params.n_mels, params.window_frames), (max(-10.0, top - 8.0) + 4.0) / 4.0, np.float32)
    out[:, : x.shape[1]] = (np.maximum(x, top - 8.0) + 4.0) / 4.0
    return out


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
            mel, level = _mel_frames(used, p)[:, :n], _level_db(used, n, p)
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
    """:func:`windows` from a precomputed :func:`log_mel` and :func:`frame_db` (training's cache),
    cut by the same :class:`WindowStream` code."""
    stream = WindowStream(params, hop_s=hop_s)
    stream.n_samples = int(round(duration_s * params.sample_rate))
    stream._add(np.asarray(log_mel_db, np.float32), np.asarray(level_db, np.float32), final=True)
    return stream._emit(final=True)
