"""A self-contained HTML report: plots embedded as inline SVG, no network."""

from __future__ import annotations

import datetime as _dt
import html
import io

import numpy as np
import pandas as pd

from .reports import classes_of, table_unit

__all__ = ["render_report"]

#: The colour of each shipped class; a model's other classes take colours from matplotlib's tab20.
COLOURS = {"anger": "#d62728", "disgust": "#8c564b", "fear": "#9467bd", "happiness": "#ff7f0e",
           "neutral": "#7f7f7f", "sadness": "#1f77b4", "surprise": "#2ca02c"}


def _colours(classes: list[str]) -> list[str]:
    """One colour per class, in order."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    spare = iter(to_hex(c) for c in colormaps["tab20"].colors if to_hex(c) not in COLOURS.values())
    return [COLOURS.get(c) or next(spare) for c in classes]


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _distribution(overall: pd.DataFrame, unit: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    classes = overall.attrs["classes"]
    shares = [overall[f"share_{e}"].iloc[0] for e in classes]
    ax.bar(classes, np.nan_to_num(shares), color=_colours(classes))
    ax.set_ylabel(f"share of {unit}")
    ax.set_title("Emotion distribution")
    ax.tick_params(axis="x", rotation=30)
    return _svg(fig)


def _stacked(groups: pd.DataFrame, unit: str, max_groups: int = 40):
    import matplotlib.pyplot as plt

    groups = groups.sort_values("files", ascending=False).head(max_groups)
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(groups) + 1.2))
    left = np.zeros(len(groups))
    classes = groups.attrs["classes"]
    for e, c in zip(classes, _colours(classes)):
        v = groups[f"share_{e}"].fillna(0).to_numpy()
        ax.barh(groups.index.astype(str), v, left=left, color=c, label=e)
        left += v
    ax.invert_yaxis()
    ax.set_xlabel(f"share of {unit}")
    ax.set_title("Emotions per group")
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return _svg(fig)


def _confidence(df: pd.DataFrame):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(df["confidence"].dropna(), bins=20, range=(0, 1), color="#1f77b4")
    ax.set_xlabel("confidence")
    ax.set_ylabel("rows")
    ax.set_title("Confidence")
    return _svg(fig)


def _timelines(df: pd.DataFrame, max_files: int = 12, max_bins: int = 600) -> str:
    """One lane per file (the longest ``max_files``), coloured by the dominant emotion over time.

    Rows are pooled into at most ``max_bins`` time bins per lane (bins of a few seconds for an
    hour, about 25 s for four hours), so a long recording stays readable; time without
    classified speech stays blank.
    """
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    classes = classes_of(df)
    colours = _colours(classes)
    probs = [f"prob_{e}" for e in classes]
    ends = df.groupby("path")["end_s"].max().sort_values(ascending=False).head(max_files)
    longest = float(ends.max())
    width = max(longest / max_bins, 1.0)
    scale, unit = (3600.0, "h") if longest > 2 * 3600 else (60.0, "min") if longest > 120 else (1.0, "s")
    fig, ax = plt.subplots(figsize=(10, 0.45 * len(ends) + 1.3))
    for lane, path in enumerate(ends.index):
        rows = df[df["path"] == path]
        n_bins = int(np.ceil(ends[path] / width))
        mass = np.zeros((n_bins, len(classes)))
        for start, end, p in zip(rows["start_s"], rows["end_s"], rows[probs].to_numpy()):
            for b in range(int(start // width), min(n_bins, int(np.ceil(end / width)))):
                overlap = min(end, (b + 1) * width) - max(start, b * width)
                if overlap > 0:
                    mass[b] += overlap * np.nan_to_num(p)
        for k, colour in enumerate(colours):
            bins = np.flatnonzero((mass.sum(axis=1) > 0) & (mass.argmax(axis=1) == k))
            ax.broken_barh([(b * width / scale, width / scale) for b in bins], (lane - 0.4, 0.8), color=colour)
    ax.set_yticks(range(len(ends)), [_short(p) for p in ends.index], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, longest / scale)
    ax.set_xlabel(f"time ({unit}); each bar is the dominant emotion of {width:.0f} s")
    ax.legend(handles=[Patch(color=c, label=e) for e, c in zip(classes, colours)], ncol=len(classes), fontsize=7,
              loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    return _svg(fig)


def _short(path: str, keep: int = 40) -> str:
    """The end of a long path, which is what tells files apart."""
    return path if len(path) <= keep else "…" + path[-(keep - 1):]


def _confusion(confusion: pd.DataFrame):
    import matplotlib.pyplot as plt

    m = confusion.to_numpy()
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(m)), confusion.columns, rotation=45, ha="right")
    ax.set_yticks(range(len(m)), confusion.index)
    for i in range(len(m)):
        for j in range(len(m)):
            ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if m[i, j] > m.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title("Confusion matrix")
    return _svg(fig)


def _table(df: pd.DataFrame) -> str:
    return df.to_html(classes="t", border=0, na_rep="—", float_format=lambda v: f"{v:.3f}")


def render_report(df: pd.DataFrame, summary: pd.DataFrame, overall: pd.DataFrame, *,
                  agreement: dict | None = None, source: str = "") -> str:
    """The report as one HTML string: metadata, tables and inline SVG plots."""
    import matplotlib

    matplotlib.use("Agg")
    meta = {"source": source, "rows": len(df), "generated": _dt.datetime.now().isoformat(timespec="seconds"),
            **{k: v for k, v in df.attrs.items() if k in ("model", "sercli_version", "created", "model_sha256")}}
    parts = ["<h1>sercli emotion report</h1>", "<table class='meta'>"]
    parts += [f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in meta.items()]
    unit = table_unit(df)
    parts += ["</table>", "<h2>Overview</h2>", _table(overall[["files", "ok", "failed", "duration_s",
                                                                "mean_confidence", "low_confidence_share",
                                                                "dominant"]].rename(columns={"files": unit}))]
    parts += ["<div class='plots'>", _distribution(overall, unit), _confidence(df), "</div>"]
    if len(summary) > 1 or summary.index[0] != "all":
        parts += ["<h2>By group</h2>", _stacked(summary, unit),
                  _table(summary[["files", "ok", "failed", "mean_confidence", "dominant"]].rename(columns={"files": unit}))]
    if "start_s" in df.columns:
        parts += ["<h2>Emotion over time</h2>", _timelines(df)]
    if agreement is not None:
        parts += ["<h2>Agreement with reference labels</h2>",
                  f"<p>n = {agreement['n']}, accuracy <b>{agreement['accuracy']:.3f}</b>, "
                  f"macro-F1 <b>{agreement['macro_f1']:.3f}</b></p>",
                  _confusion(agreement["confusion"]), _table(agreement["per_class"])]
    style = ("body{font-family:sans-serif;margin:2em;max-width:1000px}table.t,table.meta{border-collapse:collapse;"
             "font-size:13px}table.t td,table.t th,table.meta td,table.meta th{padding:2px 8px;"
             "border-bottom:1px solid #ddd;text-align:right}.plots{display:flex;flex-wrap:wrap;gap:1em}"
             "svg{max-width:100%;height:auto}")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>sercli report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}</body></html>")
