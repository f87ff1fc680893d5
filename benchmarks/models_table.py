"""The README's model table, read from the shipped models' cards (every number there was written by
``sercli evaluate --record``; see each card for the command).

    python benchmarks/models_table.py            # Markdown, one row per shipped model

Columns: ``split`` test accuracy and UAR (new speakers of the training corpora); LOCO UAR per
held-out corpus (the model of the same recipe trained on the other corpora), as annotate runs by
default, with the mean over the three corpora every model was held out on and over all six
(``—``: not measured); the same means on the speaker-skewed subsets (``loco-skewed:``); the LOCO
ECE (default calibration); and the cold speed of ``benchmarks/bench.py --models-only``
(``benchmarks/results_models.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from sercli import DEFAULT_MODEL, available_models
from sercli.models import load_model

CORPORA = ("crema-d", "ravdess", "savee", "tess", "nemo", "emotiontts-ko")
SHARED = CORPORA[:3]  # held out for every shipped model
SPEED = Path(__file__).resolve().parent / "results_models.json"


def _get(ev: dict, key: str, metric: str) -> float:
    return ev.get(key, {}).get(metric, float("nan"))


def _fmt(v: float) -> str:
    return "—" if v != v else f"{v:.3f}"


def _mean(values: list[float]) -> float:
    return float(np.mean(values)) if all(v == v for v in values) else float("nan")


def row(name: str, speed: dict) -> list[str]:
    ev = load_model(name).card.get("evaluation", {})
    loco = {c: _get(ev, f"loco_{c}", "uar") for c in CORPORA}
    skewed = {c: _get(ev, f"loco_skewed_{c}", "uar") for c in CORPORA}
    ece = [v for c in CORPORA if (v := _get(ev, f"loco_{c}", "ece")) == v]
    cold = speed.get(name, {}).get("cold_x_real_time")
    return [f"`{name}`" + (" (default)" if name == DEFAULT_MODEL else ""),
            f"{_fmt(_get(ev, 'speaker_independent', 'accuracy'))} / {_fmt(_get(ev, 'speaker_independent', 'uar'))}",
            " / ".join(_fmt(loco[c]) for c in CORPORA),
            f"**{_fmt(_mean([loco[c] for c in SHARED]))}** / **{_fmt(_mean(list(loco.values())))}**",
            f"{_fmt(_mean([skewed[c] for c in SHARED]))} / {_fmt(_mean(list(skewed.values())))}",
            _fmt(float(np.mean(ece))) if ece else "—", f"{cold:.0f}×" if cold else "—"]


def main() -> None:
    head = ["model", "`split` test: acc / UAR", "LOCO UAR: " + " / ".join(CORPORA),
            "LOCO mean: 3 corpora / all 6", "skewed LOCO mean: 3 / 6", "LOCO ECE (mean)", "cold × real time"]
    speed = {}
    if SPEED.exists():
        speed = {r["model"]: r for r in json.loads(SPEED.read_text()).get("per_model", [])}
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for name in available_models():
        print("| " + " | ".join(row(name, speed)) + " |")


if __name__ == "__main__":
    main()
