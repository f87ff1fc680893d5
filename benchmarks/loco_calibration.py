"""Does confidence hold on a corpus the model never heard, and would a larger temperature fix it?

For each leave-one-corpus-out model (``benchmarks/loco.sh ARM CORPUS SEED``), the held-out
corpus is annotated with the model's temperature multiplied by each factor in ``--scales``,
and ECE is computed. The factor is then chosen honestly: for each held-out corpus, the factor
that minimises the mean ECE on the *other* held-out corpora (leave-one-corpus-out over the
calibration itself). With ``--in-domain MODEL``, the same factors are applied to that model on
its speaker-independent test split, to show what they cost in-domain. ``--record MODEL_DIR``
writes the factor with the lowest mean held-out ECE into that model's card (``calibration``:
the factor, how it was chosen, this command), so no card holds a factor typed by hand;
``--results FILE`` records from a saved run instead of measuring again. Usage:

    python benchmarks/loco_calibration.py --arm dyn --seeds 0 1 --in-domain mfcc-cnn --record models/mfcc-cnn
    python benchmarks/loco_calibration.py --results benchmarks/loco_calibration.json --record models/mfcc-cnn
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT.parent / "shared" / "corpora" / "manifest.csv"


def ece_at(model_dir: Path, scale: float, split_column: str, tmp: Path) -> tuple[float, float]:
    """(ECE, UAR) of ``model_dir`` with its temperature times ``scale`` on ``split_column``'s test rows."""
    from sercli.evaluation import evaluate

    scaled = tmp / f"{model_dir.name}-x{scale}"
    if not scaled.exists():
        shutil.copytree(model_dir, scaled, ignore=shutil.ignore_patterns("checkpoint"))
        card = json.loads((scaled / "card.json").read_text())
        card["temperature"] = card.get("temperature", 1.0) * scale
        (scaled / "card.json").write_text(json.dumps(card))
    metrics, _ = evaluate(str(scaled), MANIFEST, split="test", split_column=split_column, jobs=2)
    return metrics["ece"], metrics["uar"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arm", default="dyn")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--corpora", nargs="+", default=["crema-d", "ravdess", "savee"])
    ap.add_argument("--scales", nargs="+", type=float, default=[1.0, 1.25, 1.5, 2.0, 2.5, 3.0])
    ap.add_argument("--in-domain", help="also apply the factors to this model on the split test rows")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "loco_calibration.json")
    ap.add_argument("--results", type=Path, help="a saved run (its --out) to record from, instead of measuring")
    ap.add_argument("--record", type=Path, help="write the chosen factor into this model directory's card")
    args = ap.parse_args()
    summary = json.loads(args.results.read_text()) if args.results else measure(args)
    if args.record:
        command = "python " + " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
        record(summary, args.record, command, measured=args.results is None)


def measure(args: argparse.Namespace) -> dict:
    """ECE of every LOCO model at every factor (and of ``--in-domain``); the summary, also saved to ``--out``."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            for corpus in args.corpora:
                model = ROOT / "runs" / "loco" / f"{args.arm}-{corpus}-s{seed}"
                for scale in args.scales:
                    ece, uar = ece_at(model, scale, f"loco:{corpus}", Path(tmp))
                    rows.append({"seed": seed, "corpus": corpus, "scale": scale, "ece": ece, "uar": uar})
                    print(rows[-1], flush=True)
        if args.in_domain:
            from sercli.models import load_model

            model = load_model(args.in_domain).path
            for scale in args.scales:
                ece, uar = ece_at(model, scale, "split", Path(tmp))
                rows.append({"seed": -1, "corpus": "in-domain", "scale": scale, "ece": ece, "uar": uar})
                print(rows[-1], flush=True)
    df = pd.DataFrame(rows)
    loco = df[df["seed"].ge(0)].groupby(["corpus", "scale"])["ece"].mean().unstack()
    chosen = {}
    for corpus in loco.index:
        others = loco.drop(index=corpus).mean()
        chosen[corpus] = float(others.idxmin())
    held = {c: float(loco.loc[c, s]) for c, s in chosen.items()}
    summary = {"ece_by_scale": json.loads(loco.to_json()), "chosen_scale_without_the_corpus": chosen,
               "held_out_ece_at_chosen_scale": held, "mean_held_out_ece": float(np.mean(list(held.values()))),
               "mean_ece_unscaled": float(loco[1.0].mean()) if 1.0 in loco else None,
               "runs": rows}
    args.out.write_text(json.dumps(summary, indent=1))
    print(loco.round(3).to_string())
    print(json.dumps({k: v for k, v in summary.items() if k not in ("runs", "ece_by_scale")}, indent=1))
    return summary


def record(summary: dict, model_dir: Path, command: str, *, measured: bool) -> None:
    """The factor with the lowest mean held-out ECE, into ``model_dir``'s card (``calibration``).
    ``measured``: ``command`` measured the summary too (else the card keeps the command that did)."""
    from sercli.models import write_card

    loco = pd.DataFrame(summary["ece_by_scale"])  # rows: held-out corpora; columns: factors
    mean = loco.mean()
    best = mean.idxmin()
    chosen = summary["chosen_scale_without_the_corpus"]
    held = summary["held_out_ece_at_chosen_scale"]
    how = (f"the factor that minimised the mean ECE of this recipe's leave-one-corpus-out models over the "
           f"held-out corpora ({', '.join(loco.index)}): mean ECE {mean[best]:.3f} at {float(best):g}, "
           f"{mean.get('1.0', float('nan')):.3f} unscaled; chosen for each held-out corpus from the others it is "
           + " / ".join(f"{chosen[c]:g}" for c in loco.index) + ", held-out ECE "
           + " / ".join(f"{held[c]:.3f}" for c in loco.index) + f" (mean {summary['mean_held_out_ece']:.3f})")
    card = json.loads((model_dir / "card.json").read_text())
    old = card.get("calibration") or {}
    measured_by = command if measured else old.get("measured_by") or old.get("command")
    card["calibration"] = {"off_domain_scale": float(best), "how": how, "command": command,
                           "measured_by": measured_by,
                           "ece_by_scale": {k: round(float(v), 4) for k, v in mean.items()}}
    write_card(model_dir, card)
    print(f"recorded off-domain scale {float(best):g} in {model_dir / 'card.json'}")


if __name__ == "__main__":
    main()
