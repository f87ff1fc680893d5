"""Audio -> model input: the one implementation used by training and by ``annotate``.

A signal becomes a log-mel spectrogram (:func:`log_mel`), cut into fixed-size
windows, each normalised on its own and turned into the model's features, log-mel
or MFCCs (:func:`normalize_window`, :func:`from_log_mel`). Models with
``FeatureParams.prosody`` also read, per window, a vector of prosodic functionals
(pitch, loudness and voicing statistics; :func:`prosody`) computed from the
frame-level pitch (:func:`f0_contour`) and level (:func:`frame_db`) contours. Training caches :func:`log_mel` output and calls the same
:func:`from_log_mel` and :func:`normalize_window`, so a shipped model sees at
inference exactly what it saw in training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

__all__ = [
    "FeatureParams",
    "N_PROSODY",
    "Windows",
    "f0_contour",
    "frame_db",
    "from_log_mel",
    "log_mel",
    "normalize_window",
    "prosody",
    "windows",
    "windows_from_log_mel",
]

_AMIN = 1e-10

#: Length of the :func:`prosody` vector.
N_PROSODY = 14


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
    #: also feed the model :func:`prosody` functionals of each window (a second input)
    prosody: bool = False
    extra: dict = field(default_factory=dict)

    @property
    def n_features(self) -> int:
        """Rows of the model input: mel bands or MFCC coefficients."""
        return self.n_mels if self.kind == "mel" else self.n_mfcc

    @property
    def n_prosody(self) -> int:
        """Length of the per-window prosody vector (0: the model reads none)."""
        return N_PROSODY if self.prosody else 0

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


def f0_contour(y: np.ndarray, params: FeatureParams, *, fmin: float = 60.0, fmax: float = 500.0,
               threshold: float = 0.4) -> np.ndarray:
    """Fundamental frequency in Hz of each frame, 0 where unvoiced; shape ``(1 + len(y) // hop_length,)``.

    YIN (de Cheveigné & Kawahara, 2002) on 64 ms frames centred like :func:`log_mel`'s,
    with one change: of the local minima of the cumulative-mean-normalised difference
    below ``threshold`` it takes the first one within 0.05 of the deepest, not simply the
    first, which avoids octave-up errors on noisy speech (on the example clips it agrees
    with Praat's pitch within a few per cent); parabolic interpolation refines the period. A frame with no minimum below
    ``threshold`` is unvoiced. Written out because ``librosa.yin``'s numba ``localmin``
    kernel crashes (segfault) with numba 0.68 / numpy 2.4.

    >>> p = FeatureParams()
    >>> t = np.arange(p.sample_rate) / p.sample_rate
    >>> f0 = f0_contour(np.sin(2 * np.pi * 150.0 * t), p)
    >>> f0.shape, round(float(np.median(f0)), 1)
    ((63,), 150.0)
    """
    import scipy.fft

    sr, hop = params.sample_rate, params.hop_length
    frame_length, win = 1024, 512  # analysis frame; integration window of the difference function
    min_period, max_period = int(sr // fmax), min(int(sr // fmin), frame_length - win - 1)
    padded = np.pad(np.asarray(y, dtype=np.float64), frame_length // 2)
    starts = np.arange(0, len(padded) - frame_length + 1, hop)
    frames = np.lib.stride_tricks.sliding_window_view(padded, frame_length)[::hop]  # (n, frame_length)
    # autocorrelation r[tau] = sum_j x[j] x[j + tau] over the window, for tau <= max_period
    acf = scipy.fft.irfft(scipy.fft.rfft(frames, frame_length, axis=-1)
                          * scipy.fft.rfft(frames[:, win:0:-1], frame_length, axis=-1),
                          frame_length, axis=-1)[:, win:win + max_period + 1]
    # energy[tau]: sum of squares over the window shifted by tau
    cum = np.concatenate([[0.0], np.cumsum(padded ** 2)])
    shifted = starts[:, None] + np.arange(max_period + 1) + 1
    energy = cum[shifted + win] - cum[shifted]
    diff = energy[:, :1] + energy - 2.0 * acf  # (n, max_period + 1)
    cum_mean = np.cumsum(diff[:, 1:], axis=-1) / np.arange(1, max_period + 1)
    cmnd = diff[:, min_period:] / (cum_mean[:, min_period - 1:] + 1e-12)  # lags min_period..max_period
    is_min = np.zeros_like(cmnd, dtype=bool)
    is_min[:, 1:-1] = (cmnd[:, 1:-1] < cmnd[:, :-2]) & (cmnd[:, 1:-1] <= cmnd[:, 2:])
    candidate = is_min & (cmnd < threshold)
    voiced = candidate.any(axis=-1)
    masked = np.where(candidate, cmnd, np.inf)
    near_deepest = candidate & (masked <= masked.min(axis=-1, keepdims=True) + 0.05)
    idx = np.clip(near_deepest.argmax(axis=-1), 1, cmnd.shape[1] - 2)  # the shortest such period
    rows = np.arange(len(cmnd))
    a, b, c = cmnd[rows, idx - 1], cmnd[rows, idx], cmnd[rows, idx + 1]
    denom = a - 2.0 * b + c
    shift = np.where(np.abs(denom) > 1e-12, 0.5 * (a - c) / np.where(denom == 0, 1.0, denom), 0.0)
    period = min_period + idx + np.clip(shift, -1.0, 1.0)
    return np.where(voiced, sr / period, 0.0).astype(np.float32)


def prosody(f0: np.ndarray, level_db: np.ndarray, params: FeatureParams) -> np.ndarray:
    """Prosodic functionals of one window, shape ``(N_PROSODY,)``, each roughly in [-3, 3].

    ``f0`` (:func:`f0_contour`) and ``level_db`` (:func:`frame_db`) cover the window's
    frames. Speech frames are those within 35 dB of the window's loudest; voiced ones
    also have a pitch. Pitch is in semitones re 100 Hz. The vector: pitch mean, std,
    10th/50th/90th percentile, 10-90 range, mean absolute change per frame and slope
    per second; voiced fraction of speech; level std, 10-90 range and mean absolute
    change; voiced onsets per second; speech fraction of the window. Pitch entries are 0
    when fewer than 3 frames are voiced; all entries are 0 for a silent window. Gain does
    not change the vector.
    """
    out = np.zeros(N_PROSODY, dtype=np.float32)
    n = len(level_db)
    if n == 0 or level_db.max() < params.silence_db:
        return out
    speech = level_db > level_db.max() - 35.0
    voiced = speech & (f0 > 0)
    frame_s = params.hop_length / params.sample_rate
    if voiced.sum() >= 3:
        st = 12.0 * np.log2(f0[voiced] / 100.0)
        p10, p50, p90 = np.percentile(st, [10, 50, 90])
        both = voiced[1:] & voiced[:-1]
        step = np.abs(np.diff(12.0 * np.log2(np.maximum(f0, 1.0) / 100.0)))[both]
        t = np.flatnonzero(voiced) * frame_s
        slope = np.polyfit(t, st, 1)[0] if np.ptp(t) > 0 else 0.0
        out[:8] = [st.mean() / 12.0, st.std() / 4.0, p10 / 12.0, p50 / 12.0, p90 / 12.0, (p90 - p10) / 8.0,
                   step.mean() if len(step) else 0.0, np.clip(slope / 20.0, -3.0, 3.0)]
    lv = level_db[speech]
    out[8] = voiced.sum() / max(speech.sum(), 1)
    out[9] = lv.std() / 10.0
    out[10] = np.subtract(*np.percentile(lv, [90, 10])) / 20.0
    out[11] = np.abs(np.diff(level_db)).mean() / 3.0 if n > 1 else 0.0
    out[12] = np.count_nonzero(np.diff(voiced.astype(np.int8)) == 1) / (n * frame_s) / 4.0
    out[13] = speech.mean()
    return out


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

    ``x``: ``(n_windows, n_features, window_frames)``; ``prosody``: ``(n_windows, n_prosody)``
    (zero columns unless ``params.prosody``); ``start_s``/``end_s``: ``(n_windows,)``;
    ``silent``: ``(n_windows,)`` bool, windows with no speech energy.
    """

    x: np.ndarray
    prosody: np.ndarray
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
    f0 = f0_contour(y, params) if params.prosody else None
    return windows_from_log_mel(log_mel(y, params), frame_db(y, params), params, f0=f0,
                                duration_s=len(y) / params.sample_rate, hop_s=hop_s)


def windows_from_log_mel(
    log_mel_db: np.ndarray,
    level_db: np.ndarray,
    params: FeatureParams,
    *,
    duration_s: float,
    hop_s: float | None = None,
    f0: np.ndarray | None = None,
) -> Windows:
    """:func:`windows` from a precomputed :func:`log_mel`, :func:`frame_db` and (for models
    with ``params.prosody``) :func:`f0_contour` (training's cache)."""
    n_frames = log_mel_db.shape[1]
    wf = params.window_frames
    hop_frames = max(1, int(round((hop_s if hop_s is not None else params.window_s / 2)
                                  * params.sample_rate / params.hop_length)))
    starts = window_starts(n_frames, wf, hop_frames)
    x = np.stack([normalize_window(log_mel_db[:, s : s + wf], params) for s in starts])
    if params.prosody:
        pros = np.stack([prosody(f0[s : s + wf], level_db[s : s + wf], params) for s in starts])
    else:
        pros = np.zeros((len(starts), 0), dtype=np.float32)
    silent = np.array([level_db[s : s + wf].max() < params.silence_db for s in starts])
    start_s = np.array(starts, dtype=np.float64) * params.hop_length / params.sample_rate
    end_s = np.minimum(start_s + params.window_s, duration_s)
    return Windows(x=x, prosody=pros, start_s=start_s, end_s=end_s, silent=silent)
