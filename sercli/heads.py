"""Emotion heads on pooled encoder embeddings: fitted with scikit-learn, run with NumPy.

A head standardises a window's embedding (``(x - mean) / scale``: the training corpora's
statistics, or those of the corpus being annotated, :mod:`sercli.adaptation`) and maps it to
logits with one linear layer, or a hidden ReLU layer and a linear one. It is stored as
``head.npz`` next to the encoder's ``model.tflite``; ``annotate`` needs neither TensorFlow nor
scikit-learn to run it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["HEAD_FILE", "Head", "corpus_stats", "fit_anchored", "fit_head", "prior_adjust", "reference_stats",
           "standardise"]

HEAD_FILE = "head.npz"
#: Inverse regularisation strengths tried for a linear head; the best on validation is kept.
C_GRID = (0.0003, 0.001, 0.01)


@dataclass
class Head:
    """``layers``: ``[(W (in, out), b (out,)), ...]`` with ReLU between them; ``mean``/``scale``
    ``(in,)``: the standardisation of the training data."""

    mean: np.ndarray
    scale: np.ndarray
    layers: list[tuple[np.ndarray, np.ndarray]]
    C: float = 0.0
    train_prior: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def logits(self, x: np.ndarray, *, stats: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """Logits ``(n, classes)`` of embeddings ``(n, dim)``, standardised by ``stats``
        (``(mean, scale)`` of the corpus) or else by the training data's."""
        mean, scale = stats if stats is not None else (self.mean, self.scale)
        h = (np.asarray(x, np.float64) - mean) / scale
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        return h

    def refer_to(self, mean: np.ndarray, scale: np.ndarray) -> "Head":
        """The same function of already standardised inputs, but taking raw embeddings standardised by
        ``(mean, scale)``: this head's own standardisation is folded into its first layer."""
        (w, b), rest = self.layers[0], self.layers[1:]
        w2 = w / self.scale[:, None]
        b2 = b - (self.mean / self.scale) @ w
        return Head(mean=np.asarray(mean, np.float64), scale=np.asarray(scale, np.float64), layers=[(w2, b2), *rest],
                    C=self.C, train_prior=self.train_prior)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities ``(n, classes)`` of embeddings ``(n, dim)`` (standardised by the head's own statistics)."""
        z = self.logits(x)
        z = z - z.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)

    def save(self, path: str | Path) -> None:
        arrays = {"mean": self.mean, "scale": self.scale, "C": np.array(self.C)}
        for i, (w, b) in enumerate(self.layers):
            arrays[f"w{i}"], arrays[f"b{i}"] = w.astype(np.float32), b.astype(np.float32)
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "Head":
        with np.load(path) as z:
            n = sum(1 for k in z.files if k.startswith("w"))
            return cls(mean=z["mean"].astype(np.float64), scale=z["scale"].astype(np.float64),
                       layers=[(z[f"w{i}"].astype(np.float64), z[f"b{i}"].astype(np.float64)) for i in range(n)],
                       C=float(z["C"]))


def corpus_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and scale (standard deviation) of one corpus's embeddings ``(n, dim)``."""
    return x.mean(axis=0), x.std(axis=0) + 1e-5


