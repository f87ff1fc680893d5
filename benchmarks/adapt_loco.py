"""Unlabelled corpus adaptation measured under leave-one-corpus-out: align the held-out
corpus's mean spectral envelope (level removed; "+var": and its per-band spread) to the
training corpora's before windowing, with statistics taken over the whole corpus or per
speaker, and see what it does to UAR.

Acted corpora are balanced per speaker (every speaker records every emotion), which flatters
per-speaker statistics; so every condition is also run on a *skewed* version of the held-out
corpus where each speaker keeps only two emotions (drawn at random per speaker), as natural
recordings are. Base models: ``runs/loco/ARM-CORPUS-sSEED`` (``benchmarks/loco.sh``). Runs on
the training feature cache (``sercli train`` fills it), through the same windowing code as
annotate. Usage:

    python benchmarks/adapt_loco.py --arm dyn --seeds 0 1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from sercli.training.corpora import skewed

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT.parent / "shared" / "corpora" / "manifest.csv"


def envelope_stats(items: list, margin_db: float = 35.0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation per band of the level-removed log-mel over speech frames."""
    total, squares, n = 0.0, 0.0, 0
    for entries in items:
        mel, level = entries[0][0].astype(np.float32), entries[0][1].astype(np.float32)
        speech = level >= level.max() - margin_db
        env = mel[:, speech] - mel[:, speech].mean(axis=0)
        total = total + env.sum(axis=1)
        squares = squares + (env ** 2).sum(axis=1)
        n += env.shape[1]
    mean = total / n
    return mean, np.sqrt(np.maximum(squares / n - mean ** 2, 1e-6))


def aligned(mel: np.ndarray, source: tuple, target: tuple | None, var: bool) -> np.ndarray:
    """``mel`` with the target statistics replaced by the source (training) ones."""
    if target is None:
        return mel
    level = mel.mean(axis=0, keepdims=True)
    env = mel - level - target[0][:, None]
    if var:
        env = env * (source[1] / target[1])[:, None]
    return env + source[0][:, None] + level


def file_probs(model, temperature: float, items: list, params, stats: list, source, var: bool) -> np.ndarray:
    from sercli import windowing as W
    from sercli.models import softmax
    from sercli.results import aggregate

    wins = []
    for e, target in zip(items, stats):
        mel = aligned(e[0][0].astype(np.float32), source, target, var)
        level = e[0][1].astype(np.float32)
        wins.append(W.windows_from_log_mel(mel, level, params, duration_s=len(level) * params.hop_length
                                           / params.sample_rate))
    logits = model.predict(np.concatenate([w.x for w in wins]), batch_size=256, verbose=0)
    out, i = [], 0
    for w in wins:
        out.append(aggregate(softmax(logits[i:i + len(w.x)] / temperature), w.start_s, w.end_s, w.silent))
        i += len(w.x)
    return np.stack(out)


def record(results: list[dict], out: Path, truth: pd.Series, classes, probs: np.ndarray, **labels) -> None:
    """Score file probabilities ``probs`` against ``truth``; append the row (``labels`` + n, UAR,
    accuracy) to ``results``, print it and save all rows to ``out``."""
    from sercli.reports import scores

    s = scores(truth.astype(str).to_numpy(), np.array(classes)[probs.argmax(axis=1)])
    results.append({**labels, "n": len(truth), "uar": round(s["uar"], 4), "accuracy": round(s["accuracy"], 4)})
    print(results[-1], flush=True)
    out.write_text(json.dumps(results, indent=1))


def print_uar_table(results: list[dict], keys: list[str]) -> None:
    """Mean UAR per ``keys`` and held-out corpus, and the mean over corpora."""
    table = pd.DataFrame(results).groupby([*keys, "corpus"])["uar"].mean().unstack()
    table["mean"] = table.mean(axis=1)
    print(table.round(3).to_string())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arm", default="dyn")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--corpora", nargs="+", default=["crema-d", "ravdess", "savee"])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "adapt_loco.json")
    args = ap.parse_args()

    import keras

    from sercli.models import load_model
    from sercli.training import load_features

    manifest = pd.read_csv(MANIFEST, dtype={"speaker": str})
    manifest["path"] = [str(MANIFEST.parent / p) for p in manifest["path"]]
    results = []
    feats = None
    for seed in args.seeds:
        for corpus in args.corpora:
            model_dir = ROOT / "runs" / "loco" / f"{args.arm}-{corpus}-s{seed}"
            mdl = load_model(model_dir)
            net = keras.saving.load_model(model_dir / "model.keras", safe_mode=True)
            if feats is None:
                feats = load_features(list(manifest["path"]), mdl.params, cache_dir=Path.home() / ".cache" / "sercli",
                                      jobs=2)
            train_rows = manifest[manifest["corpus"].ne(corpus) & manifest["path"].isin(feats)]
            source = envelope_stats([feats[p] for p in train_rows["path"]])
            held = manifest[manifest["corpus"].eq(corpus) & manifest["path"].isin(feats)]
            for case, rows in (("balanced", held), ("skewed", skewed(held, seed))):
                items = [feats[p] for p in rows["path"]]
                corpus_stats = envelope_stats(items)
                by_speaker = {s: envelope_stats([feats[p] for p in g["path"]]) for s, g in rows.groupby("speaker")}
                conditions = {
                    "none": ([None] * len(rows), False),
                    "corpus mean": ([corpus_stats] * len(rows), False),
                    "corpus mean+var": ([corpus_stats] * len(rows), True),
                    "speaker mean": ([by_speaker[s] for s in rows["speaker"]], False),
                }
                for name, (stats, var) in conditions.items():
                    probs = file_probs(net, mdl.temperature, items, mdl.params, stats, source, var)
                    record(results, args.out, rows["emotion"], mdl.classes, probs, seed=seed, corpus=corpus,
                           case=case, adapt=name)
    print_uar_table(results, ["case", "adapt"])


if __name__ == "__main__":
    main()
