"""Your labels never make it worse: annotate restricted to your classes (the zero-shot baseline),
fine-tuning anchored to the base model's head, the cross-validated comparison it prints, and a
test set labelled blind on speakers the training labels never had."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import EXAMPLES, run_cli

from sercli.heads import Head, fit_anchored
from sercli.reports import read_results


def test_annotate_with_classes_renormalises_the_models_probabilities_over_those_classes(tmp_path):
    full, mine = tmp_path / "full.parquet", tmp_path / "mine.parquet"
    assert run_cli("annotate", str(EXAMPLES), "--model", "mfcc-cnn", "-o", str(full), "-q").returncode == 0
    res = run_cli("annotate", str(EXAMPLES), "--model", "mfcc-cnn", "-o", str(mine), "-q",
                  "--classes", "Angry,sad,neutral,happy")  # the spellings summarize --map reads
    assert res.returncode == 0, res.stderr
    a, b = read_results(full).sort_values("path"), read_results(mine).sort_values("path")
    kept = ["anger", "happiness", "neutral", "sadness"]
    assert [c for c in b.columns if c.startswith("prob_")] == [f"prob_{c}" for c in kept]
    sub = a[[f"prob_{c}" for c in kept]].to_numpy()
    np.testing.assert_allclose(b[[f"prob_{c}" for c in kept]].to_numpy(), sub / sub.sum(axis=1, keepdims=True),
                               atol=1e-5)
    assert list(b["emotion"].astype(str)) == [kept[i] for i in sub.argmax(axis=1)]
    from sercli.output import table_metadata

    assert table_metadata(mine)["classes"] == kept


def test_a_resume_keeps_the_classes_and_another_set_or_an_unknown_class_is_one_sentence(tmp_path):
    out = tmp_path / "e.parquet"
    first = sorted(EXAMPLES.glob("*.wav"))[:6]
    assert run_cli("annotate", *map(str, first), "--model", "mfcc-cnn", "-o", str(out), "-q",
                   "--classes", "anger,sadness").returncode == 0
    res = run_cli("annotate", str(EXAMPLES), "--model", "mfcc-cnn", "-o", str(out), "-q", "--resume")
    assert res.returncode == 0, res.stderr
    df = read_results(out)
    assert len(df) == 12 and [c for c in df.columns if c.startswith("prob_")] == ["prob_anger", "prob_sadness"]
    res = run_cli("annotate", str(EXAMPLES), "--model", "mfcc-cnn", "-o", str(out), "-q", "--resume",
                  "--classes", "anger,fear")
    assert res.returncode == 2 and "--classes: anger sadness then, anger fear now" in res.stderr
    res = run_cli("annotate", str(EXAMPLES), "--model", "mfcc-cnn", "-o", str(tmp_path / "x.csv"), "-q",
                  "--classes", "calm,anger")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "has no class 'calm'" in res.stderr and "sercli label" in res.stderr and len(res.stderr.splitlines()) == 1


def test_fit_anchored_stays_at_its_start_under_a_strong_pull_and_leaves_it_under_a_weak_one():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(60, 8))
    y = (z[:, 0] > 0).astype(int)
    w0, b0 = rng.normal(size=(8, 2)), np.array([0.3, -0.3])
    w, b = fit_anchored(z, y, w0, b0, pull=1e4)
    np.testing.assert_allclose(w, w0, atol=1e-3)
    w, b = fit_anchored(z, y, w0, b0, pull=1e-3)
    assert ((z @ w + b).argmax(axis=1) == y).mean() > 0.95 > ((z @ w0 + b0).argmax(axis=1) == y).mean()


@pytest.fixture(scope="module")
def labelled(shared, tmp_path_factory) -> Path:
    """6 clips per class of RAVDESS from 6 speakers, labelled in a user's spellings, and a class of
    their own (``tense``: the fear clips); the corpus folder stands for their recordings."""
    m = pd.read_csv(shared / "manifest.csv", dtype={"speaker": str})
    m = m[m["corpus"].eq("ravdess")]
    m = m[m["speaker"].isin(sorted(m["speaker"].unique())[:6])]
    spelling = {"anger": "Angry", "sadness": "sad", "neutral": "neutral", "fear": "tense"}
    rows = [m[m["emotion"].eq(emotion)].groupby("speaker").head(1).assign(emotion=label)
            for emotion, label in spelling.items()]
    df = pd.concat(rows)
    df = df.assign(path=[str(shared / p) for p in df["path"]])
    out = tmp_path_factory.mktemp("ft") / "labels.csv"
    df[["path", "emotion", "speaker"]].to_csv(out, index=False)
    return out


def test_anchored_fine_tuning_starts_from_the_base_heads_weights_and_prints_the_comparison(labelled, shared, tmp_path):
    from sercli.models import load_model
    from sercli.training.finetune import restricted_logits, base_classes_of, _in_z

    out = tmp_path / "mine"
    res = run_cli("train", "--init", "whisper-base", "--manifest", str(labelled), "--out", str(out), "--jobs", "2",
                  "--corpus", str(shared / "ravdess"), timeout=600)
    assert res.returncode == 0, res.stderr
    line = res.stdout.strip().splitlines()[-1]
    assert line.startswith("cross-validated UAR (") and "whole speakers" in line and "base model" in line
    card = json.loads((out / "card.json").read_text())
    tr = card["training"]
    assert card["classes"] == ["anger", "neutral", "sadness", "tense"]  # the base's spelling, then the new class
    assert tr["class_mapping"] == {"Angry": "anger", "neutral": "neutral", "sad": "sadness"}
    assert tr["comparison_line"] == line and len(tr["comparison"]["tuned_uar"]) >= 2
    assert tr["standardised_by"].startswith("the statistics of") and card["adapt_default"] == "corpus"
    assert line.split(": ", 1)[1] in (out / "CARD.md").read_text()

    base = load_model("whisper-base")
    start, _ = restricted_logits(_in_z(base.head), card["classes"], base.all_classes,
                                 base_classes_of(card["classes"], base.all_classes))
    (w, _), = Head.load(out / "head.npz").layers
    for j in range(3):  # each shared class moved a little from the base's weights, not far
        cos = w[:, j] @ start[:, j] / np.linalg.norm(w[:, j]) / np.linalg.norm(start[:, j])
        assert cos > 0.8 and np.linalg.norm(w[:, j] - start[:, j]) < 0.5 * np.linalg.norm(start[:, j])
    assert np.linalg.norm(w[:, 3]) < 0.5 * np.linalg.norm(start[:, 0])  # tense started from zero
    res = run_cli("annotate", str(EXAMPLES), "--model", str(out), "-o", str(tmp_path / "e.parquet"), "-q")
    assert res.returncode == 0, res.stderr
    assert [c for c in read_results(tmp_path / "e.parquet").columns if c.startswith("prob_")] == \
        ["prob_anger", "prob_neutral", "prob_sadness", "prob_tense"]


def test_where_the_base_wins_on_the_users_own_labels_the_base_is_what_is_written(shared, tmp_path):
    """RAVDESS is one of the base model's training corpora: on 40 of its clips, fine-tuning loses the
    cross-validation, so the model written answers as the base restricted to the four classes."""
    import sercli
    from sercli.models import load_model

    m = pd.read_csv(shared / "manifest.csv", dtype={"speaker": str})
    m = m[m["corpus"].eq("ravdess") & m["emotion"].isin(["anger", "happiness", "neutral", "sadness"])]
    rows = pd.concat([g.sample(10, random_state=0) for _, g in m.groupby("emotion")])
    rows.assign(path=[str(shared / p) for p in rows["path"]])[["path", "emotion", "speaker"]].to_csv(
        tmp_path / "mine.csv", index=False)
    res = run_cli("train", "--init", "whisper-base", "--manifest", str(tmp_path / "mine.csv"), "--out",
                  str(tmp_path / "m"), "--jobs", "2", timeout=600)
    assert res.returncode == 0, res.stderr
    tr = json.loads((tmp_path / "m" / "card.json").read_text())["training"]
    if tr["comparison"]["tuned_mean"] >= tr["comparison"]["base_mean"]:
        pytest.skip("fine-tuning won this cross-validation; the fallback is not exercised")
    assert "the model written is the base model answering among them" in res.stdout
    assert tr["method"].startswith("the base model's head restricted")
    paths = list(rows.assign(path=[str(shared / p) for p in rows["path"]])["path"])[:8]
    head = load_model(str(tmp_path / "m")).head
    shift = [*head.mean, *head.scale]  # both standardised alike: the statistics it was written with
    mine = sercli.annotate(paths, model=str(tmp_path / "m"), jobs=2, shift=shift).files
    base = sercli.annotate(paths, model="whisper-base", jobs=2, shift=shift,
                           classes=["anger", "happiness", "neutral", "sadness"]).files
    assert mine["emotion"].tolist() == base["emotion"].tolist()
    np.testing.assert_allclose(mine.filter(like="prob_").to_numpy(float), base.filter(like="prob_").to_numpy(float),
                               atol=1e-4)
    assert load_model(str(tmp_path / "m")).classes == ("anger", "happiness", "neutral", "sadness")


def test_fine_tuning_a_cnn_is_refused_in_one_sentence_pointing_to_the_encoder_model(tmp_path):
    clips = sorted(EXAMPLES.glob("*.wav"))
    pd.DataFrame({"path": [str(p) for p in clips] * 3, "emotion": [p.stem.split("_")[2] for p in clips] * 3}) \
        .to_csv(tmp_path / "mine.csv", index=False)
    res = run_cli("train", "--init", "mfcc-cnn", "--manifest", str(tmp_path / "mine.csv"), "--out", str(tmp_path / "m"))
    assert res.returncode == 2 and "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert "--init whisper-base" in res.stderr and not (tmp_path / "m").exists()


def _table(paths: list[str]) -> pd.DataFrame:
    n = len(paths)
    return pd.DataFrame({"path": paths, "status": "ok", "emotion": "anger", "prob_anger": np.full(n, 0.6),
                         "prob_sadness": np.full(n, 0.4), "model": "m"})


def test_a_test_set_leaves_out_the_training_labels_speakers_and_recordings_and_hides_the_guess(tmp_path):
    from sercli.label_server import LabelSession
    from sercli.labeling import LabelBook, Taken, choose

    paths = [f"/data/spk{s}/take{t}.wav" for s in range(4) for t in range(3)]
    table = _table(paths)
    train = LabelBook(tmp_path / "train.csv", ["anger", "sadness"])
    clips, _ = choose(table, train, by=r"/(?P<speaker>spk\d)/")
    first = next(c for c in clips if c.group == "spk0")
    train.add(first, "anger")
    test = LabelBook(tmp_path / "test.csv", ["anger", "sadness"])
    chosen, left_out = choose(table, test, by=r"/(?P<speaker>spk\d)/", taken=Taken.of([tmp_path / "train.csv"]))
    assert left_out == 3 and {c.group for c in chosen} == {"spk1", "spk2", "spk3"}
    chosen, left_out = choose(table, test, taken=Taken.of([tmp_path / "train.csv"]))  # no --by: its recording only
    assert left_out == 1 and first.path not in {c.path for c in chosen}
    state = LabelSession(chosen, test, target=5, minimum=5, command="", purpose="test").state()
    assert state["clip"]["predicted"] is None and state["clip"]["confidence"] is None
    state = LabelSession(chosen, test, target=5, minimum=5, command="", purpose="train").state()
    assert state["clip"]["predicted"] == "anger"


def test_a_test_set_is_refused_while_a_session_still_writes_the_training_labels(tmp_path):
    from sercli.labeling import LabelBook, Taken
    from sercli.output import OutputLock

    LabelBook(tmp_path / "train.csv", ["anger"])._save([])
    lock = OutputLock(tmp_path / "train.csv")
    lock.acquire()
    try:
        with pytest.raises(ValueError, match="still adding to"):
            Taken.of([tmp_path / "train.csv"])
    finally:
        lock.release()
    assert Taken.of([tmp_path / "train.csv"]).sources == frozenset()


def test_continuing_a_label_file_with_other_classes_or_more_classes_than_keys_is_refused(tmp_path):
    from sercli.labeling import LabelBook, choose

    book = LabelBook(tmp_path / "l.csv", ["angry", "calm"])
    clips, _ = choose(_table(["/a.wav", "/b.wav"]), book)
    book.add(clips[0], "angry")
    with pytest.raises(ValueError, match=r"holds labels of other classes \(angry\)"):
        LabelBook(tmp_path / "l.csv", ["Angry", "calm"])
    with pytest.raises(ValueError, match="a key for 10 classes"):
        LabelBook(tmp_path / "m.csv", [f"c{i}" for i in range(11)])
