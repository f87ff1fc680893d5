"""Corpus statistics from emotion tables: pandas in, pandas out.

>>> import pandas as pd
>>> df = pd.DataFrame({"path": ["a/1.wav", "a/2.wav", "b/3.wav"], "status": ["ok", "ok", "corrupt"],
...                    "emotion": ["anger", "sadness", None], "confidence": [0.9, 0.6, None],
...                    "duration_s": [2.0, 3.0, None]})
>>> summarize(df, by="folder")[["files", "ok", "failed", "dominant"]]
       files  ok  failed dominant
group                            
a          2   2       0    anger
b          1   0       1     <NA>
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from . import EMOTIONS
from .classes import match_class

__all__ = ["read_results", "summarize", "group_keys", "agreement", "scores", "class_order", "classes_of", "first_group",
           "LOW_CONFIDENCE"]

#: Rows with ``confidence`` below this count as low-confidence.
LOW_CONFIDENCE = 0.5


def read_results(path: str | Path) -> pd.DataFrame:
    """Read an ``annotate`` table (Parquet/CSV/JSONL, file- or segment-level).

    ``emotion`` becomes an ordered categorical over the model's classes (:func:`classes_of`);
    Parquet metadata (model, version, date) is in ``df.attrs``. Raises
    :class:`~sercli.output.OutputError` for a format it cannot read, ``OSError`` for a missing file.
    """
    from .output import read_table

    df = read_table(path)
    if "emotion" in df:
        df["emotion"] = pd.Categorical(df["emotion"], categories=classes_of(df), ordered=True)
    return df


def classes_of(df: pd.DataFrame) -> list[str]:
    """The classes of the model that made an emotion table: its ``prob_<class>`` columns in
    order, else the categories of a categorical ``emotion``, else the shipped seven.

    >>> classes_of(pd.DataFrame(columns=["path", "emotion", "prob_calm", "prob_tense"]))
    ['calm', 'tense']
    """
    probs = [c[len("prob_"):] for c in df.columns if c.startswith("prob_")]
    if probs:
        return probs
    if "emotion" in df and isinstance(df["emotion"].dtype, pd.CategoricalDtype):
        return list(df["emotion"].cat.categories)
    return list(EMOTIONS)


def group_keys(paths: pd.Series, by: str, frame: pd.DataFrame | None = None) -> pd.Series:
    """Group label per row for ``by``: ``folder``, ``depth:N``, a column name or a regex.

    A regex uses its first named group (or first group) matched anywhere in the path;
    rows that do not match get ``<NA>``.
    """
    if by == "folder":
        return _distinct_ends(paths.map(lambda p: str(Path(p).parent)))
    if by.startswith("depth:"):
        n = int(by.split(":", 1)[1])
        return paths.map(lambda p: "/".join(Path(p).parts[:n]))
    if frame is not None and by in frame.columns:
        return frame[by].astype("string")
    pattern = re.compile(by)
    if pattern.groups == 0:
        raise ValueError(f"--by {by!r} is not folder, depth:N, a column or a regex with a group.")
    return first_group(paths, pattern)


def first_group(paths: pd.Series, pattern: re.Pattern) -> pd.Series:
    """What ``pattern``'s first named group (or its first group) matches in each path, searched
    anywhere in it; ``<NA>`` where it does not match."""
    group = next(iter(pattern.groupindex), 1)
    return paths.map(lambda p: (m := pattern.search(str(p))) and m.group(group)).astype("string")


def _distinct_ends(folders: pd.Series) -> pd.Series:
    """Folders relative to the deepest folder they all share, so labels show what differs.

    >>> _distinct_ends(pd.Series(["/data/calls/2024/a", "/data/calls/2025/b"])).tolist()
    ['2024/a', '2025/b']
    """
    import os

    unique = folders.dropna().unique()
    if len(unique) < 2:
        return folders.map(lambda f: Path(f).name or f)
    try:
        root = os.path.commonpath(list(unique))
    except ValueError:  # relative and absolute paths mixed
        return folders
    return folders.map(lambda f: os.path.relpath(f, root))


def summarize(df: pd.DataFrame, *, by: str | None = None, classes: Iterable[str] | None = None) -> pd.DataFrame:
    """Per-group statistics of an emotion table (one group, ``all``, when ``by`` is None).

    Columns: ``files`` (rows: files, segments or windows, as ``.attrs["unit"]`` says), ``ok``,
    ``failed``, ``duration_s`` (audio covered, overlapping windows counted once), ``mean_confidence``,
    ``low_confidence_share`` (ok rows under :data:`LOW_CONFIDENCE`), ``dominant``, then
    per class ``n_<class>`` (files), ``share_<class>`` (of ok files) and
    ``duration_share_<class>`` (of ok audio). ``classes``: the model's (default
    :func:`classes_of` the table); they are in ``.attrs["classes"]``. Raises ``ValueError``
    for a ``by`` that is neither ``folder``, ``depth:N``, a column nor a regex with a group.
    """
    classes = list(classes) if classes is not None else classes_of(df)
    keys = pd.Series("all", index=df.index) if by is None else group_keys(df["path"].astype(str), by, df)
    status = df["status"] if "status" in df else pd.Series("ok", index=df.index)
    ok = status.eq("ok")
    emotion = df["emotion"].astype("string")
    duration = df["duration_s"] if "duration_s" in df else _covered(df)
    duration = duration.fillna(0.0).astype(float)
    confidence = df["confidence"].astype(float)
    frame = pd.DataFrame({"group": keys.fillna("<NA>").astype(str), "ok": ok, "emotion": emotion,
                          "duration": duration, "confidence": confidence.where(ok)})
    g = frame.groupby("group", sort=True)
    out = pd.DataFrame({
        "files": g.size(),
        "ok": g["ok"].sum().astype(int),
        "duration_s": g["duration"].sum().round(3),
        "mean_confidence": g["confidence"].mean().round(4),
        "low_confidence_share": g.apply(lambda x: float((x["confidence"][x["ok"]] < LOW_CONFIDENCE).mean())
                                        if x["ok"].any() else np.nan, include_groups=False).round(4),
    })
    out.insert(2, "failed", out["files"] - out["ok"])
    out.attrs["unit"] = table_unit(df)
    out.attrs["classes"] = classes
    okf = frame[frame["ok"]]
    counts = pd.crosstab(okf["group"], okf["emotion"]).reindex(index=out.index, columns=classes, fill_value=0)
    dur = okf.pivot_table(index="group", columns="emotion", values="duration", aggfunc="sum", observed=False)
    dur = dur.reindex(index=out.index, columns=classes).fillna(0.0)
    out["dominant"] = pd.Series(
        [counts.columns[int(np.argmax(r))] if r.sum() else pd.NA for r in counts.to_numpy()],
        index=out.index, dtype="string")
    n_ok = counts.sum(axis=1).replace(0, np.nan)
    d_ok = dur.sum(axis=1).replace(0, np.nan)
    for e in classes:
        out[f"n_{e}"] = counts[e].astype(int)
    for e in classes:
        out[f"share_{e}"] = (counts[e] / n_ok).round(4)
    for e in classes:
        out[f"duration_share_{e}"] = (dur[e] / d_ok).round(4)
    return out


def table_unit(df: pd.DataFrame) -> str:
    """What one row of an emotion table is: ``files``, ``segments`` or ``windows``."""
    if "start_s" not in df:
        return "files"
    return "windows" if "silent" in df else "segments"


def _covered(df: pd.DataFrame) -> pd.Series:
    """Seconds of audio each row of a segment or window table covers that the next row of the
    same file does not, so overlapping windows are not counted twice.

    >>> w = pd.DataFrame({"path": ["a"] * 3, "start_s": [0.0, 1.5, 3.0], "end_s": [3.0, 4.5, 5.0]})
    >>> _covered(w).tolist()
    [1.5, 1.5, 2.0]
    """
    order = df.sort_values(["path", "start_s"], kind="stable")
    nxt = order.groupby("path")["start_s"].shift(-1)
    end = np.minimum(order["end_s"], nxt.fillna(np.inf))
    return (end - order["start_s"]).clip(lower=0.0).reindex(df.index)


#: Other spellings of the shipped classes met in users' label sets (folder names, CSV columns).
def map_labels(labels: pd.Series, classes: list[str]) -> tuple[pd.Series, dict[str, str]]:
    """Reference labels in the table's ``classes``: as they are, or matched ignoring case, or by a
    common other spelling (:func:`~sercli.classes.match_class`, ``Angry`` -> ``anger``); returns the labels and
    the mapping used. Raises ``ValueError`` (one sentence) for labels that match no class.

    >>> map_labels(pd.Series(["Angry", "sad", "anger"]), ["anger", "sadness"])[0].tolist()
    ['anger', 'sadness', 'anger']
    """
    mapping, unknown = {}, {}
    for label, n in labels.dropna().astype(str).value_counts().items():
        target = match_class(label, classes)
        if target is None:
            unknown[label] = n
        elif target != label:
            mapping[label] = target
    if unknown:
        listed = ", ".join(f"{k} ({v} rows)" for k, v in sorted(unknown.items()))
        raise ValueError(f"the reference labels {listed} are not classes of the table's model "
                         f"({', '.join(classes)}): map them to those classes (summarize --map "
                         f"{min(unknown)}={classes[0]}, say), or drop their rows.")
    return labels.map(lambda v: mapping.get(v, v) if isinstance(v, str) else v), mapping


def agreement(df: pd.DataFrame, truth: pd.DataFrame, classes: list[str] | None = None) -> dict:
    """Agreement of predicted ``emotion`` with reference labels (``truth``: path, emotion).

    Paths are matched exactly, then by file name: a reference file that no table row names by
    path labels the one table file of its name (a name that two reference files, or two table
    files, share is not matched by name: it would label another file). Rows of a segments table are
    matched first by their file and start (nearest, within 0.05 s) with the ``source`` and
    ``start_s`` of a label file's segment rows (``sercli label`` on segments: their ``path`` is
    the cut clip). With ``classes`` (the table's),
    the labels are mapped to them first (:func:`map_labels`). Returns :func:`scores`,
    ``unmatched`` (predicted rows without a label), ``ambiguous`` (of those, rows whose file
    name is shared) and ``mapped`` (the labels renamed). Reference rows without a label (clips
    skipped in ``sercli label``) are left out; of two rows for one path, the later counts.
    Raises ``ValueError`` (one sentence) when no row matches.
    """
    truth = truth[truth["emotion"].notna() & truth["path"].notna()].drop_duplicates("path", keep="last")
    pred = df[df["status"].eq("ok")] if "status" in df else df
    mapped: dict[str, str] = {}
    if classes is not None:
        truth = truth.assign(emotion=(m := map_labels(truth["emotion"], classes))[0])
        mapped = m[1]
    t = truth.set_index("path")["emotion"]
    y_true = pred["path"].map(t).astype(object)
    if "start_s" in pred and {"source", "start_s"} <= set(truth):
        y_true = _span_labels(pred, truth).fillna(y_true)
    missing = y_true.isna()
    ambiguous = 0
    if missing.any():  # by file name: reference files no table row has by path, names unique on both sides
        rest = truth[~truth["path"].isin(set(pred["path"]))]
        if "source" in rest:
            rest = rest[rest["source"].isna()]  # a segment's label names its cut clip: matched by span only
        names = rest.assign(name=rest["path"].map(os.path.basename))
        table_names = pd.Series(pred["path"].unique()).map(os.path.basename)
        shared = set(names.loc[names["name"].duplicated(keep=False), "name"]) | set(
            table_names[table_names.duplicated(keep=False)])
        by_name = names[~names["name"].isin(shared)].set_index("name")["emotion"]
        pred_names = pred.loc[missing, "path"].map(os.path.basename)
        y_true[missing] = pred_names.map(by_name)
        ambiguous = int((pred_names.isin(shared) & pred_names.isin(set(names["name"]))).sum())
    mask = y_true.notna()
    if not mask.any():
        why = (f" ({ambiguous} by a file name that two or more files share)" if ambiguous else "")
        raise ValueError(f"no row of the table matches a reference label{why}; "
                         "give the table's paths in the manifest.")
    yt = y_true[mask].astype(str).to_numpy()
    yp = pred.loc[mask, "emotion"].astype(str).to_numpy()
    return scores(yt, yp) | {"unmatched": int((~mask).sum()), "ambiguous": ambiguous, "mapped": mapped}


def _span_labels(pred: pd.DataFrame, truth: pd.DataFrame, *, tolerance_s: float = 0.05) -> pd.Series:
    """Labels of ``pred``'s segment rows from the label file's segment rows: same file, nearest
    start within ``tolerance_s`` (a CSV table keeps six significant digits)."""
    seg = pd.DataFrame({"source": truth["source"], "start_s": pd.to_numeric(truth["start_s"],
                        errors="coerce"), "label": truth["emotion"]}).dropna().sort_values("start_s")
    rows = pd.DataFrame({"source": pred["path"].astype(str).to_numpy(object), "start_s": pd.to_numeric(
        pred["start_s"], errors="coerce"), "row": np.arange(len(pred))}).dropna().sort_values("start_s")
    if seg.empty or rows.empty:
        return pd.Series(np.nan, index=pred.index, dtype=object)
    seg["source"] = seg["source"].astype(str).to_numpy(object)
    matched = pd.merge_asof(rows, seg, on="start_s", by="source", direction="nearest", tolerance=tolerance_s)
    labels = pd.Series(np.nan, index=pred.index, dtype=object)
    labels.iloc[matched["row"].to_numpy()] = matched["label"].to_numpy()
    return labels


def class_order(labels) -> list[str]:
    """The seven shipped classes in model order, then any others alphabetically.

    >>> class_order({"calm", "sadness", "anger"})
    ['anger', 'sadness', 'calm']
    """
    labels = set(labels)
    return [e for e in EMOTIONS if e in labels] + sorted(labels - set(EMOTIONS))


def scores(y_true, y_pred) -> dict:
    """Accuracy, UAR and macro-F1 of predicted labels; UAR and macro-F1 average over the classes
    *present in the truth* (a class nobody said cannot be recalled, and would only deflate them).

    Also ``n``, ``per_class`` (precision, recall, f1, support) and ``confusion`` (rows true,
    columns predicted) over every class in either.

    >>> s = scores(["anger", "anger", "sadness", "sadness"], ["anger", "sadness", "sadness", "fear"])
    >>> round(s["accuracy"], 3), round(s["uar"], 3), round(s["macro_f1"], 3)
    (0.5, 0.5, 0.583)
    """
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    yt, yp = np.asarray(y_true, dtype=str), np.asarray(y_pred, dtype=str)
    labels = class_order(set(yt) | set(yp))
    present = class_order(set(yt))
    p, r, f, s = precision_recall_fscore_support(yt, yp, labels=labels, zero_division=0)
    per_class = pd.DataFrame({"precision": p, "recall": r, "f1": f, "support": s}, index=labels)
    nan = float("nan")
    return {
        "n": int(len(yt)),
        "accuracy": float((yt == yp).mean()) if len(yt) else nan,
        "uar": float(per_class.loc[present, "recall"].mean()) if len(yt) else nan,
        "macro_f1": float(per_class.loc[present, "f1"].mean()) if len(yt) else nan,
        "per_class": per_class,
        "confusion": pd.DataFrame(confusion_matrix(yt, yp, labels=labels), index=labels, columns=labels),
    }
