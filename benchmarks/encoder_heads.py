"""Screen emotion heads on cached Whisper-encoder embeddings (``benchmarks/encoder_cache.py``).

Every variant is scored under every protocol at once, from the same cache:
- ``split``: train on ``split == train`` (the head's C chosen on ``val``), test on ``split == test``;
- ``loco:C`` for C in CREMA-D, RAVDESS, SAVEE: train on the other corpora's train+test rows
  (C chosen on their ``val`` rows), test on every file of C (``balanced``), and on two *skewed*
  copies of C in which each speaker keeps two emotions (seeds 0 and 1), as natural recordings do.
A window's embedding is the mean and standard deviation over time of one encoder block's output;
a clip's probabilities are the duration-weighted mean over its windows with speech, as
``annotate`` computes them. UAR is over the classes present, with the 7-way argmax (``uar``) and
with the argmax restricted to the classes present (``uar_restricted``). Normalisation (``--norms``):
``none``; ``corpus``: every corpus, training or test, z-scored with its own statistics;
``corpus_ref``: training corpora z-scored with their own, test clips with the pooled statistics
of the training windows (what an encoder model does without ``--adapt corpus``). Usage:

    python benchmarks/encoder_heads.py --size base --layers 1 2 3 4 5 6 --out benchmarks/encoder_heads_base.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from sercli.training.corpora import skewed
from sercli.training.embeddings import load_cache
from sercli.heads import fit_head, prior_adjust, reference_stats, standardise
from sercli.training import default_cache_dir

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT.parent / "shared" / "corpora" / "manifest.csv"
EMOTIONS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")


def uar(truth: np.ndarray, pred: np.ndarray) -> float:
    return float(np.mean([np.mean(pred[truth == c] == c) for c in np.unique(truth)]))


class Data:
    """Window embeddings of one block, with the clip table."""

    def __init__(self, size: str, layer: str, pool: str) -> None:
        manifest = pd.read_csv(MANIFEST, dtype={"speaker": str})
        paths = [str(MANIFEST.parent / p) for p in manifest["path"]]
        cache = load_cache(paths, default_cache_dir() / f"whisper-{size}")
        blocks = [int(k) for k in str(layer).split("+")]  # "2+3+4": the blocks' embeddings side by side
        d = cache.emb.shape[2] // 2
        parts = [cache.emb[:, k - 1, :d] if pool == "mean" else cache.emb[:, k - 1] for k in blocks]
        self.emb = np.concatenate(parts, axis=1).astype(np.float32)
        self.clip, self.silent = cache.clip, cache.silent
        self.weight = np.maximum(cache.end_s - cache.start_s, 1e-3)
        self.manifest = manifest
        self.y = manifest["emotion"].map({c: i for i, c in enumerate(EMOTIONS)}).to_numpy()

    def windows_of(self, clips: np.ndarray) -> np.ndarray:
        """Window indices of ``clips`` with speech (a clip with none has no window here)."""
        member = np.isin(self.clip, clips)
        return np.flatnonzero(member & ~self.silent)

    def clip_probs(self, probs: np.ndarray, idx: np.ndarray, clips: np.ndarray) -> np.ndarray:
        """Duration-weighted mean of window ``probs`` (rows of ``idx``) per clip, in ``clips`` order."""
        pos = {c: i for i, c in enumerate(clips)}
        out = np.zeros((len(clips), probs.shape[1]))
        wsum = np.zeros(len(clips))
        for row, w in enumerate(idx):
            k = pos[self.clip[w]]
            out[k] += probs[row] * self.weight[w]
            wsum[k] += self.weight[w]
        return out / np.maximum(wsum, 1e-9)[:, None]


def run(data: Data, *, norm: str, head: str, seed: int, prior: bool) -> list[dict]:
    man = data.manifest
    corpus = man["corpus"].to_numpy()
    out = []
    folds = [("split", np.flatnonzero(man["split"].eq("train")), np.flatnonzero(man["split"].eq("val")),
              [("test", np.flatnonzero(man["split"].eq("test")))])]
    for held in ("crema-d", "ravdess", "savee"):
        rest = man["corpus"].ne(held)
        tests = [("balanced", np.flatnonzero(~rest))]
        held_rows = man[~rest]
        tests += [(f"skewed{s}", np.sort(skewed(held_rows, s).index.to_numpy())) for s in (0, 1)]
        folds.append((f"loco:{held}", np.flatnonzero(rest & man["split"].isin(["train", "test"])),
                      np.flatnonzero(rest & man["split"].eq("val")), tests))
    for protocol, train, val, tests in folds:
        tr_idx, va_idx = data.windows_of(train), data.windows_of(val)
        groups = corpus[data.clip] if norm != "none" else None
        x_all = data.emb
        xtr = x_all[tr_idx] if groups is None else standardise(x_all[tr_idx], groups[tr_idx])
        xva = x_all[va_idx] if groups is None else standardise(x_all[va_idx], groups[va_idx])
        model = fit_head(xtr, data.y[data.clip[tr_idx]], xva, data.y[data.clip[va_idx]], kind=head, seed=seed,
                         n_classes=len(EMOTIONS))
        for case, clips in tests:
            idx = data.windows_of(clips)
            x = x_all[idx]
            if norm == "corpus":  # each test corpus with its own statistics (annotate --adapt corpus)
                x = standardise(x, corpus[data.clip[idx]])
            elif norm == "corpus_ref":  # trained per corpus; tested with the training corpora's mean statistics
                mean, scale = reference_stats(x_all[tr_idx], groups[tr_idx])
                x = (x - mean) / scale
            probs = data.clip_probs(model.predict_proba(x), idx, clips)
            if prior:
                probs = prior_adjust(probs, model.train_prior)
            truth = data.y[clips]
            present = np.unique(truth)
            restricted = np.full_like(probs, -np.inf)
            restricted[:, present] = probs[:, present]
            pred = probs.argmax(axis=1)
            conf = probs.max(axis=1)
            correct = pred == truth
            bins = np.minimum((conf * 15).astype(int), 14)
            ece = sum(abs(correct[bins == b].mean() - conf[bins == b].mean()) * (bins == b).mean()
                      for b in range(15) if (bins == b).any())
            out.append({"protocol": protocol, "case": case, "n": len(clips),
                        "accuracy": round(float(correct.mean()), 4), "uar": round(uar(truth, pred), 4),
                        "uar_restricted": round(uar(truth, restricted.argmax(axis=1)), 4),
                        "ece": round(float(ece), 4), "C": model.C,
                        "pred_share_max": round(float(np.bincount(pred, minlength=7).max() / len(pred)), 3)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="base")
    ap.add_argument("--layers", nargs="+", default=["3"], help="blocks, or blocks joined by + (side by side)")
    ap.add_argument("--norms", nargs="+", default=["none", "corpus"])
    ap.add_argument("--heads", nargs="+", default=["linear"])
    ap.add_argument("--pools", nargs="+", default=["meanstd"])
    ap.add_argument("--priors", nargs="+", default=["none"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    results = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["size"], str(r["layer"]), r["pool"], r["norm"], r["head"], r["prior"], r["seed"]) for r in results}
    for layer, pool in itertools.product(args.layers, args.pools):
        data = None
        for norm, head, prior, seed in itertools.product(args.norms, args.heads, args.priors, args.seeds):
            key = (args.size, layer, pool, norm, head, prior, seed)
            if key in done:
                continue
            data = data or Data(args.size, layer, pool)
            t = time.time()
            rows = run(data, norm=norm, head=head, seed=seed, prior=prior == "saerens")
            for r in rows:
                results.append(dict(zip(("size", "layer", "pool", "norm", "head", "prior", "seed"), key), **r))
            args.out.write_text(json.dumps(results, indent=1))
            summary(pd.DataFrame(results[-len(rows):]), f"{key} {time.time() - t:.0f}s")
    summary(pd.DataFrame(results), "all")


def summary(df: pd.DataFrame, title: str) -> None:
    """One line per variant: split acc, LOCO mean UAR (balanced, skewed), restricted, ECE."""
    keys = ["size", "layer", "pool", "norm", "head", "prior"]
    if "size" not in df:
        df = df.assign(size="", layer=0, pool="", norm="", head="", prior="")
    df = df.assign(layer=df["layer"].astype(str))
    rows = []
    for k, g in df.groupby(keys):
        split = g[g.protocol.eq("split")]
        loco = g[g.protocol.str.startswith("loco")]
        bal, skw = loco[loco.case.eq("balanced")], loco[loco.case.str.startswith("skewed")]
        rows.append(dict(zip(keys, k), split_acc=split.accuracy.mean(), split_uar=split.uar.mean(),
                         loco=bal.uar.mean(), loco_c=bal.groupby("protocol").uar.mean().round(3).tolist(),
                         loco_restr=bal.uar_restricted.mean(), skewed=skw.uar.mean(),
                         skewed_restr=skw.uar_restricted.mean(), loco_ece=bal.ece.mean(),
                         seeds=g.seed.nunique() if "seed" in g else 1))
    print(f"== {title}")
    print(pd.DataFrame(rows).round(3).to_string(index=False), flush=True)


if __name__ == "__main__":
    main()
