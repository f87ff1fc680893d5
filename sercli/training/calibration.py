"""Temperature scaling of a model's confidence, fitted on validation files."""

from __future__ import annotations


import numpy as np

from .. import features as F

from .. import windowing as W
from ..models import softmax
from ..results import aggregate

__all__ = ["file_logits", "file_probs", "fit_temperature", "nll"]


def file_logits(model, items: list, params: F.FeatureParams, durations: list[float]) -> np.ndarray:
    """Per-file window logits, as ``annotate`` sees them: ``list[(n_windows, classes)]`` + silence masks."""
    wins = [W.windows_from_log_mel(e[0][0].astype(np.float32), e[0][1].astype(np.float32), params,
                                   duration_s=d) for e, d in zip(items, durations)]
    x = np.concatenate([w.x for w in wins])
    logits = model.predict(x, batch_size=256, verbose=0)
    out, i = [], 0
    for w in wins:
        out.append((logits[i:i + len(w.x)], w))
        i += len(w.x)
    return out


def file_probs(file_logits: list, temperature: float) -> np.ndarray:
    return np.stack([aggregate(softmax(lg / temperature), w.start_s, w.end_s, w.silent) for lg, w in file_logits])


def nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels under ``probs`` ``(n, classes)``."""
    return float(-np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12)).mean())


def fit_temperature(file_logits: list, labels: np.ndarray) -> float:
    """Temperature minimising the file-level negative log-likelihood on validation data."""
    from scipy.optimize import minimize_scalar

    def objective(log_t: float) -> float:
        return nll(file_probs(file_logits, float(np.exp(log_t))), labels)

    res = minimize_scalar(objective, bounds=(np.log(0.2), np.log(10.0)), method="bounded")
    return float(np.exp(res.x))
