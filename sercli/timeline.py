"""Emotion over time: a long recording's probabilities in time bins (pauses left empty), and its
*moments*, the strongest regions of each emotion, as plain tables.

Both read a segments or windows table of ``annotate`` (rows with ``start_s``/``end_s``); moments
of a files table are its most confident files per emotion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .reports import classes_of

__all__ = ["Timeline", "clock", "moments", "timeline"]


def clock(seconds: float) -> str:
    """A time as people read it: ``m:ss``, or ``h:mm:ss`` past an hour.

    >>> clock(75.4), clock(3725)
    ('1:15', '1:02:05')
    """
    s = int(round(seconds))
    h, rest = divmod(s, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


@dataclass(frozen=True)
class Timeline:
    """One recording's class probabilities in ``bins`` equal time bins of ``width_s`` seconds:
    ``probs`` ``(bins, classes)``, smoothed over neighbouring bins with speech; a row of NaN is a
    bin without classified speech (a pause, noise, music)."""

    path: str
    width_s: float
    classes: list[str]
    probs: np.ndarray
    #: the share of each bin that classified speech covers (0 for a pause)
    coverage: np.ndarray

    @property
    def speech(self) -> np.ndarray:
        return ~np.isnan(self.probs[:, 0])


def timeline(rows: pd.DataFrame, *, bins: int = 400, smooth: int = 3) -> Timeline:
    """The :class:`Timeline` of one recording's segment or window rows: time cut into ``bins``
    bins (at least 1 s each, so a 20-minute file gets 3 s bins and a 4-hour one 36 s), each the
    overlap-weighted mean of the rows' probabilities, then a moving mean over ``smooth`` bins that
    never crosses a pause.

    >>> rows = pd.DataFrame({"path": "a", "start_s": [0.0, 6.0], "end_s": [3.0, 9.0],
    ...                      "prob_anger": [0.9, 0.2], "prob_sadness": [0.1, 0.8]})
    >>> t = timeline(rows, bins=3, smooth=1)
    >>> t.width_s, t.speech.tolist(), t.probs[2].round(1).tolist()
    (3.0, [True, False, True], [0.2, 0.8])
    """
    classes = classes_of(rows)
    end = float(rows["end_s"].max())
    width = max(end / bins, 1.0)
    n = max(1, int(np.ceil(end / width)))
    mass, weight = np.zeros((n, len(classes))), np.zeros(n)
    p = np.nan_to_num(rows[[f"prob_{c}" for c in classes]].to_numpy(dtype=float))
    for start, stop, q in zip(rows["start_s"].to_numpy(float), rows["end_s"].to_numpy(float), p):
        for b in range(int(start // width), min(n, int(np.ceil(stop / width)))):
            overlap = min(stop, (b + 1) * width) - max(start, b * width)
            if overlap > 1e-9:
                mass[b] += overlap * q
                weight[b] += overlap
    covered = np.zeros(n)
    for start, stop in _union(rows["start_s"].to_numpy(float), rows["end_s"].to_numpy(float)):
        for b in range(int(start // width), min(n, int(np.ceil(stop / width)))):
            covered[b] += max(0.0, min(stop, (b + 1) * width) - max(start, b * width))
    speech = weight > 0
    probs = np.full((n, len(classes)), np.nan)
    probs[speech] = mass[speech] / weight[speech, None]
    if smooth > 1:
        half = smooth // 2
        run_id = np.cumsum(~speech)  # bins of one stretch of speech share an id
        smoothed = probs.copy()
        for r in np.unique(run_id[speech]):
            idx = np.flatnonzero(speech & (run_id == r))
            sums = np.vstack([np.zeros(len(classes)), np.cumsum(probs[idx], axis=0)])
            lo = np.maximum(np.arange(len(idx)) - half, 0)
            hi = np.minimum(np.arange(len(idx)) + half + 1, len(idx))
            smoothed[idx] = (sums[hi] - sums[lo]) / (hi - lo)[:, None]
        probs = smoothed
    return Timeline(str(rows["path"].iloc[0]), width, classes, probs, np.clip(covered / width, 0.0, 1.0))


def _union(starts: np.ndarray, ends: np.ndarray) -> list[tuple[float, float]]:
    """The union of intervals (overlapping windows count once)."""
    out: list[list[float]] = []
    for a, b in sorted(zip(starts, ends)):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def moments(table: pd.DataFrame, *, per_class: int = 3, min_confidence: float = 0.0) -> pd.DataFrame:
    """The strongest moments of each emotion: for a segments or windows table, per recording and
    class, the ``per_class`` regions where that class wins longest and surest (consecutive rows it
    wins, joined across gaps under a second; ranked by confidence, then length); for a files table,
    the ``per_class`` most confident files of each class. Columns: ``path``, ``emotion``,
    ``start_s``, ``end_s``, ``duration_s``, ``confidence`` (the class's mean probability there).

    >>> rows = pd.DataFrame({"path": "a", "start_s": [0.0, 3.0, 9.0], "end_s": [3.0, 6.0, 12.0],
    ...                      "emotion": ["anger", "anger", "sadness"], "prob_anger": [0.8, 0.6, 0.1],
    ...                      "prob_sadness": [0.2, 0.4, 0.9]})
    >>> moments(rows)[["emotion", "start_s", "end_s", "confidence"]].values.tolist()
    [['anger', 0.0, 6.0, 0.7], ['sadness', 9.0, 12.0, 0.9]]
    """
    columns = ["path", "emotion", "start_s", "end_s", "duration_s", "confidence"]
    if table.empty:
        return pd.DataFrame(columns=columns)
    rows = table[table["status"].eq("ok")] if "status" in table else table
    rows = rows[rows["emotion"].notna()]
    classes = classes_of(rows)
    if "start_s" not in rows:  # a files table: the most confident files per class
        out = [g.assign(confidence=g[f"prob_{c}"]).nlargest(per_class, "confidence")
               for c, g in rows.groupby(rows["emotion"].astype(str)) if c in classes]
        df = pd.concat(out) if out else rows.iloc[:0]
        df = df.assign(start_s=0.0, end_s=df["duration_s"], duration_s=df["duration_s"])
        return df[columns].reset_index(drop=True)
    found = []
    for path, g in rows.sort_values(["path", "start_s"]).groupby("path", sort=False):
        label = g["emotion"].astype(str).to_numpy()
        start, end = g["start_s"].to_numpy(float), g["end_s"].to_numpy(float)
        for c in classes:
            p = g[f"prob_{c}"].to_numpy(float)
            i = 0
            while i < len(g):
                if label[i] != c:
                    i += 1
                    continue
                j = i
                while j + 1 < len(g) and label[j + 1] == c and start[j + 1] - end[j] < 1.0:
                    j += 1
                dur = np.maximum(end[i:j + 1] - start[i:j + 1], 1e-9)
                conf = float((p[i:j + 1] * dur).sum() / dur.sum())
                if conf >= min_confidence:
                    found.append((path, c, float(start[i]), float(end[j]), float(end[j] - start[i]), round(conf, 4)))
                i = j + 1
    df = pd.DataFrame(found, columns=columns)
    df = df.sort_values(["path", "emotion", "confidence", "duration_s"], ascending=[True, True, False, False])
    order = {c: k for k, c in enumerate(classes)}
    df = df.groupby(["path", "emotion"], sort=False).head(per_class)
    return df.sort_values(["path", "emotion", "confidence"], key=lambda s: s.map(order) if s.name == "emotion" else s,
                          ascending=[True, True, False]).reset_index(drop=True)
