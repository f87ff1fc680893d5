"""Evaluation of a model on a manifest split, through the same pipeline as ``annotate``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .training.corpora import manifest_name, read_manifest, split_labels
from .models import CALIBRATIONS, load_model
from .pipeline import annotate
from .reports import agreement

__all__ = ["evaluate", "expected_calibration_error", "record_in_card", "PROTOCOLS"]

#: Split column -> name of the protocol in model cards.
PROTOCOLS = {"split": "speaker_independent", "split_random": "study_protocol"}


def protocol_name(split_column: str, adapt: str = "auto") -> str:
    """Card key of a split column: ``speaker_independent``, ``study_protocol``, ``loco_<corpus>``,
    ``loco_skewed_<corpus>``; with ``--adapt`` given as ``none`` or ``corpus`` (not ``auto``, what
    annotate does by default) ``+adapt_none`` / ``+adapt_corpus`` is appended."""
    if split_column.startswith(("loco:", "loco-skewed:")):
        kind, corpus = split_column.split(":", 1)
        key = kind.replace("-", "_") + "_" + corpus
    else:
        key = PROTOCOLS.get(split_column, split_column)
    return key if adapt == "auto" else f"{key}+adapt_{adapt}"


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, *, n_bins: int = 15) -> float:
    """ECE: ``sum_b n_b / N * |accuracy_b - mean confidence_b|`` over equal-width bins.

    >>> round(expected_calibration_error(np.array([0.9, 0.9, 0.6, 0.6]), np.array([1, 1, 1, 0])), 3)
    0.1
    """
    bins = np.minimum((confidence * n_bins).astype(int), n_bins - 1)
    ece = 0.0
    for b in range(n_bins):
        m = bins == b
        if m.any():
            ece += m.mean() * abs(correct[m].mean() - confidence[m].mean())
    return float(ece)


def evaluate(model: str, manifest: str | Path, *, split: str = "test", split_column: str = "split",
             jobs: int = -1, calibration: str = "off-domain", adapt: str = "auto") -> tuple[dict, pd.DataFrame]:
    """Classify the manifest's ``split`` rows; returns (metrics, per-file predictions).

    Metrics: ``n``, ``accuracy``, ``uar`` and ``macro_f1`` (both over the classes present in
    the truth), ``ece`` (15 bins, with ``calibration``), ``per_class``, ``per_corpus`` (the same
    headline numbers), ``confusion`` (rows true, columns predicted), ``not_ok`` (files that
    could not be classified, with their status). For a model with an off-domain scale,
    ``ece_by_calibration`` gives the ECE under both calibrations (from the same classification: the
    window probabilities are re-tempered, :func:`_recalibrated`).
    ``adapt="corpus"`` (or ``"auto"`` for a model that adapts) adapts to the evaluated rows as
    annotate does to its inputs, each corpus of a ``corpus`` column on its own: under
    ``loco:CORPUS``, the held-out corpus is the user's corpus.

    Raises ``ValueError`` (no rows in the split, an unusable manifest or option),
    :class:`~sercli.models.ModelNotFound` and :class:`~sercli.adaptation.TooFewFiles`, as
    :func:`~sercli.pipeline.annotate` does.
    """
    df = read_manifest(manifest)
    rows = df[(split_labels(df, split_column) == split) & df["emotion"].notna()]
    if rows.empty:
        raise ValueError(f"The manifest has no rows with {split_column} = {split!r}.")

    files, windows, infos = _annotate_by_corpus(rows, model=model, jobs=jobs, calibration=calibration, adapt=adapt)
    shift = infos[0]["shift"] if len(infos) == 1 else None
    truth = rows.rename(columns={"emotion": "true"})
    pred = files.merge(truth, on="path", how="left")
    ok = pred[pred["status"].eq("ok")]
    scored = agreement(pred, rows[["path", "emotion"]])
    metrics = {
        "model": str(model),
        "manifest": manifest_name(manifest),
        "split_column": split_column,
        "split": split,
        "calibration": calibration,
        "adapt": adapt,
        "adapt_used": infos[0]["adapt"] if len({i["adapt"] for i in infos}) == 1 else "per corpus: " + ", ".join(
            f"{c} {i['adapt']}" for c, i in zip(sorted(set(rows.get("corpus", []))), infos)),
        **({"shift": shift} if shift is not None and len(shift) <= 128 else {}),  # not an encoder's 2 x dim
        **_headline(scored, ok),
        "per_class": scored["per_class"].round(4).to_dict(orient="index"),
        "confusion": {"labels": list(scored["confusion"].index), "matrix": scored["confusion"].to_numpy().tolist()},
        "not_ok": pred.loc[~pred["status"].eq("ok"), ["path", "status", "error"]].to_dict("records"),
    }
    if "corpus" in pred:
        metrics["per_corpus"] = {corpus: _headline(agreement(g, rows[["path", "emotion"]]), g)
                                 for corpus, g in ok.groupby("corpus")}
    if "off_domain_scale" in load_model(model).card.get("calibration", {}):
        other = next(c for c in CALIBRATIONS if c != calibration)
        ratio = load_model(model, calibration=calibration).temperature / load_model(model, calibration=other).temperature
        metrics["ece_by_calibration"] = {calibration: metrics["ece"],
                                         other: _headline(scored, _recalibrated(
                                             windows[windows["path"].isin(ok["path"])], ratio,
                                             truth))["ece"]}
    return metrics, pred


def _annotate_by_corpus(rows: pd.DataFrame, **kwargs) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """The files and windows tables of ``rows``, and each run's info: one annotate run per corpus of
    a ``corpus`` column when adapting (each corpus adapted to on its own, as a user's corpus would
    be, and as each training corpus was standardised), else one run."""
    if kwargs["adapt"] == "none" or "corpus" not in rows or rows["corpus"].nunique() < 2:
        groups = [rows]
    else:
        groups = [g for _, g in rows.groupby("corpus", sort=True)]
    results = [annotate(list(g["path"]), windows=True, **kwargs) for g in groups]
    return (pd.concat([r.files for r in results], ignore_index=True),
            pd.concat([r.windows for r in results], ignore_index=True), [r.info for r in results])


def _recalibrated(windows: pd.DataFrame, ratio: float, truth: pd.DataFrame) -> pd.DataFrame:
    """The ``ok`` file rows (``emotion``, ``confidence``, ``true``) under another temperature, from the
    same run's window probabilities: ``softmax(log p * ratio)`` (``ratio``: old temperature / new)
    per window, then annotate's duration-weighted mean per file. No second classification."""
    from .models import softmax
    from .results import aggregate

    cols = [c for c in windows.columns if c.startswith("prob_")]
    probs = softmax(np.log(np.maximum(windows[cols].to_numpy(dtype=float), 1e-300)) * ratio)
    out = []
    for path, idx in windows.groupby("path", sort=False).indices.items():
        w = windows.iloc[idx]
        p = aggregate(probs[idx], w["start_s"].to_numpy(float), w["end_s"].to_numpy(float),
                      w["silent"].to_numpy(bool))
        out.append({"path": path, "emotion": cols[int(p.argmax())].removeprefix("prob_"), "confidence": p.max(),
                    **dict(zip(cols, p))})
    return pd.DataFrame(out).merge(truth, on="path", how="left")


