"""Augmentation of cached log-mel spectra: vocal-tract length warping, random channels,
random crops; one epoch's batch at a time."""

from __future__ import annotations

import functools

import numpy as np

from .. import features as F

from .. import windowing as W
from .options import TrainOptions

__all__ = ["epoch_data"]


@functools.lru_cache(maxsize=4)
def _mel_hz(params: F.FeatureParams) -> np.ndarray:
    """Centre frequency (Hz) of each mel band."""
    return F.mel_frequencies(params)[1:-1]


@functools.lru_cache(maxsize=64)
def _warp_table(params: F.FeatureParams, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    hz = _mel_hz(params)
    pos = np.interp(hz / alpha, hz, np.arange(len(hz), dtype=np.float64))  # fractional source band
    lo = np.floor(pos).astype(int)
    return lo, np.minimum(lo + 1, len(hz) - 1), (pos - lo)[:, None].astype(np.float32)


def _warp(mel: np.ndarray, params: F.FeatureParams, alpha: float) -> np.ndarray:
    """Vocal-tract-length perturbation: the spectrum at ``f`` moves to ``alpha * f`` (alpha in steps of 0.01)."""
    lo, hi, w = _warp_table(params, round(alpha, 2))
    return mel[lo] * (1 - w) + mel[hi] * w


def _random_channel(mel: np.ndarray, params: F.FeatureParams, rng: np.random.Generator) -> np.ndarray:
    """A random recording channel on a log-mel window (dB): band limits, EQ tilt, room reverberation."""
    from scipy.signal import lfilter

    hz = _mel_hz(params)
    floor = float(np.percentile(mel, 5))
    if rng.random() < 0.5:  # band limit: telephone, narrow- or wide-band codecs, cheap microphones
        low = rng.choice([0.0, 100.0, 200.0, 300.0])
        high = rng.choice([3400.0, 4000.0, 5500.0, 7000.0, 8000.0])
        outside = (hz < low) | (hz > high)
        mel = mel.copy()
        mel[outside] = np.minimum(mel[outside], floor) - 10.0
    # smooth EQ: a tilt of up to +-6 dB over the band and two random cosine ripples of up to +-3 dB
    pos = np.linspace(0.0, 1.0, len(hz))
    eq = rng.uniform(-6.0, 6.0) * (pos - 0.5)
    for k in (1, 2):
        eq += rng.uniform(-3.0, 3.0) * np.cos(np.pi * k * pos + rng.uniform(0, np.pi))
    mel = mel + eq[:, None].astype(np.float32)
    if rng.random() < 0.5:  # reverberation: an exponential tail in the power domain, RT60 0.2-1.0 s
        rt60 = rng.uniform(0.2, 1.0)
        decay = np.exp(-6.9 * params.hop_length / params.sample_rate / rt60)
        power = 10.0 ** (mel / 10.0)
        tail = lfilter([0.0, 1.0], [1.0, -decay], power, axis=1)
        wet = 10.0 ** (-rng.uniform(0.0, 12.0) / 10.0)  # direct-to-reverberant ratio 0-12 dB
        mel = (10.0 * np.log10(power + wet * (1 - decay) * tail + 1e-10)).astype(np.float32)
    return mel


def _augmented_window(entries: list, params: F.FeatureParams, opts: TrainOptions,
                      rng: np.random.Generator) -> np.ndarray:
    """One random training window ``(n_features, window_frames)`` from a file's cached features."""
    idx = int(rng.integers(len(entries))) if opts.speed_perturb else 0
    first, end = W.trim_bounds(entries[idx][1].astype(np.float32), params)
    mel = entries[idx][0][:, first:end].astype(np.float32)
    wf = params.window_frames
    if mel.shape[1] > wf:
        start = int(rng.integers(mel.shape[1] - wf + 1))
        mel = mel[:, start:start + wf]
    if opts.vtlp > 0:
        mel = _warp(mel, params, float(rng.uniform(1.0 - opts.vtlp, 1.0 + opts.vtlp)))
    if rng.random() < opts.channel_prob:
        mel = _random_channel(mel, params, rng)
    if rng.random() < opts.noise_prob:  # additive noise in the power domain, SNR 5-40 dB
        power = 10.0 ** (mel / 10.0)
        snr_db = rng.uniform(5.0, 40.0)
        noise = power.mean() / 10.0 ** (snr_db / 10.0) * rng.exponential(1.0, size=power.shape)
        mel = 10.0 * np.log10(power + noise + 1e-10)
    if opts.spec_augment:  # two frequency masks on the log-mel, filled with its mean
        for _ in range(2):
            width = int(rng.integers(0, params.n_mels // 8 + 1))
            f0 = int(rng.integers(0, params.n_mels - width + 1))
            mel[f0:f0 + width] = mel.mean()
    x = F.normalize_window(mel, params)
    if opts.spec_augment:  # two time masks on the model input
        for _ in range(2):
            width = int(rng.integers(0, wf // 10 + 1))
            t0 = int(rng.integers(0, wf - width + 1))
            x[:, t0:t0 + width] = 0.0
    return x


def epoch_data(items: list, labels: np.ndarray, n_classes: int, params: F.FeatureParams, opts: TrainOptions,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = np.stack([_augmented_window(e, params, opts, rng) for e in items])
    y = np.eye(n_classes, dtype=np.float32)[labels]
    if opts.mixup_alpha > 0:
        lam = rng.beta(opts.mixup_alpha, opts.mixup_alpha, size=len(x)).astype(np.float32)
        lam = np.maximum(lam, 1 - lam)  # the first sample dominates
        perm = rng.permutation(len(x))
        x = lam[:, None, None] * x + (1 - lam[:, None, None]) * x[perm]
        y = lam[:, None] * y + (1 - lam[:, None]) * y[perm]
    return x, y