def standardise(x: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """``x`` z-scored within each group of ``groups`` (a corpus label per row)."""
    out = np.empty_like(x, dtype=np.float64)
    for g in np.unique(groups):
        m = groups == g
        mean, scale = corpus_stats(x[m])
        out[m] = (x[m] - mean) / scale
    return out


def reference_stats(x: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The statistics standing for "a corpus" when a corpus's own are not measured: the mean of
    the training corpora's means and of their scales."""
    stats = [corpus_stats(x[groups == g]) for g in np.unique(groups)]
    return np.mean([m for m, _ in stats], axis=0), np.mean([s for _, s in stats], axis=0)


def _macro_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(truth, pred, average="macro"))


def fit_head(x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *, kind: str = "linear",
             n_classes: int, seed: int = 0, C: float | None = None, sample_weight: np.ndarray | None = None) -> Head:
    """A head fitted on embeddings ``x`` ``(n, dim)`` and labels ``y`` (class indices), classes
    balanced by weights (times ``sample_weight``, e.g. to give every corpus the same weight).

    ``kind``: ``"linear"`` (multinomial logistic regression: C given, or else the best of
    :data:`C_GRID` by macro-F1 on ``(x_val, y_val)``) or ``"mlp"`` (one hidden layer of 256 ReLU units).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-5
    xs, xv = (x - mean) / scale, (x_val - mean) / scale
    best = None
    if kind == "linear":
        counts = np.bincount(y, minlength=n_classes).astype(float)
        weight = len(y) / (np.count_nonzero(counts) * np.maximum(counts, 1.0))[y]  # "balanced", as scikit-learn's
        if sample_weight is not None:
            weight = weight * sample_weight / np.mean(sample_weight)
        grid = C_GRID if C is None else (C,)
        for c in grid:
            clf = LogisticRegression(C=c, max_iter=300, tol=1e-3, random_state=seed).fit(xs, y, sample_weight=weight)
            score = _macro_f1(y_val, clf.predict(xv)) if len(grid) > 1 else 0.0
            if best is None or score > best[0]:
                w, b = _two_sided(clf.coef_.T, clf.intercept_)
                best = (score, c, [(_full(w, clf.classes_, n_classes, axis=1),
                                    _full(b, clf.classes_, n_classes, axis=0, fill=-1e4))])
    elif kind == "mlp":
        # balanced classes by resampling (MLPClassifier takes no class weights)
        rng = np.random.default_rng(seed)
        per = np.bincount(y, minlength=n_classes).max()
        idx = np.concatenate([rng.choice(np.flatnonzero(y == c), per) for c in np.unique(y)])
        for alpha in (1e-3, 1e-1):
            clf = MLPClassifier((256,), alpha=alpha, early_stopping=True, max_iter=200, random_state=seed)
            clf.fit(xs[idx], y[idx])
            score = _macro_f1(y_val, clf.predict(xv))
            if best is None or score > best[0]:
                w0, w1 = clf.coefs_
                w1, b1 = _two_sided(w1, clf.intercepts_[1])
                best = (score, alpha, [(w0, clf.intercepts_[0]),
                                       (_full(w1, clf.classes_, n_classes, axis=1),
                                        _full(b1, clf.classes_, n_classes, axis=0, fill=-1e4))])
    else:
        raise ValueError(f"Unknown head {kind!r}: linear or mlp.")
    prior = np.full(n_classes, 1.0 / n_classes)  # class-balanced training: a uniform prior
    return Head(mean=mean, scale=scale, layers=best[2], C=best[1], train_prior=prior)


def fit_anchored(z: np.ndarray, y: np.ndarray, w0: np.ndarray, b0: np.ndarray, *, pull: float) -> tuple[np.ndarray, np.ndarray]:
    """A linear head ``(W (dim, classes), b (classes,))`` on standardised embeddings ``z`` and labels ``y``
    (class indices), started from ``(w0, b0)`` and pulled back toward them.

    Minimises the class-balanced mean cross-entropy plus ``pull * (|W - w0|^2 + |b - b0|^2)``
    (convex; L-BFGS to convergence). A class without a label keeps its start when the pull
    holds it there. With ``w0 = 0`` this is a plain L2-regularised logistic regression.

    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(40, 3)); y = (z[:, 0] > 0).astype(int)
    >>> w, b = fit_anchored(z, y, np.zeros((3, 2)), np.zeros(2), pull=0.01)
    >>> bool(((z @ w + b).argmax(axis=1) == y).mean() > 0.9)
    True
    """
    from scipy.optimize import minimize

    z = np.asarray(z, np.float64)
    n, dim = z.shape
    k = w0.shape[1]
    counts = np.bincount(y, minlength=k).astype(float)
    weight = (n / (np.count_nonzero(counts) * np.maximum(counts, 1)))[y]
    weight /= weight.sum()
    onehot = np.eye(k)[y]
    start = np.concatenate([w0.ravel(), b0])

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-k].reshape(dim, k), theta[-k:]
        logits = z @ w + b
        logits -= logits.max(axis=1, keepdims=True)
        logp = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
        d = theta - start
        value = -(weight * (onehot * logp).sum(axis=1)).sum() + pull * d @ d
        g = (np.exp(logp) - onehot) * weight[:, None]
        grad = np.concatenate([(z.T @ g).ravel(), g.sum(axis=0)]) + 2 * pull * d
        return value, grad

    theta = minimize(loss, start, jac=True, method="L-BFGS-B", options={"maxiter": 500}).x
    return theta[:-k].reshape(dim, k), theta[-k:]


def _two_sided(w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn gives one output column for two classes (the logit of the second): as two
    columns ``(0, z)`` whose softmax is the same sigmoid; more classes pass unchanged."""
    if w.shape[1] != 1:
        return w, b
    return np.concatenate([np.zeros_like(w), w], axis=1), np.concatenate([np.zeros_like(b), b])


def _full(a: np.ndarray, classes: np.ndarray, n: int, *, axis: int, fill: float = 0.0) -> np.ndarray:
    """Columns (``axis=1``) or entries of ``a`` placed at ``classes`` among ``n`` classes; a class
    absent from training gets ``fill`` (a logit that never wins)."""
    shape = list(a.shape)
    shape[axis] = n
    out = np.full(shape, fill, np.float64)
    if axis == 1:
        out[:, classes] = a
    else:
        out[classes] = a
    return out


def prior_adjust(probs: np.ndarray, train_prior: np.ndarray, *, iterations: int = 100) -> np.ndarray:
    """Re-estimate the class priors of a corpus from its posteriors ``(n, classes)`` and adjust them
    (Saerens, Latinne & Decaestecker 2002, EM).

    >>> p = np.array([[0.6, 0.4], [0.7, 0.3], [0.55, 0.45]])
    >>> prior_adjust(p, np.array([0.5, 0.5])).argmax(axis=1).tolist()
    [0, 0, 0]
    """
    prior = train_prior.copy()
    for _ in range(iterations):
        adj = probs * (prior / train_prior)
        adj /= adj.sum(axis=1, keepdims=True)
        new = adj.mean(axis=0)
        if np.abs(new - prior).max() < 1e-6:
            break
        prior = new
    return adj
