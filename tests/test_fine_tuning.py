"""Fine-tuning a shipped model on a few real labelled clips (``sercli train --init``), with the
seven classes and with a label set of the user's own, and annotating with the result."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from conftest import EXAMPLES, run_cli  # noqa: E402

from sercli import EMOTIONS  # noqa: E402
from sercli.reports import read_results  # noqa: E402

#: The user's own classes, made from SAVEE's (folder name: SAVEE emotion).
CUSTOM = {"angry": "anger", "calm": "neutral", "low": "sadness"}
QUICK = ["--epochs", "2", "--freeze-epochs", "1", "--jobs", "2"]


def _savee(shared: Path) -> pd.DataFrame:
    m = pd.read_csv(shared / "manifest.csv", dtype={"speaker": str})
    m = m[m["corpus"].eq("savee")]
    return m.assign(path=[str(shared / p) for p in m["path"]])


@pytest.fixture(scope="module")
def class_folders(shared, tmp_path_factory) -> Path:
    """A user's folder-per-class layout: 6 SAVEE clips per class of their own, 3 speakers,
    the speaker in the file name (links to the real clips)."""
    root = tmp_path_factory.mktemp("mine") / "labelled"
    m = _savee(shared)
    for folder, emotion in CUSTOM.items():
        (root / folder).mkdir(parents=True)
        rows = m[m["emotion"].eq(emotion) & m["speaker"].isin(["DC", "JE", "JK"])].groupby("speaker").head(2)
        for _, r in rows.iterrows():
            (root / folder / f"{r['speaker']}_{Path(r['path']).name}").symlink_to(r["path"])
    return root


@pytest.fixture(scope="module")
def custom_model(class_folders, tmp_path_factory) -> Path:
    manifest = class_folders.parent / "mine.csv"
    res = run_cli("manifest", str(class_folders), "--speaker", r"/([A-Z]{2})_[^/]*$", "-o", str(manifest))
    assert res.returncode == 0, res.stderr
    out = class_folders.parent / "mymodel"
    res = run_cli("train", "--init", "mfcc-cnn", "--manifest", str(manifest), "--out", str(out),
                  "--cache-dir", str(class_folders.parent / "cache"), *QUICK, timeout=600)
    assert res.returncode == 0, res.stderr
    return out


def test_manifest_from_class_folders_takes_labels_from_folders_and_speakers_from_a_regex(class_folders, custom_model):
    df = pd.read_csv(class_folders.parent / "mine.csv", dtype={"speaker": str})
    assert sorted(df["emotion"].unique()) == sorted(CUSTOM)
    assert df.groupby("emotion").size().tolist() == [6, 6, 6]
    assert sorted(df["speaker"].unique()) == ["DC", "JE", "JK"]
    assert all(Path(p).parent.name == e for p, e in zip(df["path"], df["emotion"]))


def test_fine_tuned_model_with_its_own_classes_has_a_card_saying_what_it_was_made_from(custom_model):
    card = json.loads((custom_model / "card.json").read_text())
    assert card["classes"] == ["angry", "calm", "low"]  # not shipped classes: alphabetical
    tr = card["training"]
    assert tr["base_model"]["name"] == "mfcc-cnn" and tr["base_model"]["classes"] == list(EMOTIONS)
    assert tr["clips_per_class"] == {"angry": 6, "calm": 6, "low": 6}
    assert tr["command"].startswith("sercli train --init mfcc-cnn")
    assert tr["options"]["init"] == "mfcc-cnn" and tr["epochs_run"] == 2 and len(tr["manifest_sha256"]) == 64
    res = run_cli("models", "show", str(custom_model))
    assert res.returncode == 0 and "3-class" in res.stdout and "fine-tuned from `mfcc-cnn`" in res.stdout


def test_annotate_with_a_custom_class_model_writes_one_probability_column_per_class(custom_model, tmp_path):
    out = tmp_path / "e.parquet"
    res = run_cli("annotate", str(EXAMPLES), "--model", str(custom_model), "-o", str(out), "--quiet",
                  "--segments", str(tmp_path / "s.parquet"))
    assert res.returncode == 0, res.stderr
    df = read_results(out)
    probs = [c for c in df.columns if c.startswith("prob_")]
    assert probs == ["prob_angry", "prob_calm", "prob_low"]
    assert df["status"].eq("ok").all() and set(df["emotion"].dropna()) <= set(CUSTOM)
    assert list(df["emotion"].cat.categories) == ["angry", "calm", "low"]
    np.testing.assert_allclose(df[probs].sum(axis=1), 1.0, atol=1e-5)
    seg = read_results(tmp_path / "s.parquet")
    assert [c for c in seg.columns if c.startswith("prob_")] == probs
    res = run_cli("summarize", str(out), "--by", "folder", "--html", str(tmp_path / "r.html"),
                  "--json", str(tmp_path / "s.json"))
    assert res.returncode == 0, res.stderr
    overall = json.loads((tmp_path / "s.json").read_text())["overall"]["all"]
    assert {"share_angry", "share_calm", "share_low"} <= set(overall) and "share_anger" not in overall
    assert "calm" in (tmp_path / "r.html").read_text()


def test_evaluate_scores_a_custom_class_model_on_its_own_labels(class_folders, custom_model, tmp_path):
    m = pd.read_csv(class_folders.parent / "mine.csv").assign(split="test")
    m.to_csv(tmp_path / "eval.csv", index=False)
    res = run_cli("evaluate", "--model", str(custom_model), "--manifest", str(tmp_path / "eval.csv"),
                  "--json", str(tmp_path / "m.json"), "--jobs", "1")
    assert res.returncode == 0, res.stderr
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["n"] == 18 and set(metrics["per_class"]) == set(CUSTOM)


def test_fine_tuning_with_the_seven_classes_keeps_the_head_resumes_and_can_be_fine_tuned_again(shared, tmp_path):
    m = _savee(shared)
    m = m[m["speaker"].isin(["DC", "JE", "JK"])].groupby("emotion").head(6)
    manifest = tmp_path / "seven.csv"
    m[["path", "emotion", "speaker"]].to_csv(manifest, index=False)
    out, cache = tmp_path / "seven", str(tmp_path / "cache")
    args = ["train", "--init", "mfcc-cnn", "--manifest", str(manifest), "--out", str(out), "--cache-dir", cache,
            "--freeze-epochs", "1", "--jobs", "2"]
    assert run_cli(*args, "--epochs", "1", timeout=600).returncode == 0
    res = run_cli(*args, "--epochs", "2", timeout=600)  # the same command with more epochs resumes
    assert res.returncode == 0, res.stderr
    card = json.loads((out / "card.json").read_text())
    assert card["classes"] == list(EMOTIONS) and [h["epoch"] for h in card["training"]["history"]] == [1, 2]
    again = tmp_path / "again"
    res = run_cli("train", "--init", str(out), "--manifest", str(manifest), "--out", str(again), "--cache-dir",
                  cache, *QUICK, timeout=600)
    assert res.returncode == 0, res.stderr
    assert json.loads((again / "card.json").read_text())["training"]["base_model"]["name"] == "seven"


def test_too_few_clips_per_class_or_one_class_is_refused_in_one_sentence(tmp_path):
    clips = sorted(EXAMPLES.glob("*.wav"))  # two clips per class
    manifest = tmp_path / "few.csv"
    pd.DataFrame({"path": [str(p) for p in clips],
                  "emotion": [p.stem.split("_")[2] for p in clips]}).to_csv(manifest, index=False)
    res = run_cli("train", "--init", "mfcc-cnn", "--manifest", str(manifest), "--out", str(tmp_path / "m"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        "sercli: Too few labelled clips to train and validate: every class needs at least 5 (at least one is "
        "kept for validation), and ANG has only 2, DIS has only 2, FEA has only 2, HAP has only 2, NEU has only 2, "
        "SAD has only 2.")
    assert "epochs" not in res.stderr and "E0000" not in res.stderr  # no training bar, no TensorFlow noise
    assert not (tmp_path / "m").exists()
    pd.DataFrame({"path": [str(p) for p in clips], "emotion": "anger"}).to_csv(manifest, index=False)
    res = run_cli("train", "--init", "mfcc-cnn", "--manifest", str(manifest), "--out", str(tmp_path / "m"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == "sercli: The manifest has one class only (anger); a classifier " \
        "needs at least two."


def test_manifest_warns_about_classes_under_the_fine_tuning_minimum(tmp_path):
    for clip in sorted(EXAMPLES.glob("*.wav")):  # two clips per class
        (tmp_path / "mine" / clip.stem.split("_")[2]).mkdir(parents=True, exist_ok=True)
        (tmp_path / "mine" / clip.stem.split("_")[2] / clip.name).symlink_to(clip)
    res = run_cli("manifest", str(tmp_path / "mine"), "-o", str(tmp_path / "mine.csv"))
    assert res.returncode == 0
    assert "warning: ANG has 2, DIS has 2, FEA has 2, HAP has 2, NEU has 2, SAD has 2 clips; fine-tuning needs at " \
        "least 5 per class" in res.stderr


def test_a_replaced_head_keeps_the_weights_of_the_classes_it_shares_with_the_base():
    from sercli.models import load_model
    from sercli.training.loop import TrainOptions, _initial_model

    base = load_model("mfcc-cnn")
    new = _initial_model(TrainOptions(init="mfcc-cnn"), base.params, ["anger", "calm"], base)
    old_kernel, old_bias = keras.saving.load_model(base.path / "model.keras").get_layer("logits").get_weights()
    kernel, bias = new.get_layer("logits").get_weights()
    assert kernel.shape == (old_kernel.shape[0], 2)
    np.testing.assert_array_equal(kernel[:, 0], old_kernel[:, 0])
    assert bias[0] == old_bias[0] and not np.array_equal(kernel[:, 1], old_kernel[:, 1])
