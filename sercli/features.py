"""Audio -> model input: the one implementation used by training and by ``annotate``.

A signal becomes a log-mel spectrogram (:func:`log_mel`), cut into fixed-size
windows, each normalised on its own and turned into the model's features, log-mel
or MFCCs (:func:`normalize_window`, :func:`from_log_mel`). Training caches :func:`log_mel` output and calls the same
:func:`from_log_mel` and :func:`normalize_window`, so a shipped model sees at
inference exactly what it saw in training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

__all__ = [
    "FeatureParams",
    "Windows",
    "frame_db",
    "from_log_mel",
    "log_mel",
    "normalize_window",
    "windows",
    "windows_from_log_mel",
]

_AMIN = 1e-10


@dataclass(frozen=True)
class FeatureParams:
    """Everything that defines a model's input; saved next to the model weights."""

    kind: Literal["mel", "mfcc"] = "mfcc"
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

    @property
    def n_features(self) -> int:
        """Rows of the model input: mel bands or MFCC coefficients."""
        return self.n_mels if self.kind == "mel" else self.n_mfcc

    @property
    def window_frames(self) -> int:
        """Columns of the model input (frames per window)."""
        return 1 + int(round(self.window_s * self.sample_rate)) // self.hop_length

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


def log_mel(y: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Log-mel power spectrogram in dB, shape ``(n_mels, 1 + len(y) // hop_length)``."""
    import librosa

    mel = librosa.feature.melspectrogram(
        y=y,
        sr=params.sample_rate,
        n_fft=params.n_fft,
        hop_length=params.hop_length,
        n_mels=params.n_mels,
        fmin=params.fmin,
        fmax=params.fmax,
        power=2.0,
    )
    return librosa.power_to_db(mel, ref=1.0, amin=_AMIN, top_db=None).astype(np.float32)


def from_log_mel(log_mel_db: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Model features from a log-mel spectrogram: itself, or ``(n_mfcc, frames)`` MFCCs."""
    if params.kind == "mel":
        return log_mel_db
    import scipy.fft

    return scipy.fft.dct(log_mel_db, axis=0, type=2, norm="ortho")[: params.n_mfcc].astype(np.float32)


def frame_db(y: np.ndarray, params: FeatureParams) -> np.ndarray:
    """RMS level of each frame in dBFS, shape ``(1 + len(y) // hop_length,)``."""
    import librosa

    rms = librosa.feature.rms(y=y, frame_length=params.n_fft, hop_length=params.hop_length)[0]
    return 20.0 * np.log10(np.maximum(rms, 1e-7))


def normalize_window(log_mel_db: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Model input for one window of log-mel frames, padded to ``params.window_frames``.

    ``log_mel_db`` has shape ``(n_mels, t)`` with ``t <= window_frames``. The window's
    mean level is removed (so gain does not matter, but the spectral envelope stays),
    the features computed (:func:`from_log_mel`) and scaled to unit variance. The
    result has shape ``(n_features, window_frames)``; padded columns are 0 (the mean).
    """
    feat = from_log_mel(log_mel_db - log_mel_db.mean(), params)
    out = np.zeros((feat.shape[0], params.window_frames), dtype=np.float32)
    out[:, : feat.shape[1]] = feat / (feat.std() + 1e-5)
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


def window_starts(n_frames: int, window_frames: int, hop_frames: int) -> list[int]:
    """First frame of each window; the last window ends at the signal's end."""
    if n_frames <= window_frames:
        return [0]
    starts = list(range(0, n_frames - window_frames + 1, hop_frames))
    if starts[-1] + window_frames < n_frames:
        starts.append(n_frames - window_frames)
    return starts


def windows(y: np.ndarray, params: FeatureParams, *, hop_s: float | None = None) -> Windows:
    """Cut a mono signal at ``params.sample_rate`` into normalised model windows.

    Windows are ``params.window_s`` long, ``hop_s`` apart (default: half a window); a
    signal shorter than one window gives one padded window.
    """
    return windows_from_log_mel(log_mel(y, params), frame_db(y, params), params,
                                duration_s=len(y) / params.sample_rate, hop_s=hop_s)


def windows_from_log_mel(
    log_mel_db: np.ndarray,
    level_db: np.ndarray,
    params: FeatureParams,
    *,
    duration_s: float,
    hop_s: float | None = None,
) -> Windows:
    """:func:`windows` from a precomputed :func:`log_mel` and :func:`frame_db` (training's cache)."""
    n_frames = log_mel_db.shape[1]
    wf = params.window_frames
    hop_frames = max(1, int(round((hop_s if hop_s is not None else params.window_s / 2)
                                  * params.sample_rate / params.hop_length)))
    starts = window_starts(n_frames, wf, hop_frames)
    x = np.stack([normalize_window(log_mel_db[:, s : s + wf], params) for s in starts])
    silent = np.array([level_db[s : s + wf].max() < params.silence_db for s in starts])
    start_s = np.array(starts, dtype=np.float64) * params.hop_length / params.sample_rate
    end_s = np.minimum(start_s + params.window_s, duration_s)
    return Windows(x=x, start_s=start_s, end_s=end_s, silent=silent)
