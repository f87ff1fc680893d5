"""Does fine-tuning on a few labels beat the model it replaces? Simulated users, on cached embeddings.

Each corpus of ``../shared/corpora`` and ``../shared/corpora-more`` in turn plays the user's: its
base head is trained without it (leave-one-corpus-out, the shipped recipe of ``--base-model``'s
card), its speakers are split in two halves at random (a draw), the user labels k clips per
class from the first half, and every clip of the second half is the test set. Arms, scored by
clip UAR over the corpus's classes (each clip: the duration-weighted mean of its windows'
probabilities):

- ``zero-shot``: the base head, standardised with the corpus's statistics (``--adapt auto``),
  restricted to the corpus's classes (``annotate --classes``);
- ``new head``: what ``sercli train --init`` did before anchoring: a new logistic regression on
  the labelled clips, standardised by those clips, C chosen on a validation slice of them;
- ``anchored λ``: :func:`sercli.training.finetune.anchored_head` with pull λ; ``anchored c/n``:
  pull c over the number of labelled clips (the shipped rule, c = 30).

Usage (from the repository root; embeddings are cached in ``~/.cache/sercli`` on the first run):

    python benchmarks/finetune_sim.py --k 5 10 20 --draws 5                 # the shipped pull: 30 / clips
    python benchmarks/finetune_sim.py --k 5 10 20 --draws 5 --no-new-head --pulls 0.03 0.1 0.3 \
        --per-clip 1 3 10 20 30 60 --out benchmarks/finetune_pulls.json      # the screening behind it

Writes ``benchmarks/finetune_sim.json`` and prints the table (mean ± sd over draws).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from learning_curve import halves, pick  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = [ROOT.parent / "shared" / "corpora" / "manifest.csv", ROOT.parent / "shared" / "corpora-more" / "manifest.csv"]


def new_head_uar(labelled: pd.DataFrame, emb: dict, classes: list[str], test, y_test, seed: int) -> float:
    """The pre-anchoring ``train --init``: a new head on the labelled clips alone."""
    from sercli.training.encoder_model import EncoderOptions, _fit
    from sercli.training.finetune import clip_uar
    from sercli.training.options import FINE_TUNING, TrainOptions, split_rows

    rows = labelled[["path", "emotion", "speaker"]].reset_index(drop=True)
    train, val = split_rows(rows, TrainOptions(seed=seed, val_fraction=FINE_TUNING["val_fraction"]))
    head = _fit(train, val, emb, classes, EncoderOptions(norm="none", seed=seed))
    return clip_uar(head.logits(test.x), test, y_test)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--corpora", nargs="+", default=None, help="default: every corpus of the manifests")
    ap.add_argument("--k", nargs="+", type=int, default=[5, 10, 20])
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--pulls", nargs="*", type=float, default=[], help="fixed pulls to try")
    ap.add_argument("--per-clip", nargs="*", type=float, default=[30.0],
                    help="pulls that shrink with the labels: c / (labelled clips) for each c")
    ap.add_argument("--base-model", default=str(ROOT / "models" / "whisper-base"),
                    help="the encoder (and recipe) of the base heads")
    ap.add_argument("--no-new-head", action="store_true", help="skip the new-head arm")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "finetune_sim.json")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from sercli.training.corpora import read_manifest, split_labels
    from sercli.heads import corpus_stats
    from sercli.models import load_model
    from sercli.reports import class_order
    from sercli.training import default_cache_dir
    from sercli.training.encoder_model import window_embeddings
    from sercli.training.encoder_model import EncoderOptions, _fit
    from sercli.training.finetune import ClipEmbeddings, anchored_head, clip_uar, restricted_head

    df = pd.concat([read_manifest(m) for m in MANIFESTS], ignore_index=True)
    df = df[df["emotion"].notna()].reset_index(drop=True)
    emb = window_embeddings(list(df["path"]), args.base_model, jobs=2, cache_dir=default_cache_dir())
    df = df[df["path"].isin(emb)].reset_index(drop=True)
    recipe = load_model(args.base_model).card.get("training", {}).get("options", {})
    opts = EncoderOptions(**{k: v for k, v in recipe.items() if k in EncoderOptions.__dataclass_fields__})
    base_classes = tuple(class_order(set(df["emotion"])))
    runs = []
    for corpus in args.corpora or sorted(df["corpus"].unique()):
        t0 = time.time()
        split = split_labels(df, f"loco:{corpus}")
        base = _fit(df[split.eq("train")].reset_index(drop=True), df[split.eq("val")].reset_index(drop=True),
                    emb, list(base_classes), opts)
        user = df[df["corpus"].eq(corpus)].reset_index(drop=True)
        every = ClipEmbeddings.of(list(user["path"]), emb)
        stats = corpus_stats(every.x[every.weight > 0])
        classes = class_order(set(user["emotion"]))
        print(f"{corpus}: base head C {base.C} ({time.time() - t0:.0f} s), classes {', '.join(classes)}", flush=True)
        for draw in range(args.draws):
            labelled, test_rows = halves(user, draw)
            test = ClipEmbeddings.of(list(test_rows["path"]), emb)
            y_test = test_rows["emotion"].map({c: i for i, c in enumerate(classes)}).to_numpy()
            zero = restricted_head(base, base_classes, classes, stats)
            row = {"corpus": corpus, "draw": draw, "zero-shot": clip_uar(zero.logits(test.x), test, y_test)}
            for k in args.k:
                chosen = pick(labelled, k, draw).reset_index(drop=True)
                data = ClipEmbeddings.of(list(chosen["path"]), emb)
                y = chosen["emotion"].map({c: i for i, c in enumerate(classes)}).to_numpy()
                out = {**row, "k": k}
                if not args.no_new_head:
                    out["new head"] = new_head_uar(chosen, emb, classes, test, y_test, seed=draw)
                for pull in args.pulls:
                    head = anchored_head(base, base_classes, classes, data, y, stats, pull=pull)
                    out[f"anchored {pull:g}"] = clip_uar(head.logits(test.x), test, y_test)
                for c in args.per_clip:
                    head = anchored_head(base, base_classes, classes, data, y, stats, pull=c / len(chosen))
                    out[f"anchored {c:g}/n"] = clip_uar(head.logits(test.x), test, y_test)
                runs.append(out)
        print(table(pd.DataFrame(runs)[lambda d: d["corpus"].eq(corpus)]), flush=True)
    args.out.write_text(json.dumps(runs, indent=1))
    print(table(pd.DataFrame(runs)))


def table(runs: pd.DataFrame) -> str:
    """Mean ± sd over draws per corpus and k, and the mean over corpora; markdown."""
    arms = [c for c in runs.columns if c not in ("corpus", "draw", "k")]
    lines = ["| corpus | k | " + " | ".join(arms) + " |", "|---|---|" + "---|" * len(arms)]
    for (corpus, k), g in runs.groupby(["corpus", "k"]):
        lines.append(f"| {corpus} | {k} | " + " | ".join(f"{g[a].mean():.3f} ± {g[a].std():.3f}" for a in arms) + " |")
    for k, g in runs.groupby("k"):
        per = g.groupby("corpus")[arms].mean()
        lines.append(f"| **mean of {len(per)} corpora** | {k} | " + " | ".join(
            f"**{per[a].mean():.3f}** (worst gain over zero-shot {(per[a] - per['zero-shot']).min():+.3f})"
            for a in arms) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
