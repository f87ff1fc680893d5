"""A self-contained HTML report: plots embedded as inline SVG, no network."""

from __future__ import annotations

import datetime as _dt
import html
import io
from pathlib import Path

import numpy as np
import pandas as pd

from . import EMOTIONS

__all__ = ["render_report"]

#: One colour per emotion, in EMOTIONS order.
COLOURS = ["#d62728", "#8c564b", "#9467bd", "#ff7f0e", "#7f7f7f", "#1f77b4", "#2ca02c"]


def _svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]


def _distribution(summary_all: pd.Series):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3))
    shares = [summary_all[f"share_{e}"] for e in EMOTIONS]
    ax.bar(EMOTIONS, np.nan_to_num(shares), color=COLOURS)
    ax.set_ylabel("share of files")
    ax.set_title("Emotion distribution")
    ax.tick_params(axis="x", rotation=30)
    return _svg(fig)


def _stacked(groups: pd.DataFrame, max_groups: int = 40):
    import matplotlib.pyplot as plt

    groups = groups.sort_values("files", ascending=False).head(max_groups)
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(groups) + 1.2))
    left = np.zeros(len(groups))
    for e, c in zip(EMOTIONS, COLOURS):
        v = groups[f"share_{e}"].fillna(0).to_numpy()
        ax.barh(groups.index.astype(str), v, left=left, color=c, label=e)
        left += v
    ax.invert_yaxis()
    ax.set_xlabel("share of files")
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


def _timelines(df: pd.DataFrame, max_files: int = 6) -> list[str]:
    import matplotlib.pyplot as plt

    out = []
    probs = [f"prob_{e}" for e in EMOTIONS]
    longest = df.groupby("path")["end_s"].max().sort_values(ascending=False).head(max_files).index
    for path in longest:
        seg = df[df["path"] == path].sort_values("start_s")
        mid = ((seg["start_s"] + seg["end_s"]) / 2).to_numpy()
        fig, ax = plt.subplots(figsize=(8, 2.5))
        ax.stackplot(mid, seg[probs].to_numpy().T, colors=COLOURS, labels=EMOTIONS)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("probability")
        ax.set_ylim(0, 1)
        ax.set_title(Path(path).name)
        ax.legend(ncol=7, fontsize=6, loc="lower center", bbox_to_anchor=(0.5, 1.1))
        out.append(_svg(fig))
    return out


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
            **{k: v for k, v in df.attrs.items() if k in ("model", "sercli_version", "created", "model_card_sha256")}}
    parts = ["<h1>sercli emotion report</h1>", "<table class='meta'>"]
    parts += [f"<tr><th>{html.escape(str(k))}</th><td>{html.escape(str(v))}</td></tr>" for k, v in meta.items()]
    parts += ["</table>", "<h2>Overview</h2>", _table(overall[["files", "ok", "failed", "duration_s",
                                                                "mean_confidence", "low_confidence_share",
                                                                "dominant"]])]
    parts += ["<div class='plots'>", _distribution(overall.iloc[0]), _confidence(df), "</div>"]
    if len(summary) > 1 or summary.index[0] != "all":
        parts += ["<h2>By group</h2>", _stacked(summary),
                  _table(summary[["files", "ok", "failed", "mean_confidence", "dominant"]])]
    if "start_s" in df.columns:
        parts += ["<h2>Emotion over time</h2>", *_timelines(df)]
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
