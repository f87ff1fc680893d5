"""A short real training run on real clips: outputs, safe loading, Keras/LiteRT parity,
resume and determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

import sercli  # noqa: E402
from sercli import windowing as W  # noqa: E402
from sercli.models import load_model  # noqa: E402
from sercli.training import TrainOptions, train  # noqa: E402


@pytest.fixture(scope="module")
def small_manifest(shared, tmp_path_factory) -> Path:
    """120 train and 35 val clips from every corpus, with the shared speaker-independent split."""
    m = pd.read_csv(shared / "manifest.csv")
    m = m[m["split"] != "test"]
    m = pd.concat([m[m["split"] == "train"].groupby(["corpus", "emotion"]).head(3),
                   m[m["split"] == "val"].groupby("emotion").head(5)])
    m["path"] = [str(shared / p) for p in m["path"]]
    out = tmp_path_factory.mktemp("manifest") / "small.csv"
    m.to_csv(out, index=False)
    return out


@pytest.fixture(scope="module")
def trained(small_manifest, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("model") / "tiny"
    cache = out.parent / "cache"
    train(small_manifest, out, TrainOptions(arch="mfcc-cnn", epochs=1, seed=3), jobs=2, cache_dir=cache,
          command="test")
    # resume: the same call with more epochs continues from the checkpoint
    train(small_manifest, out, TrainOptions(arch="mfcc-cnn", epochs=2, seed=3), jobs=2, cache_dir=cache,
          command="test")
    return out


def test_training_writes_a_loadable_model_with_a_card(trained):
    for name in ("model.keras", "model.tflite", "params.json", "card.json"):
        assert (trained / name).is_file(), name
    card = json.loads((trained / "card.json").read_text())
    assert card["arch"] == "mfcc-cnn" and len(card["classes"]) == 7
    tr = card["training"]
    assert len(tr["manifest_sha256"]) == 64 and tr["options"]["seed"] == 3
    assert tr["epochs_run"] == 2 and [h["epoch"] for h in tr["history"]] == [1, 2]  # resumed, not restarted
    assert {"keras", "numpy", "librosa"} <= set(tr["versions"])
    if (Path(sercli.__file__).resolve().parent.parent / ".git").exists():  # trained from a git checkout
        assert len(tr["versions"]["sercli_commit"].removesuffix("-dirty")) == 40
    assert 0.2 < card["temperature"] < 10
    keras.saving.load_model(trained / "model.keras", safe_mode=True)


def test_litert_export_matches_keras(trained):
    from conftest import speech

    model = load_model(trained)
    net = keras.saving.load_model(trained / "model.keras", safe_mode=True)
    x = np.concatenate([W.windows(speech(10.0, index=i), model.params).x for i in range(3)])
    np.testing.assert_allclose(model.logits(x), net.predict(x, verbose=0), atol=1e-4)


def test_training_is_deterministic_for_a_seed(small_manifest, trained, tmp_path):
    other = tmp_path / "again"
    cache = trained.parent / "cache"
    for epochs in (1, 2):
        train(small_manifest, other, TrainOptions(arch="mfcc-cnn", epochs=epochs, seed=3), jobs=2, cache_dir=cache)
    a = keras.saving.load_model(trained / "model.keras", safe_mode=True).get_weights()
    b = keras.saving.load_model(other / "model.keras", safe_mode=True).get_weights()
    for wa, wb in zip(a, b):
        np.testing.assert_allclose(wa, wb, atol=1e-6)


def test_train_cli_with_no_readable_files_exits_2_with_one_sentence(tmp_path):
    from conftest import run_cli

    manifest = tmp_path / "m.csv"
    pd.DataFrame({"path": [str(tmp_path / f"missing{i}.wav") for i in range(10)],
                  "emotion": ["anger", "sadness"] * 5,
                  "split": ["train"] * 6 + ["val"] * 4}).to_csv(manifest, index=False)
    res = run_cli("train", "--manifest", str(manifest), "--out", str(tmp_path / "out"), "--epochs", "1",
                  "--cache-dir", str(tmp_path / "cache"), "--jobs", "1")
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == f"sercli: No readable training files in {manifest}."
    assert "Traceback" not in res.stderr
