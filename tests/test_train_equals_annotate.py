"""Training and annotate see the same thing: padding does not change an embedding, the corpus
statistics come from the windows annotate classifies (one long recording can be a corpus),
evaluate adapts to each corpus on its own, and adaptation moves a recorded-through-a-channel
corpus toward what the clean one gives."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import sercli
from conftest import example_files, speech, write
from sercli.models import load_model

ENCODER = next((n for n in sercli.available_models() if load_model(n).head is not None), None)
pytestmark = pytest.mark.skipif(ENCODER is None, reason="no encoder model is shipped")


def _telephone(y: np.ndarray) -> np.ndarray:
    import scipy.signal as sg

    b, a = sg.butter(4, [300, 3400], btype="band", fs=16000)
    return (sg.lfilter(b, a, y) * 3).astype(np.float32)


def test_the_same_speech_padded_to_two_lengths_gives_the_same_embedding():
    """A short clip fills part of its window; what fills the rest must not reach its embedding."""
    pytest.importorskip("keras")
    encoder = pytest.importorskip("sercli.training.encoder")
    from sercli import features as F

    weights = encoder.load_weights("base")
    y = speech(1.4)
    x = {frames: F.normalize_window(F.log_mel(y, F.whisper_params()), F.whisper_params(window_s=frames / 100))[None]
         for frames in (300, 400)}
    masked = {f: np.asarray(encoder.pooled_encoder(weights, layers=3, frames=f, masked=True)(x[f])) for f in x}
    plain = {f: np.asarray(encoder.pooled_encoder(weights, layers=3, frames=f)(x[f])) for f in x}
    scale = np.abs(masked[300]).mean()
    assert np.abs(masked[300] - masked[400]).max() < 0.02 * scale
    assert np.abs(plain[300] - plain[400]).max() > 0.1 * scale  # what the unmasked pooling did
    assert load_model(ENCODER).card["training"]["options"].get("mask_padding") is True  # and what ships


@pytest.fixture(scope="module")
def interview(tmp_path_factory) -> Path:
    """One 100 s recording: 40 s of loud noise, then 24 example clips with 1.5 s pauses."""
    rng = np.random.default_rng(0)
    parts = [rng.normal(0, 0.1, 40 * 16000).astype(np.float32)]
    for i in range(24):
        parts += [speech(index=i % 12), np.zeros(24000, np.float32)]
    return write(tmp_path_factory.mktemp("long") / "interview.wav", np.concatenate(parts), 16000)


def _interview(folder: Path, noise_s: float) -> Path:
    """A recording of 24 example clips with 1.5 s pauses, after ``noise_s`` seconds of loud noise."""
    parts = [np.random.default_rng(0).normal(0, 0.1, int(noise_s * 16000)).astype(np.float32)]
    for i in range(24):
        parts += [speech(index=i % 12), np.zeros(24000, np.float32)]
    return write(folder / f"interview-{noise_s:.0f}.wav", np.concatenate(parts), 16000)


def test_one_long_recording_adapts_on_its_own_with_the_statistics_of_the_windows_it_classifies(tmp_path):
    noisy, quiet = _interview(tmp_path, 40), _interview(tmp_path, 0)
    result = sercli.annotate(noisy, model=ENCODER, jobs=1, segments=True, windows=True)
    assert result.info["adapt"] == "corpus" and len(result.segments) >= 20  # one file, enough speech regions
    assert result.windows["start_s"].min() > 35  # the noise before the speech was never classified ...
    speech_only = np.split(np.asarray(sercli.annotate(quiet, model=ENCODER, jobs=1).info["shift"]), 2)[0]
    mean = np.split(np.asarray(result.info["shift"]), 2)[0]
    # ... nor measured: the statistics are the speech's, as if the noise were not there. Measured
    # as before (the first 60 s, every window with energy), they would have been the noise's.
    from sercli.training.embeddings import clip_windows

    y, sr = sf.read(noisy, dtype="float32")
    model = load_model(ENCODER)
    w = clip_windows(str(write(tmp_path / "first-minute.wav", y[:60 * sr], sr)), model.params)
    before = model.run(w.x[~w.silent]).astype(np.float64).mean(axis=0)
    assert np.abs(mean - speech_only).mean() < 0.2 * np.abs(before - speech_only).mean()


def test_adaptation_moves_a_telephone_channel_corpus_toward_the_clean_corpus(shared, tmp_path):
    m = pd.read_csv(shared / "manifest.csv")
    m = m[m["corpus"].eq("ravdess") & m["split"].eq("test")].groupby("emotion").head(12)
    from sercli.audio import decode

    for p in m["path"]:
        y = decode(str(shared / p), sample_rate=16000).samples
        write(tmp_path / "clean" / f"{Path(p).stem}.wav", y, 16000)
        write(tmp_path / "phone" / f"{Path(p).stem}.wav", _telephone(y), 16000)
    clean = sercli.annotate(tmp_path / "clean", model=ENCODER, jobs=2, adapt="corpus").files  # as it would be
    plain = sercli.annotate(tmp_path / "phone", model=ENCODER, jobs=2, adapt="none").files
    adapted = sercli.annotate(tmp_path / "phone", model=ENCODER, jobs=2, adapt="corpus").files
    truth = m.set_index(m["path"].map(lambda p: Path(p).stem))["emotion"]

    def accuracy(df: pd.DataFrame) -> float:
        return float((df["emotion"].astype(str).to_numpy() == truth[df["path"].map(lambda p: Path(p).stem)]).mean())

    assert accuracy(adapted) >= accuracy(plain) + 0.05  # the direction, and a size worth having
    agree = {name: float((df["emotion"].to_numpy() == clean["emotion"].to_numpy()).mean())
             for name, df in (("plain", plain), ("adapted", adapted))}
    assert agree["adapted"] >= agree["plain"] + 0.1  # the channel's answers move to the clean corpus's


def test_evaluate_adapts_to_each_corpus_on_its_own(shared, tmp_path):
    m = pd.read_csv(shared / "manifest.csv")
    rows = pd.concat([m[m["corpus"].eq(c)].head(24) for c in ("savee", "tess")]).assign(split="test")
    rows = rows.assign(path=[str(shared / p) for p in rows["path"]])
    rows.to_csv(tmp_path / "two.csv", index=False)
    metrics, pred = sercli.evaluate(ENCODER, tmp_path / "two.csv", jobs=2)
    for corpus, g in rows.groupby("corpus"):
        alone = sercli.annotate(list(g["path"]), model=ENCODER, jobs=2).files.set_index("path")
        assert len(alone) == 24
        both = pred.set_index("path").loc[alone.index]
        np.testing.assert_allclose(both.filter(like="prob_").to_numpy(float),
                                   alone.filter(like="prob_").to_numpy(float), atol=1e-6)
    assert metrics["adapt_used"] == "corpus" and set(metrics["per_corpus"]) == {"savee", "tess"}


def test_int8_encoder_agrees_with_its_float_twin_on_real_speech():
    """The shipped LiteRT file has int8 weights; rebuilt in float32 from the published weights,
    the encoder must give nearly the same embeddings and the same answers."""
    pytest.importorskip("keras")
    encoder = pytest.importorskip("sercli.training.encoder")
    from sercli.training.embeddings import clip_windows

    model = load_model(ENCODER)
    opts = model.card["training"]["options"]
    net = encoder.pooled_encoder(encoder.load_weights(opts["size"]), layers=opts["layers"],
                                 frames=model.params.window_frames, masked=opts.get("mask_padding", False))
    x = np.concatenate([clip_windows(str(p), model.params).x for p in example_files()])
    int8, float32 = model.run(x).astype(np.float64), np.asarray(net(x), np.float64)
    rel = np.linalg.norm(int8 - float32, axis=1) / np.linalg.norm(float32, axis=1)
    assert rel.max() < 0.05, f"int8 embeddings differ from float by up to {rel.max():.3f} (relative L2)"
    p8, p32 = model.probabilities(int8), model.probabilities(float32)
    assert np.abs(p8 - p32).max() < 0.1 and (p8.argmax(axis=1) == p32.argmax(axis=1)).mean() >= 0.9
