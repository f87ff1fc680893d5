"""Learning curve of ``sercli train --init``: UAR on a corpus the base model never heard, after
fine-tuning on k labelled clips per class of it, against the base model as it is (zero-shot).

Leave-one-corpus-out: the base for corpus C was trained without C (``benchmarks/loco.sh dyn C 0``,
which writes ``runs/loco/dyn-C-s0``). For each draw, C's speakers are split in two halves at
random; k clips per class are drawn from the first half (nested: the 5 are among the 10, ...)
and fine-tuned on with the default ``sercli train --init`` settings; every file of the second
half is the test set. Fine-tuning runs as a user would run it, from a fresh feature cache, and
its wall time is measured. Usage (from the repository root; nothing else running):

    python benchmarks/learning_curve.py --corpora crema-d ravdess savee --k 5 10 25 50 --draws 3
    python benchmarks/learning_curve.py --corpora crema-d ravdess savee --k 10 50 --draws 3 \\
        --classes anger happiness neutral sadness --out benchmarks/learning_curve_4class.json

Writes a JSON list of runs and prints the table (mean ± standard deviation over draws).
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT.parent / "shared" / "corpora" / "manifest.csv"


def halves(corpus: pd.DataFrame, draw: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The corpus's rows of a random half of its speakers (labelled), and of the other half (test)."""
    speakers = np.random.default_rng(draw).permutation(sorted(corpus["speaker"].astype(str).unique()))
    labelled = set(speakers[: (len(speakers) + 1) // 2])
    mask = corpus["speaker"].astype(str).isin(labelled)
    return corpus[mask], corpus[~mask]


def pick(labelled: pd.DataFrame, k: int, draw: int) -> pd.DataFrame:
    """k clips per class (all of a class when it has fewer); nested in k for a fixed draw."""
    rng = np.random.default_rng(1000 + draw)
    parts = []
    for _, g in labelled.groupby("emotion", sort=True):
        order = rng.permutation(len(g))
        parts.append(g.iloc[order[:k]])
    return pd.concat(parts)


def score(pred: pd.DataFrame, classes: list[str] | None) -> float:
    """UAR of the predictions; with ``classes``, the argmax over those classes' probabilities."""
    from sercli.reports import scores

    ok = pred[pred["status"].eq("ok")]
    emotion = ok["emotion"].astype(str)
    if classes is not None:
        cols = [f"prob_{c}" for c in classes]
        emotion = pd.Series(np.array(classes)[ok[cols].to_numpy(dtype=float).argmax(axis=1)], index=ok.index)
    return float(scores(ok["true"].astype(str), emotion)["uar"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", nargs="+", default=["crema-d", "ravdess", "savee"])
    ap.add_argument("--k", nargs="+", type=int, default=[5, 10, 25, 50])
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--classes", nargs="+", help="a label set of the user's own: keep only these classes")
    ap.add_argument("--base", default="runs/loco/dyn-{corpus}-s0", help="base model per held-out corpus")
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "learning_curve.json")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--train-args", default="", help="extra sercli train options (screening other settings)")
    args = ap.parse_args()

    from sercli.evaluation import evaluate

    manifest = pd.read_csv(args.manifest, dtype={"speaker": str})
    manifest["path"] = [str(args.manifest.parent / p) for p in manifest["path"]]
    runs = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["corpus"], r["draw"], r["k"]) for r in runs}
    for corpus in args.corpora:
        base = args.base.format(corpus=corpus)
        rows = manifest[manifest["corpus"].eq(corpus)]
        if args.classes:
            rows = rows[rows["emotion"].isin(args.classes)]
        for draw in range(args.draws):
            labelled, test = halves(rows, draw)
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                test.assign(split="test")[["path", "emotion", "speaker", "split"]].to_csv(tmp / "test.csv",
                                                                                          index=False)
                if (corpus, draw, 0) not in done:
                    _, pred = evaluate(base, tmp / "test.csv", jobs=args.jobs)
                    runs.append({"corpus": corpus, "draw": draw, "k": 0, "n_test": len(test),
                                 "uar": score(pred, None),
                                 "uar_restricted": score(pred, args.classes) if args.classes else None})
                    args.out.write_text(json.dumps(runs, indent=1))
                for k in args.k:
                    if (corpus, draw, k) in done:
                        continue
                    train = pick(labelled, k, draw)
                    train[["path", "emotion", "speaker"]].to_csv(tmp / f"k{k}.csv", index=False)
                    model = tmp / f"model-k{k}"
                    t0 = time.perf_counter()
                    proc = subprocess.run([sys.executable, "-m", "sercli", "train", "--init", base, "--manifest",
                                           str(tmp / f"k{k}.csv"), "--out", str(model), "--cache-dir",
                                           str(tmp / f"cache-k{k}"), "--jobs", str(args.jobs),
                                           *shlex.split(args.train_args)],
                                          capture_output=True, text=True)
                    wall = time.perf_counter() - t0
                    if proc.returncode != 0:
                        sys.exit(f"fine-tuning failed: {proc.stderr.strip().splitlines()[-1]}")
                    _, pred = evaluate(str(model), tmp / "test.csv", jobs=args.jobs)
                    card = json.loads((model / "card.json").read_text())
                    runs.append({"corpus": corpus, "draw": draw, "k": k, "n_train": len(train),
                                 "n_test": len(test), "uar": score(pred, None), "wall_s": round(wall, 1),
                                 "best_epoch": card["training"]["best_epoch"],
                                 "history": [round(h["val_macro_f1"], 3) for h in card["training"]["history"]],
                                 "classes": card["classes"]})
                    args.out.write_text(json.dumps(runs, indent=1))
                    print(f"{corpus} draw {draw} k {k}: UAR {runs[-1]['uar']:.3f} ({wall:.0f} s)", flush=True)
    print(table(runs))


def table(runs: list[dict]) -> str:
    """Markdown table: UAR per corpus and k (mean ± sd over draws), the gain over zero-shot, wall time."""
    df = pd.DataFrame(runs)
    zero = df[df["k"].eq(0)].set_index(["corpus", "draw"])["uar"]
    df["gain"] = df["uar"] - [zero.get((c, d), np.nan) for c, d in zip(df["corpus"], df["draw"])]
    corpora = sorted(df["corpus"].unique())
    lines = ["| k per class | " + " | ".join(corpora) + " | mean UAR | mean gain | fine-tuning wall time |",
             "|---" * (len(corpora) + 4) + "|"]
    for k, g in df.groupby("k"):
        cells = corpus_cells(g, corpora)
        per_draw = g.groupby("draw")[["uar", "gain"]].mean()  # mean over corpora, per draw
        wall = f"{g['wall_s'].mean():.0f} s (max {g['wall_s'].max():.0f})" if k else "—"
        lines.append(f"| {'zero-shot' if k == 0 else k} | " + " | ".join(cells)
                     + f" | {per_draw['uar'].mean():.3f} ± {per_draw['uar'].std(ddof=0):.3f}"
                     + f" | {per_draw['gain'].mean():+.3f} | {wall} |")
    return "\n".join(lines)


def corpus_cells(runs: pd.DataFrame, corpora: list[str]) -> list[str]:
    """Per corpus, "mean ± sd" of the runs' UAR over draws ("—" for a corpus without runs)."""
    cells = []
    for c in corpora:
        u = runs[runs["corpus"].eq(c)]["uar"]
        cells.append(f"{u.mean():.3f} ± {u.std(ddof=0):.3f}" if len(u) else "—")
    return cells


if __name__ == "__main__":
    main()
