"""Screen encoder-model heads by held-out corpora, on cached window embeddings.

Every arm is scored under every protocol at once, from the embeddings an encoder model's LiteRT
file gives (``window_embeddings``, cached in ``~/.cache/sercli``), on all six corpora of
``../shared/corpora`` and ``../shared/corpora-more``:

- ``loco``: each corpus held out in turn (LOCO-6); the head is trained on the other corpora's
  ``train`` and ``test`` rows (its ``val`` rows unused: C is the arm's), every corpus standardised
  with its own statistics; the held-out corpus is standardised with its own (``--adapt auto``);
  UAR over its classes, 7-way argmax;
- ``skewed``: the same heads on each held-out corpus's speaker-skewed subset (each speaker keeps
  two emotions, :func:`sercli.training.corpora.skewed`), standardised with that subset's statistics;
- ``split``: trained on ``split == train`` of every training corpus, tested on ``split == test``,
  each test corpus standardised with its own statistics; accuracy and UAR.

A clip's probabilities are the duration-weighted mean over its windows with speech (annotate's
rule). An arm: the encoder variant (a model directory: its ``model.tflite`` gives the
embeddings), C, corpus weighting (``clips``: every window counts once; ``corpora``: every corpus
weighs the same) and the training corpora (``all`` six, or ``english``: the four of
``../shared/corpora``; a held-out corpus is never trained on). Usage (from the repository root):

    python benchmarks/encoder_screen.py --models models/whisper-base runs/enc-masked \\
        --C 0.0003 0.001 0.003 0.01 --weighting clips corpora --train all english

Writes ``benchmarks/encoder_screen.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = [ROOT.parent / "shared" / "corpora" / "manifest.csv", ROOT.parent / "shared" / "corpora-more" / "manifest.csv"]
ENGLISH = ("crema-d", "ravdess", "savee", "tess")


class Corpus:
    """Every labelled clip's speech windows, with each window's clip and corpus, and the clip table."""

    def __init__(self, model: str) -> None:
        from sercli.training.corpora import read_manifest
        from sercli.reports import class_order
        from sercli.training import default_cache_dir
        from sercli.training.encoder_model import window_embeddings
        from sercli.training.finetune import ClipEmbeddings

        df = pd.concat([read_manifest(m) for m in MANIFESTS], ignore_index=True)
        df = df[df["emotion"].notna()]
        emb = window_embeddings(list(df["path"]), model, jobs=2, cache_dir=default_cache_dir())
        self.rows = df[df["path"].isin(emb)].reset_index(drop=True)
        self.classes = class_order(set(self.rows["emotion"]))
        self.y = self.rows["emotion"].map({c: i for i, c in enumerate(self.classes)}).to_numpy()
        self.data = ClipEmbeddings.of(list(self.rows["path"]), emb)
        self.corpus = self.rows["corpus"].to_numpy()[self.data.clip]

    def windows(self, clips: np.ndarray):
        from sercli.training.finetune import ClipEmbeddings

        keep = np.isin(self.data.clip, clips)
        return ClipEmbeddings(self.data.x[keep], self.data.clip[keep], self.data.weight[keep]), self.corpus[keep]


def standardised(x: np.ndarray, corpus: np.ndarray, speech: np.ndarray) -> np.ndarray:
    """``x`` z-scored per corpus, with the statistics of that corpus's windows with speech."""
    from sercli.heads import corpus_stats

    out = np.empty_like(x)
    for c in np.unique(corpus):
        m = corpus == c
        mean, scale = corpus_stats(x[m & speech])
        out[m] = (x[m] - mean) / scale
    return out


def fit(db: Corpus, clips: np.ndarray, C: float, weighting: str):
    """A head on ``clips``' speech windows, each corpus standardised with its own statistics."""
    from sercli.heads import fit_head

    w, corpus = db.windows(clips)
    speech = w.weight > 0
    z = standardised(w.x, corpus, speech)[speech]
    y = db.y[w.clip[speech]]
    sample_weight = None
    if weighting == "corpora":
        names, counts = np.unique(corpus[speech], return_counts=True)
        per = dict(zip(names, len(y) / (len(names) * counts)))
        sample_weight = np.array([per[c] for c in corpus[speech]])
    return fit_head(z, y, z[:0], y[:0], n_classes=len(db.classes), C=C, sample_weight=sample_weight)


