"""Features: shapes, determinism, windows, and train/inference parity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import speech
from sercli import features as F
from sercli import windowing as W


@pytest.mark.parametrize("kind, rows", [("mel", 64), ("mfcc", 40)])
def test_window_shape_matches_params(kind, rows):
    params = F.FeatureParams(kind=kind)
    w = W.windows(speech(index=0), params)
    assert w.x.shape == (1, rows, params.window_frames) == (1, params.n_features, 188)
    assert w.x.dtype == np.float32


def test_features_are_deterministic():
    params = F.FeatureParams()
    y = speech(index=1)
    np.testing.assert_array_equal(W.windows(y, params).x, W.windows(y.copy(), params).x)


def test_each_window_is_normalised_over_its_real_frames():
    params = F.FeatureParams(kind="mel")
    y = speech(index=2)
    x = W.windows(y, params).x[0]
    real = 1 + len(y) // params.hop_length
    assert real < params.window_frames  # a short clip: padded
    assert abs(x[:, :real].mean()) < 1e-4 and x[:, :real].std() == pytest.approx(1, abs=1e-3)
    assert x[:, :real].mean(axis=1).std() > 0.1  # the spectral envelope is kept
    assert not x[:, real:].any()  # padding is the mean, 0


def test_gain_does_not_change_model_input():
    params = F.FeatureParams()
    y = speech(index=3)
    np.testing.assert_allclose(W.windows(y, params).x, W.windows(0.1 * y, params).x, atol=2e-3)


def test_long_signal_windows_cover_it_with_the_given_hop():
    params = F.FeatureParams()
    y = speech(20.0, index=4)
    w = W.windows(y, params, hop_s=1.0)
    assert w.start_s[0] == 0 and w.end_s[-1] == pytest.approx(20.0)
    assert np.all(w.end_s - w.start_s <= params.window_s + 1e-9)
    assert np.diff(w.start_s)[:-1] == pytest.approx(62 * params.hop_length / params.sample_rate)
    assert len(w.x) == len(w.start_s) == len(w.silent)


def test_silent_windows_are_flagged():
    params = F.FeatureParams()
    y = np.concatenate([speech(3.0, index=5), np.zeros(params.sample_rate * 9, np.float32)])
    w = W.windows(y, params, hop_s=3.0)
    assert len(w.silent) == 4
    assert not w.silent[0] and w.silent[2:].all()  # window 1 starts 8 ms before the speech ends


def test_training_path_equals_inference_path():
    """Training windows come from cached log-mel + level; annotate computes them from audio."""
    params = F.FeatureParams()
    y = speech(7.0, index=6)
    direct = W.windows(y, params)
    cached = W.windows_from_log_mel(F.log_mel(y, params).astype(np.float16).astype(np.float32),
                                    F.frame_db(y, params), params, duration_s=len(y) / params.sample_rate)
    np.testing.assert_allclose(direct.x, cached.x, atol=0.05)  # float16 cache rounding only
    np.testing.assert_array_equal(direct.silent, cached.silent)


@pytest.mark.parametrize("block", [997, 16000, 16000 * 60 + 17], ids=["tiny-blocks", "1s-blocks", "60s-blocks"])
@pytest.mark.parametrize("seconds, hop_s", [(0.4, None), (3.2, None), (47.3, None), (47.3, 0.7)])
def test_windows_streamed_in_blocks_equal_the_windows_of_the_whole_signal(block, seconds, hop_s):
    """What annotate computes block by block is what training computes from the whole log-mel."""
    from conftest import speech
    from sercli.features import FeatureParams, frame_db, log_mel
    from sercli.windowing import WindowStream, concat_windows, windows_from_log_mel

    params = FeatureParams(kind="mfcc")
    y = speech(seconds, index=4)
    whole = windows_from_log_mel(log_mel(y, params), frame_db(y, params), params, duration_s=seconds, hop_s=hop_s)
    stream = WindowStream(params, hop_s=hop_s)
    parts = [stream.feed(y[i:i + block]) for i in range(0, len(y), block)] + [stream.finish()]
    got = concat_windows(parts, params)
    np.testing.assert_allclose(got.x, whole.x, atol=1e-4)
    np.testing.assert_allclose(got.start_s, whole.start_s)
    np.testing.assert_allclose(got.end_s, whole.end_s)
    np.testing.assert_array_equal(got.silent, whole.silent)


def test_frame_level_matches_librosa_rms():
    import librosa

    from conftest import speech
    from sercli.features import FeatureParams, frame_db

    params = FeatureParams()
    y = speech(5.3, index=2)
    rms = librosa.feature.rms(y=y, frame_length=params.n_fft, hop_length=params.hop_length)[0]
    np.testing.assert_allclose(frame_db(y, params), 20 * np.log10(np.maximum(rms, 1e-7)), atol=1e-3)


@pytest.mark.parametrize("seconds", [1.0, 7.7, 40.0])
def test_trimmed_windows_streamed_equal_trimmed_windows_of_the_whole_signal(seconds):
    """With trimming on, leading and trailing non-speech are dropped the same way in both paths,
    and the windows keep their times in the original file."""
    from conftest import speech
    from sercli.features import FeatureParams, frame_db, log_mel
    from sercli.windowing import WindowStream, concat_windows, windows_from_log_mel

    params = FeatureParams(kind="mfcc", trim_db=35.0, floor_db=60.0)
    hiss = 1e-5 * np.random.default_rng(0).standard_normal(40000).astype(np.float32)
    y = np.concatenate([hiss[:16000], speech(seconds, index=3), hiss[16000:]])
    whole = windows_from_log_mel(log_mel(y, params), frame_db(y, params), params, duration_s=len(y) / 16000)
    assert whole.start_s[0] == pytest.approx(1.0 - 5 * 0.016, abs=0.05)  # speech starts after 1 s of hiss
    assert whole.end_s[-1] == pytest.approx(1.0 + seconds + 5 * 0.016, abs=0.05)
    stream = WindowStream(params)
    got = concat_windows([stream.feed(y[i:i + 960000]) for i in range(0, len(y), 960000)] + [stream.finish()],
                         params)
    np.testing.assert_allclose(got.x, whole.x, atol=1e-4)
    np.testing.assert_allclose(got.start_s, whole.start_s)
    np.testing.assert_allclose(got.end_s, whole.end_s)


@pytest.mark.parametrize("kind", ["mel", "mfcc"])
def test_log_mel_without_librosa_equals_librosa(kind):
    """annotate computes log-mel with NumPy/SciPy (no numba start-up); it must equal librosa's."""
    import librosa

    from conftest import speech
    from sercli.features import FeatureParams, log_mel, mel_filters

    p = FeatureParams(kind=kind)
    expected = librosa.filters.mel(sr=p.sample_rate, n_fft=p.n_fft, n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax)
    np.testing.assert_allclose(mel_filters(p), expected, atol=1e-7)
    y = speech(9.3, index=5)
    ref = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=p.sample_rate, n_fft=p.n_fft, hop_length=p.hop_length,
                                                             n_mels=p.n_mels, fmin=p.fmin, fmax=p.fmax, power=2.0),
                              ref=1.0, amin=1e-10, top_db=None)
    np.testing.assert_allclose(log_mel(y, p), ref, atol=1e-3)


def test_whisper_front_end_equals_whispers_own_code_on_a_real_clip():
    """Reference values from OpenAI's ``whisper.log_mel_spectrogram`` (``tests/fixtures/whisper_front_end.py``
    made them, with PyTorch, once): the same log-mel window but for the first two frames, where
    Whisper reflects the signal at its start and sercli pads zeros (as every window past the first)."""
    import soundfile as sf

    fixture = np.load(Path(__file__).parent / "fixtures" / "whisper_front_end.npz")
    y, sr = sf.read(Path(__file__).parent.parent / "examples" / str(fixture["clip"]), dtype="float32")
    ours = F.normalize_window(F.log_mel(y, F.whisper_params()), F.whisper_params())
    ref = fixture["log_mel"]
    np.testing.assert_allclose(ours[:, 2:ref.shape[1]], ref[:, 2:], atol=1e-4)
    assert np.abs(ours[:, :2] - ref[:, :2]).max() < 0.25  # the start: reflected, not zero-padded
