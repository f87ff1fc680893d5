"""Print the LOCO table of runs/loco/*/eval.json (written by benchmarks/loco.sh): UAR, accuracy
and ECE per held-out corpus, and the mean over corpora (ECE at the temperature fitted on validation), per arm and seed (ARCH-ARM for another architecture than mfcc-cnn).

    python benchmarks/loco_table.py
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPORA = ("crema-d", "ravdess", "savee")


def _uar(ev: dict) -> float:
    """UAR over the classes present, from the confusion matrix (older eval.json files lack ``uar``)."""
    if "uar" in ev:
        return ev["uar"]
    recalls = [row[i] / sum(row) for i, row in enumerate(ev["confusion"]["matrix"]) if sum(row)]
    return sum(recalls) / len(recalls)


def main() -> None:
    runs: dict[tuple[str, str], dict[str, dict]] = defaultdict(dict)
    for f in sorted((ROOT / "runs" / "loco").glob("*/eval.json")):
        m = re.fullmatch(r"([\w-]+?)-(crema-d|ravdess|savee)-s(\d+)", f.parent.name)
        if m:
            card = json.loads((f.parent / "card.json").read_text())
            ev = json.loads(f.read_text())
            ece = ev.get("ece_by_calibration", {}).get("in-domain", ev["ece"])  # at the fitted temperature
            runs[(m[1], m[3])][m[2]] = {**ev, "uar": _uar(ev), "ece": ece, "val": card["training"]["val_macro_f1"]}
    print(f"{'arm':17} {'seed':4} " + " ".join(f"{c + ' UAR/acc/ECE':>24}" for c in CORPORA) + "  mean UAR  mean ECE")
    for (arm, seed), per in sorted(runs.items()):
        cells = [f"{per[c]['uar']:.3f} / {per[c]['accuracy']:.3f} / {per[c]['ece']:.3f}" if c in per else "—"
                 for c in CORPORA]
        done = [per[c] for c in CORPORA if c in per]
        mean = (f"{sum(r['uar'] for r in done) / len(done):8.3f}  {sum(r['ece'] for r in done) / len(done):8.3f}"
                if len(done) == len(CORPORA) else "")
        print(f"{arm:17} {seed:4} " + " ".join(f"{c:>24}" for c in cells) + "  " + mean)


if __name__ == "__main__":
    main()