def score(db: Corpus, head, clips: np.ndarray) -> dict:
    """Accuracy and UAR of the clips, each corpus standardised with its own statistics."""
    w, corpus = db.windows(clips)
    z = standardised(w.x, corpus, w.weight > 0)
    p = head.predict_proba(z)
    sums = np.zeros((len(clips), p.shape[1]))
    index = np.searchsorted(np.sort(clips), w.clip)
    np.add.at(sums, index, p * w.weight[:, None])
    pred, truth = sums.argmax(axis=1), db.y[np.sort(clips)]
    return {"accuracy": float((pred == truth).mean()),
            "uar": float(np.mean([np.mean(pred[truth == c] == c) for c in np.unique(truth)]))}


def arm_scores(db: Corpus, C: float, weighting: str, train_set: str) -> dict:
    from sercli.training.corpora import skewed

    rows = db.rows
    out = {}
    for held in sorted(rows["corpus"].unique()):
        pool = rows["corpus"].ne(held) & rows["split"].ne("val")
        if train_set == "english":
            pool &= rows["corpus"].isin(ENGLISH)
        head = fit(db, np.flatnonzero(pool), C, weighting)
        test = rows["corpus"].eq(held)
        out[f"loco {held}"] = score(db, head, np.flatnonzero(test))["uar"]
        out[f"skewed {held}"] = score(db, head, skewed(rows[test]).index.to_numpy())["uar"]
    train = rows["split"].eq("train") & (rows["corpus"].isin(ENGLISH) if train_set == "english" else True)
    head = fit(db, np.flatnonzero(train), C, weighting)
    for name, test in (("split", rows["split"].eq("test")), ("split english", rows["split"].eq("test") & rows["corpus"].isin(ENGLISH))):
        s = score(db, head, np.flatnonzero(test))
        out[f"{name} acc"], out[f"{name} uar"] = s["accuracy"], s["uar"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=[str(ROOT / "models" / "whisper-base")])
    ap.add_argument("--C", nargs="+", type=float, default=[0.0003, 0.001, 0.003, 0.01])
    ap.add_argument("--weighting", nargs="+", default=["clips", "corpora"])
    ap.add_argument("--train", nargs="+", default=["all", "english"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "encoder_screen.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    runs = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["model"], r["C"], r["weighting"], r["train"]) for r in runs}
    for model in args.models:
        db = Corpus(model)
        for C, weighting, train_set in itertools.product(args.C, args.weighting, args.train):
            key = (Path(model).name, C, weighting, train_set)
            if key in done:
                continue
            t0 = time.time()
            runs.append({"model": key[0], "C": C, "weighting": weighting, "train": train_set,
                         **arm_scores(db, C, weighting, train_set)})
            args.out.write_text(json.dumps(runs, indent=1))  # checkpointed after every arm
            print(f"{key}: {time.time() - t0:.0f} s", flush=True)
    print(table(pd.DataFrame(runs)))


def table(runs: pd.DataFrame) -> str:
    """One line per arm: LOCO-6 per corpus and mean, skewed LOCO mean, split."""
    corpora = sorted(c.removeprefix("loco ") for c in runs.columns if c.startswith("loco "))
    head = ["model", "C", "weighting", "train", *corpora, "LOCO-6 mean", "skewed mean", "split acc", "split UAR"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in runs.iterrows():
        loco = [r[f"loco {c}"] for c in corpora]
        skew = [r[f"skewed {c}"] for c in corpora]
        lines.append(f"| {r['model']} | {r['C']:g} | {r['weighting']} | {r['train']} | "
                     + " | ".join(f"{v:.3f}" for v in loco)
                     + f" | **{np.mean(loco):.3f}** | {np.mean(skew):.3f} | {r['split acc']:.3f} | {r['split uar']:.3f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
