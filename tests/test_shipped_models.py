"""Regression tests for the shipped models: stored outputs on the bundled examples, and
Keras/LiteRT parity of every shipped network."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sercli
from conftest import EXAMPLES, speech
from sercli.models import models_dir

EXPECTED = Path(__file__).parent / "expected"
SHIPPED = sercli.available_models()
#: Networks whose Keras source ships too (an encoder model's encoder is rebuilt from its published
#: weights instead: tests/test_encoder_model.py).
KERAS = [name for name in SHIPPED if (models_dir() / name / "model.keras").is_file()]


def test_every_shipped_model_has_stored_expected_outputs():
    assert sorted(p.stem for p in EXPECTED.glob("*.csv")) == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_gives_its_stored_outputs_on_the_examples(name):
    """A changed model file, feature pipeline or calibration shows up here. To accept an
    intended change, regenerate ``tests/expected/`` (see its README) and say why in the commit."""
    got = sercli.annotate(EXAMPLES, model=name, jobs=1).files
    got = got.assign(path=got["path"].map(lambda p: Path(p).name)).sort_values("path").reset_index(drop=True)
    want = pd.read_csv(EXPECTED / f"{name}.csv").sort_values("path").reset_index(drop=True)
    assert got["path"].tolist() == want["path"].tolist()
    assert got["emotion"].astype(str).tolist() == want["emotion"].tolist()
    probs = [c for c in want.columns if c.startswith("prob_")]
    np.testing.assert_allclose(got[probs].to_numpy(dtype=float), want[probs].to_numpy(), atol=2e-4)


@pytest.mark.parametrize("name", KERAS)
def test_shipped_litert_model_matches_its_keras_source(name):
    keras = pytest.importorskip("keras")
    from sercli import windowing as W
    from sercli.models import load_model

    model = load_model(name)
    net = keras.saving.load_model(model.path / "model.keras", safe_mode=True)
    x = np.concatenate([W.windows(speech(10.0, index=i), model.params).x for i in range(4)])
    np.testing.assert_allclose(model.logits(x), net.predict(x, verbose=0), atol=1e-4)


@pytest.mark.parametrize("name", SHIPPED)
def test_off_domain_calibration_only_softens_confidence(name):
    from sercli.models import load_model

    off = load_model(name)
    inside = load_model(name, calibration="in-domain")
    scale = off.card.get("calibration", {}).get("off_domain_scale", 1.0)
    assert off.temperature == pytest.approx(inside.temperature * scale)
    a = sercli.annotate(EXAMPLES, model=name, jobs=1).files
    b = sercli.annotate(EXAMPLES, model=name, jobs=1, calibration="in-domain").files
    assert a["emotion"].tolist() == b["emotion"].tolist()  # single-window clips: the same winner
    if scale > 1:
        assert (a["confidence"] < b["confidence"]).all()
