"""Audio -> model input: the one implementation used by training and by ``annotate``.

A signal becomes a log-mel spectrogram (:func:`log_mel`), cut into fixed-size
windows (:mod:`sercli.windowing`), each normalised on its own and turned into the model's
features, log-mel, MFCCs or Whisper's scaling (:func:`normalize_window`, :func:`from_log_mel`). Training caches :func:`log_mel` output and calls the same
:func:`from_log_mel` and :func:`normalize_window`, so a shipped model sees at
inference exactly what it saw in training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Literal

import numpy as np

__all__ = [
    "FeatureParams",
    "whisper_params",
    "frame_db",
    "from_log_mel",
    "log_mel",
    "mel_filters",
    "mel_frequencies",
    "normalize_window",
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
    return mel_frames(_centred(y, params), params)


def _centred(y: np.ndarray, params: FeatureParams) -> np.ndarray:
    """``y`` with half a frame of zeros before and after, so frame ``t`` is centred on sample ``t * hop``."""
    half = np.zeros(params.n_fft // 2, np.float32)
    return np.concatenate([half, np.asarray(y, np.float32), half])


def mel_frames(padded: np.ndarray, params: FeatureParams) -> np.ndarray:
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
    return level_db(_centred(y, params), 1 + len(y) // params.hop_length, params)


def level_db(padded: np.ndarray, n_frames: int, params: FeatureParams) -> np.ndarray:
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