def restricted_uar(ok: pd.DataFrame) -> float:
    """UAR with each file's answer restricted to the classes present in the truth (``true``):
    the argmax over those ``prob_<class>`` columns only. Shows how much of an error is the choice
    of a class the evaluated set does not have.

    >>> df = pd.DataFrame({"true": ["a", "b"], "prob_a": [0.2, 0.1], "prob_b": [0.3, 0.2], "prob_c": [0.5, 0.7]})
    >>> restricted_uar(df)
    0.5
    """
    present = [c for c in sorted(set(ok["true"].astype(str))) if f"prob_{c}" in ok]
    if not present or ok.empty:
        return float("nan")
    pred = np.array(present)[ok[[f"prob_{c}" for c in present]].to_numpy(dtype=float).argmax(axis=1)]
    truth = ok["true"].astype(str).to_numpy()
    return float(np.mean([np.mean(pred[truth == c] == c) for c in np.unique(truth)]))


def _headline(scored: dict, ok: pd.DataFrame) -> dict:
    """n, accuracy, UAR, macro-F1 (both over the classes present) and ECE, rounded."""
    correct = (ok["emotion"].astype(str) == ok["true"].astype(str)).to_numpy(dtype=float)
    return {"n": scored["n"], "accuracy": round(scored["accuracy"], 4), "uar": round(scored["uar"], 4),
            "uar_restricted": round(restricted_uar(ok), 4), "macro_f1": round(scored["macro_f1"], 4),
            "ece": round(expected_calibration_error(ok["confidence"].to_numpy(dtype=float), correct), 4)}


def record_in_card(model_dir: str | Path, metrics: dict, command: str) -> str:
    """Store ``metrics`` (and the command that produced them) in the model's card.

    Returns the protocol key it was stored under.
    """
    from .models import CARD_FILE, write_card

    model_dir = Path(model_dir)
    card_path = model_dir / CARD_FILE
    card = json.loads(card_path.read_text())
    key = protocol_name(metrics["split_column"], metrics.get("adapt", "auto"))
    entry = {**{k: v for k, v in metrics.items() if k != "not_ok"}, "command": command,
             "not_ok": len(metrics["not_ok"])}
    evaluated = load_model(metrics["model"])
    if evaluated.path != model_dir.resolve():  # e.g. the study-protocol twin of a shipped model
        entry["trained_by"] = evaluated.card.get("training", {}).get("command", "")
    card.setdefault("evaluation", {})[key] = entry
    write_card(model_dir, card)
    return key


def plot_confusion(metrics: dict, path: str | Path) -> None:
    """Save the confusion matrix as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.array(metrics["confusion"]["matrix"])
    labels = metrics["confusion"]["labels"]
    fig, ax = plt.subplots(figsize=(6, 5))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_title(f"{Path(metrics['model']).name}: acc {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
