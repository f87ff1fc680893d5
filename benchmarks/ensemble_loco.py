"""Ensembles measured under leave-one-corpus-out: average the window probabilities of several
LOCO models of the same held-out corpus and score the held-out corpus, alone and with
corpus-mean envelope alignment (``benchmarks/adapt_loco.py``).

Each member is ``runs/loco/<name>-CORPUS`` (``benchmarks/loco.sh``), e.g. ``dyn-%s-s0``; the
``%s`` takes the held-out corpus. An ensemble is a ``+``-joined list of members. Runs on the
training feature cache, through the same windowing code as annotate; probabilities at each
member's in-domain temperature. Usage:

    python benchmarks/ensemble_loco.py dyn-%s-s0 dyn-%s-s1 dyn-%s-s0+dyn-%s-s1
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from adapt_loco import MANIFEST, ROOT, envelope_stats, file_probs, print_uar_table, record


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("ensembles", nargs="+", help="members joined by +, %%s = held-out corpus")
    ap.add_argument("--corpora", nargs="+", default=["crema-d", "ravdess", "savee"])
    ap.add_argument("--adapt", action="store_true", help="also with corpus-mean envelope alignment")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "ensemble_loco.json")
    args = ap.parse_args()

    import keras

    from sercli.models import load_model
    from sercli.training import load_features

    manifest = pd.read_csv(MANIFEST, dtype={"speaker": str})
    manifest["path"] = [str(MANIFEST.parent / p) for p in manifest["path"]]
    results = json.loads(args.out.read_text()) if args.out.exists() else []
    done = {(r["ensemble"], r["corpus"], r["adapt"]) for r in results}
    feats = None
    for corpus in args.corpora:
        probs_of: dict[tuple[str, bool], np.ndarray] = {}
        for ensemble in args.ensembles:
            for adapt in (False, True) if args.adapt else (False,):
                if (ensemble, corpus, adapt) in done:
                    continue
                members = [m.replace("%s", corpus) for m in ensemble.split("+")]
                for member in members:
                    if (member, adapt) in probs_of:
                        continue
                    model_dir = ROOT / "runs" / "loco" / member
                    mdl = load_model(model_dir, calibration="in-domain")
                    net = keras.saving.load_model(model_dir / "model.keras", safe_mode=True)
                    if feats is None:
                        feats = load_features(list(manifest["path"]), mdl.params,
                                              cache_dir=Path.home() / ".cache" / "sercli", jobs=2)
                    held = manifest[manifest["corpus"].eq(corpus) & manifest["path"].isin(feats)]
                    items = [feats[p] for p in held["path"]]
                    source = target = None
                    if adapt:
                        train_rows = manifest[manifest["corpus"].ne(corpus) & manifest["path"].isin(feats)]
                        source = envelope_stats([feats[p] for p in train_rows["path"]])
                        target = envelope_stats(items)
                    probs_of[member, adapt] = file_probs(net, mdl.temperature, items, mdl.params,
                                                         [target] * len(items), source, False)
                    classes = mdl.classes
                probs = np.mean([probs_of[m, adapt] for m in members], axis=0)
                record(results, args.out, held["emotion"], classes, probs, ensemble=ensemble, corpus=corpus,
                       adapt=adapt)
    print_uar_table(results, ["ensemble", "adapt"])


if __name__ == "__main__":
    main()
