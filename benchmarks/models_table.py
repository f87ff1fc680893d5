"""The README's model table, read from the shipped models' cards (every number there was written by
``sercli evaluate --record``; see each card for the command).

    python benchmarks/models_table.py            # Markdown, one row per shipped model

Columns: ``split`` test accuracy and UAR (new speakers of the training corpora); LOCO UAR per
held-out corpus and mean (a model of the same recipe trained on the other corpora), as annotate
runs by default; the same on the speaker-skewed subsets (``loco-skewed:``); the LOCO mean of
UAR with the answer restricted to the classes present; and the LOCO ECE (default calibration).
"""

from __future__ import annotations

import numpy as np

from sercli import DEFAULT_MODEL, available_models
from sercli.models import load_model

CORPORA = ("crema-d", "ravdess", "savee")


def _get(ev: dict, key: str, metric: str) -> float:
    return ev.get(key, {}).get(metric, float("nan"))


def row(name: str) -> list[str]:
    ev = load_model(name).card.get("evaluation", {})
    loco = [_get(ev, f"loco_{c}", "uar") for c in CORPORA]
    skewed = [_get(ev, f"loco_skewed_{c}", "uar") for c in CORPORA]
    restricted = [_get(ev, f"loco_{c}", "uar_restricted") for c in CORPORA]
    ece = [_get(ev, f"loco_{c}", "ece") for c in CORPORA]

    def fmt(v: float) -> str:
        return "—" if v != v else f"{v:.3f}"

    def per(values: list[float]) -> str:
        return " / ".join(fmt(v) for v in values) + f", **{fmt(float(np.mean(values)))}**"

    return [f"`{name}`" + (" (default)" if name == DEFAULT_MODEL else ""),
            f"{fmt(_get(ev, 'speaker_independent', 'accuracy'))} / {fmt(_get(ev, 'speaker_independent', 'uar'))}",
            per(loco), per(skewed), fmt(float(np.mean(restricted))), fmt(float(np.mean(ece)))]


def main() -> None:
    head = ["model", "`split` test: acc / UAR", "LOCO UAR: CREMA-D / RAVDESS / SAVEE, mean",
            "speaker-skewed LOCO UAR, mean", "LOCO UAR restricted to the classes present (mean)", "LOCO ECE (mean)"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name in available_models():
        print("| " + " | ".join(row(name)) + " |")


if __name__ == "__main__":
    main()
