"""``sercli models``: the shipped models with their headline numbers, and a model's card."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.table import Table

from . import fail

__all__ = ["print_card", "print_models"]


def print_models() -> None:
    from .. import DEFAULT_MODEL
    from ..models import available_models, load_model

    table = Table(title="shipped models: new speakers of the training corpora (split test: accuracy, UAR, "
                        "macro-F1), and corpora they were not trained on (LOCO mean UAR, balanced and speaker-skewed)")
    table.add_column("model", no_wrap=True)
    for col in ("acc", "UAR", "F1", "LOCO UAR", "skewed LOCO", "params"):
        table.add_column(col, justify="right")
    for name in available_models():
        m = load_model(name)
        ev = m.card.get("evaluation", {})
        si = ev.get("speaker_independent", {})
        table.add_row(name + (" (default)" if name == DEFAULT_MODEL else ""), fmt(si.get("accuracy")),
                      fmt(si.get("uar")), fmt(si.get("macro_f1")), fmt(_mean_uar(ev, "loco_")),
                      fmt(_mean_uar(ev, "loco_skewed_")), f"{m.card.get('params', '')}")
    Console().print(table)


def _mean_uar(evaluation: dict, prefix: str) -> float | None:
    """Mean UAR of a card's entries of one protocol family (``loco_``: balanced; ``loco_skewed_``),
    as annotate runs by default (adapted runs left out)."""
    uars = [v["uar"] for k, v in evaluation.items() if k.startswith(prefix) and "+" not in k
            and (prefix != "loco_" or not k.startswith("loco_skewed_"))]
    return sum(uars) / len(uars) if uars else None


def fmt(v) -> str:
    return "—" if v is None or v != v else f"{v:.3f}"


def print_card(name: str) -> int:
    from ..models import ModelNotFound, load_model

    try:
        m = load_model(name)
    except ModelNotFound as exc:
        return fail(str(exc))
    md = m.path / "CARD.md"
    sys.stdout.write(md.read_text() if md.exists() else json.dumps(m.card, indent=1) + "\n")
    return 0
