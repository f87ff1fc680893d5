"""Does ``sercli label``'s choice of clips beat chance? The learning-curve protocol
(``benchmarks/learning_curve.py``) with a simulated person at the page.

For each held-out corpus C (its base model trained without C: ``runs/loco/whisper-base-C``,
written by ``benchmarks/encoder_protocols.sh whisper-base --arch whisper-base --layers 3``) and
each draw, C's speakers are split in two halves (as the learning curve does). The base model
annotates the first half (every emotion: a real corpus holds classes the user does not label);
each strategy of :func:`sercli.labeling.queue` (``--by folder``: one folder per speaker here)
orders it, and the simulated person goes down the queue, labelling clips of the chosen classes
with their true label and skipping the others, until every class has k labels. ``sercli
train --init`` fine-tunes on those labels; ``sercli evaluate`` scores the second half (chosen
classes only). ``--shares`` makes the labelled half look like natural talk, where one class
dominates and others are rare: each draw keeps a random subset of every class so that the
classes have those shares (the classes not named share what is left); the test half keeps
every file. Usage (from the repository root; nothing else running for the timings):

    python benchmarks/label_choice.py --k 5 10 --draws 3 --classes anger happiness neutral sadness
    python benchmarks/label_choice.py --k 5 10 --draws 3 --exact --out benchmarks/label_choice_exact.json
    python benchmarks/label_choice.py --k 5 10 --draws 3 --strategies random spread \
        --shares neutral=0.5 sadness=0.2 happiness=0.15 anger=0.1 --out benchmarks/label_choice_skewed.json

Writes a JSON list of runs and prints the table (mean ± standard deviation over draws).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_curve import MANIFEST, ROOT, corpus_cells, halves, score  # noqa: E402


def simulate(order: list, truth: dict[str, str], classes: list[str], k: int,
             exact: bool = False) -> tuple[pd.DataFrame, int]:
    """The labels a person gives going down ``order`` until every class has ``k`` (or the queue
    ends), and how many clips they listened to. With ``exact``, a clip of a class that has its
    ``k`` already is skipped, so every strategy ends with the same labels per class."""
    counts = dict.fromkeys(classes, 0)
    labelled = []
    for n, clip in enumerate(order, start=1):
        label = truth[clip.path]
        if label in counts and not (exact and counts[label] >= k):
            counts[label] += 1
            labelled.append({"path": clip.path, "emotion": label})
        if min(counts.values()) >= k:
            return pd.DataFrame(labelled), n
    return pd.DataFrame(labelled), len(order)


def skew(pool: pd.DataFrame, shares: dict[str, float], draw: int) -> pd.DataFrame:
    """A random subset of ``pool`` whose classes have ``shares`` (the classes not named split the
    rest evenly); as large as the class that limits it allows."""
    others = [c for c in pool["emotion"].unique() if c not in shares]
    rest = max(0.0, 1.0 - sum(shares.values())) / max(len(others), 1)
    want = {c: shares.get(c, rest) for c in pool["emotion"].unique()}
    counts = pool["emotion"].value_counts()
    total = min(counts[c] / w for c, w in want.items() if w > 0)
    rng = np.random.default_rng(2000 + draw)
    parts = [g.iloc[rng.permutation(len(g))[: int(want[c] * total)]] for c, g in pool.groupby("emotion")]
    return pd.concat(parts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", nargs="+", default=["crema-d", "ravdess", "savee"])
    ap.add_argument("--k", nargs="+", type=int, default=[5, 10])
    ap.add_argument("--draws", type=int, default=3)
    ap.add_argument("--classes", nargs="+", default=["anger", "happiness", "neutral", "sadness"])
    ap.add_argument("--strategies", nargs="+", default=["random", "spread", "uncertain"])
    ap.add_argument("--base", default="runs/loco/whisper-base-{corpus}")
    ap.add_argument("--manifest", type=Path, default=MANIFEST)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "label_choice.json")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--exact", action="store_true", help="the simulated person skips clips of classes that have k")
    ap.add_argument("--shares", nargs="+", default=[], metavar="CLASS=SHARE",
                    help="shares of classes in the labelled half (natural talk: one class dominates)")
    args = ap.parse_args()
    shares = {c: float(v) for c, v in (s.split("=") for s in args.shares)}

    import sercli
    from sercli.evaluation import evaluate
    from sercli.labeling import queue

    manifest = pd.read_csv(args.manifest, dtype={"speaker": str})
    manifest["path"] = [str(args.manifest.parent / p) for p in manifest["path"]]
    runs = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["corpus"], r["draw"], r["k"], r["strategy"]) for r in runs}
    for corpus in args.corpora:
        base = args.base.format(corpus=corpus)
        rows = manifest[manifest["corpus"].eq(corpus)]
        for draw in range(args.draws):
            todo = [(k, s) for k in args.k for s in args.strategies if (corpus, draw, k, s) not in done]
            if not todo:
                continue
            pool, test = halves(rows, draw)
            if shares:
                pool = skew(pool, shares, draw)
            test = test[test["emotion"].isin(args.classes)]
            truth = dict(zip(pool["path"], pool["emotion"]))
            table = sercli.annotate(list(pool["path"]), model=base, jobs=args.jobs).files
            with tempfile.TemporaryDirectory() as tmp:
                tmp = Path(tmp)
                test.assign(split="test")[["path", "emotion", "speaker", "split"]].to_csv(tmp / "test.csv", index=False)
                for k, strategy in todo:
                    order = queue(table, strategy=strategy, by="folder", seed=draw)
                    labels, listened = simulate(order, truth, args.classes, k, exact=args.exact)
                    labels.to_csv(tmp / "labels.csv", index=False)
                    model = tmp / f"model-{strategy}-k{k}"
                    t0 = time.perf_counter()
                    proc = subprocess.run([sys.executable, "-m", "sercli", "train", "--init", base, "--manifest",
                                           str(tmp / "labels.csv"), "--out", str(model), "--jobs", str(args.jobs)],
                                          capture_output=True, text=True)
                    wall = time.perf_counter() - t0
                    if proc.returncode != 0:
                        sys.exit(f"fine-tuning failed: {proc.stderr.strip()}")
                    _, pred = evaluate(str(model), tmp / "test.csv", jobs=args.jobs)
                    runs.append({"corpus": corpus, "draw": draw, "k": k, "strategy": strategy,
                                 "pool": len(pool), "listened": listened, "n_labels": len(labels),
                                 "labels": labels["emotion"].value_counts().to_dict(), "n_test": len(test),
                                 "uar": score(pred, None), "wall_s": round(wall, 1)})
                    args.out.write_text(json.dumps(runs, indent=1))
                    print(f"{corpus} draw {draw} k {k} {strategy}: UAR {runs[-1]['uar']:.3f} "
                          f"({listened} listened, {len(labels)} labels, {wall:.0f} s)", flush=True)
    print(table_of(runs))


def table_of(runs: list[dict]) -> str:
    """Markdown table: per k and strategy, UAR per corpus (mean ± sd over draws), the mean over
    corpora, clips listened to and labels given (means)."""
    df = pd.DataFrame(runs)
    corpora = sorted(df["corpus"].unique())
    lines = ["| k | choice | " + " | ".join(corpora) + " | mean UAR | clips listened | labels |",
             "|---" * (len(corpora) + 5) + "|"]
    for (k, strategy), g in df.groupby(["k", "strategy"]):
        cells = corpus_cells(g, corpora)
        per_draw = g.groupby("draw")["uar"].mean()
        lines.append(f"| {k} | {strategy} | " + " | ".join(cells)
                     + f" | {per_draw.mean():.3f} ± {per_draw.std(ddof=0):.3f}"
                     + f" | {g['listened'].mean():.0f} | {g['n_labels'].mean():.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
