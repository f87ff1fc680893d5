"""Features: shapes, determinism, windows, and train/inference parity."""

from __future__ import annotations

import numpy as np
import pytest

from conftest import speech
from sercli import features as F


@pytest.mark.parametrize("kind, rows", [("mel", 64), ("mfcc", 40)])
def test_window_shape_matches_params(kind, rows):
    params = F.FeatureParams(kind=kind)
    w = F.windows(speech(index=0), params)
    assert w.x.shape == (1, rows, params.window_frames) == (1, params.n_features, 188)
    assert w.x.dtype == np.float32


def test_features_are_deterministic():
    params = F.FeatureParams()
    y = speech(index=1)
    np.testing.assert_array_equal(F.windows(y, params).x, F.windows(y.copy(), params).x)


def test_each_window_is_normalised_over_its_real_frames():
    params = F.FeatureParams(kind="mel")
    y = speech(index=2)
    x = F.windows(y, params).x[0]
    real = 1 + len(y) // params.hop_length
    assert real < params.window_frames  # a short clip: padded
    assert abs(x[:, :real].mean()) < 1e-4 and x[:, :real].std() == pytest.approx(1, abs=1e-3)
    assert x[:, :real].mean(axis=1).std() > 0.1  # the spectral envelope is kept
    assert not x[:, real:].any()  # padding is the mean, 0


def test_gain_does_not_change_model_input():
    params = F.FeatureParams()
    y = speech(index=3)
    np.testing.assert_allclose(F.windows(y, params).x, F.windows(0.1 * y, params).x, atol=2e-3)


def test_long_signal_windows_cover_it_with_the_given_hop():
    params = F.FeatureParams()
    y = speech(20.0, index=4)
    w = F.windows(y, params, hop_s=1.0)
    assert w.start_s[0] == 0 and w.end_s[-1] == pytest.approx(20.0)
    assert np.all(w.end_s - w.start_s <= params.window_s + 1e-9)
    assert np.diff(w.start_s)[:-1] == pytest.approx(62 * params.hop_length / params.sample_rate)
    assert len(w.x) == len(w.start_s) == len(w.silent)


def test_silent_windows_are_flagged():
    params = F.FeatureParams()
    y = np.concatenate([speech(3.0, index=5), np.zeros(params.sample_rate * 9, np.float32)])
    w = F.windows(y, params, hop_s=3.0)
    assert len(w.silent) == 4
    assert not w.silent[0] and w.silent[2:].all()  # window 1 starts 8 ms before the speech ends


def test_training_path_equals_inference_path():
    """Training windows come from cached log-mel + level; annotate computes them from audio."""
    params = F.FeatureParams()
    y = speech(7.0, index=6)
    direct = F.windows(y, params)
    cached = F.windows_from_log_mel(F.log_mel(y, params).astype(np.float16).astype(np.float32),
                                    F.frame_db(y, params), params, duration_s=len(y) / params.sample_rate)
    np.testing.assert_allclose(direct.x, cached.x, atol=0.05)  # float16 cache rounding only
    np.testing.assert_array_equal(direct.silent, cached.silent)
