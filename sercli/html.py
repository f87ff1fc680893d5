"""A self-contained HTML report: plots embedded as inline SVG, no network."""

from __future__ import annotations

import datetime as _dt
import html
import io

import numpy as np
import pandas as pd

from .reports import classes_of, table_unit
from .timeline import Timeline, clock, moments, timeline

__all__ = ["render_report"]

#: The colour of each shipped class, the same in every plot of the report: Okabe and Ito's
#: palette, which readers with any common colour-vision deficiency tell apart; a model's other
#: classes take colours from matplotlib's tab20.
COLOURS = {"anger": "#D55E00", "disgust": "#009E73", "fear": "#CC79A7", "happiness": "#E69F00",
           "neutral": "#999999", "sadness": "#0072B2", "surprise": "#56B4E9"}


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


def _timelines(df: pd.DataFrame, moments: pd.DataFrame, *, limit: int | None) -> str:
    """A timeline per recording of 30 s or more (the longest ``limit``; all with ``None``), each
    followed by its moments."""
    ends = df.groupby("path")["end_s"].max()
    ends = ends[ends >= 30].sort_values(ascending=False)
    if limit:
        ends = ends.head(limit)
    if ends.empty:
        return ""
    parts = ["<h2>Emotion over time</h2><p class='note'>Each column is a few seconds, in the colour of the emotion "
             "heard there, as tall and as strong as the model is sure (an unsure answer is short and pale). Grey "
             "hatching: no speech (pauses, noise, music). Hover for the time and the answer; click a moment, or "
             "the timeline, to listen.</p>", _legend(classes_of(df))]
    for path in ends.index:
        rows = df[df["path"] == path]
        parts += [f"<h3>{html.escape(_short(str(path), 90))}</h3>", _lane(timeline(rows)),
                  _moments_table(moments[moments["path"] == path])]
    return "".join(parts)


def _lane(t: Timeline, width: int = 960, height: int = 70) -> str:
    """One recording's timeline as SVG: a column per bin in the colour of the emotion that wins
    there, as tall and as strong as its probability (an unsure answer is a short, pale column);
    grey hatching where there is no speech; a time axis in m:ss."""
    n = len(t.probs)
    px = width / n
    colours = dict(zip(t.classes, _colours(t.classes)))
    src = html.escape(_file_uri(t.path), quote=True)
    out = [f"<svg class='timeline' width='{width}' height='{height + 22}' viewBox='0 0 {width} {height + 22}' "
           f"data-src='{src}' data-seconds='{n * t.width_s:.2f}' xmlns='http://www.w3.org/2000/svg'>",
           "<defs><pattern id='hatch' width='6' height='6' patternUnits='userSpaceOnUse' "
           "patternTransform='rotate(45)'><rect width='6' height='6' fill='#f2f2f2'/>"
           "<line x1='0' y1='0' x2='0' y2='6' stroke='#d8d8d8' stroke-width='2'/></pattern></defs>",
           f"<rect class='gap' x='0' y='0' width='{width}' height='{height}' fill='url(#hatch)'>"
           "<title>no speech</title></rect>"]
    for b in np.flatnonzero(t.speech):
        p = t.probs[b]
        order = np.argsort(-p)
        top, runner = int(order[0]), int(order[1]) if len(p) > 1 else int(order[0])
        start, end = b * t.width_s, (b + 1) * t.width_s
        strength = float(np.clip((p[top] - 1 / len(p)) / (0.8 - 1 / len(p)), 0.15, 1.0))
        tip = (f"{clock(start)}–{clock(end)} · {t.classes[top]} {p[top]:.0%}"
               + (f" (then {t.classes[runner]} {p[runner]:.0%})" if runner != top else ""))
        h = max(2.0, p[top] * height)
        w = max(0.6, px * t.coverage[b])  # a bin partly in a pause is partly hatched
        x = b * px + (px - w if b and not t.speech[b - 1] else 0.0)  # the speech side of the bin
        out.append(f"<g class='bin' data-start='{start:.2f}' data-end='{end:.2f}' data-emotion='{t.classes[top]}'>"
                   f"<title>{html.escape(tip)}</title>"
                   f"<rect x='{x:.2f}' y='0' width='{w + 0.05:.2f}' height='{height}' fill='#fff'/>"
                   f"<rect x='{x:.2f}' y='{height - h:.2f}' width='{w + 0.05:.2f}' height='{h:.2f}' "
                   f"fill='{colours[t.classes[top]]}' fill-opacity='{strength:.2f}'/></g>")
    total = n * t.width_s
    step = next((s for s in (5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600) if total / s <= 12), 7200)
    for tick in np.arange(0, total + 1e-9, step):
        x = tick / total * width
        anchor = "start" if tick == 0 else "middle"
        out.append(f"<line x1='{x:.1f}' y1='{height}' x2='{x:.1f}' y2='{height + 4}' stroke='#555'/>"
                   f"<text x='{x:.1f}' y='{height + 16}' font-size='11' text-anchor='{anchor}'>{clock(tick)}</text>")
    return "".join(out) + "</svg>"


def _legend(classes: list[str]) -> str:
    return "<p class='legend'>" + " ".join(f"<span class='sw' style='background:{c}'></span>{html.escape(e)}"
                                           for e, c in zip(classes, _colours(classes))) + "</p>"


def _file_uri(path: str) -> str:
    from pathlib import Path

    p = Path(path)
    return p.as_uri() if p.is_absolute() else path


def _moments_table(m: pd.DataFrame, *, with_path: bool = False) -> str:
    """Moments as a table with a button each that plays that span of the recording in the page."""
    if m.empty:
        return ""
    colours = dict(zip(_moment_classes(m), _colours(_moment_classes(m))))
    rows = []
    for r in m.itertuples():
        src = html.escape(_file_uri(str(r.path)), quote=True)
        where = f"<td class='l'>{html.escape(_short(str(r.path)))}</td>" if with_path else ""
        rows.append(f"<tr><td class='l'><span class='sw' style='background:{colours[r.emotion]}'></span>{r.emotion}"
                    f"</td>{where}<td>{clock(r.start_s)}–{clock(r.end_s)}</td><td>{r.duration_s:.1f} s</td>"
                    f"<td>{r.confidence:.2f}</td><td><button class='play' data-src='{src}' data-start='{r.start_s:.2f}' "
                    f"data-end='{r.end_s:.2f}'>▶ play</button></td></tr>")
    head = "<th>emotion</th>" + ("<th>file</th>" if with_path else "") + \
        "<th>time</th><th>length</th><th>confidence</th><th></th>"
    return f"<table class='t moments'><tr>{head}</tr>{''.join(rows)}</table>"


def _moment_classes(m: pd.DataFrame) -> list[str]:
    from .reports import class_order

    return class_order(set(m["emotion"].astype(str)))


#: Plays a moment (or a clicked point of a timeline) in the page's one audio element, from its
#: start to its end; says so when the browser cannot play the file.
PLAYER_JS = r"""
const player = document.getElementById('player'), note = document.getElementById('audio-note');
let stopAt = null;
function play(src, start, end) {
  note.textContent = '';
  const go = () => { player.currentTime = start; stopAt = end; player.play().catch(() => {}); };
  if (player.getAttribute('src') !== src) {
    player.setAttribute('src', src);
    player.addEventListener('loadedmetadata', go, {once: true});
    player.load();
  } else { go(); }
}
player.addEventListener('timeupdate', () => { if (stopAt !== null && player.currentTime >= stopAt) {
  player.pause(); stopAt = null; } });
player.addEventListener('error', () => {
  const name = decodeURIComponent((player.getAttribute('src') || '').split('/').pop());
  note.textContent = `This browser cannot play ${name} here: open the report on the machine that holds the audio ` +
    `(the links are file paths), or, for a format it cannot decode (m4a without the codec, wma), convert it, ` +
    `e.g. ffmpeg -i "${name}" "${name.replace(/\.[^.]+$/, '')}.wav", and annotate the WAV.`;
});
document.querySelectorAll('button.play').forEach(b => b.addEventListener('click', () =>
  play(b.dataset.src, parseFloat(b.dataset.start), parseFloat(b.dataset.end))));
const tip = document.getElementById('tip');
document.querySelectorAll('svg.timeline').forEach(svg => {
  svg.addEventListener('click', e => {
    const bin = e.target.closest('g.bin');
    if (bin) play(svg.dataset.src, parseFloat(bin.dataset.start), parseFloat(bin.dataset.start) + 10);
  });
  svg.addEventListener('mousemove', e => {
    const bin = e.target.closest('g.bin, rect.gap');
    tip.textContent = bin ? bin.querySelector('title').textContent : '';
    tip.style.left = (e.pageX + 12) + 'px';
    tip.style.top = (e.pageY + 12) + 'px';
    tip.hidden = !bin;
  });
  svg.addEventListener('mouseleave', () => { tip.hidden = true; });
});
"""


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
                  agreement: dict | None = None, source: str = "", timelines: int | None = None) -> str:
    """The report as one HTML string: metadata, tables and inline SVG plots; for a segments or
    windows table, a timeline of each recording of 30 s or more (the longest ``timelines``; all with
    ``None``) with its moments; for a files table, the most confident files per emotion."""
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
    found = moments(df)
    lanes = _timelines(df, found, limit=timelines) if "start_s" in df.columns else ""
    if lanes:
        parts += [lanes]
    elif len(found):  # files, or rows of short files only: the surest of each emotion over the table
        best = found.sort_values("confidence", ascending=False).groupby("emotion", sort=False).head(3)
        parts += ["<h2>Moments: the surest of each emotion</h2>",
                  _moments_table(best.sort_values(["emotion", "confidence"], ascending=[True, False]),
                                 with_path=True)]
    if agreement is not None:
        parts += ["<h2>Agreement with reference labels</h2>",
                  f"<p>n = {agreement['n']}, accuracy <b>{agreement['accuracy']:.3f}</b>, "
                  f"macro-F1 <b>{agreement['macro_f1']:.3f}</b></p>",
                  _confusion(agreement["confusion"]), _table(agreement["per_class"])]
    style = ("body{font-family:sans-serif;margin:2em;max-width:1000px}table.t,table.meta{border-collapse:collapse;"
             "font-size:13px}table.t td,table.t th,table.meta td,table.meta th{padding:2px 8px;"
             "border-bottom:1px solid #ddd;text-align:right}.plots{display:flex;flex-wrap:wrap;gap:1em}"
             "svg{max-width:100%;height:auto}svg.timeline{cursor:pointer}td.l{text-align:left}"
             ".sw{display:inline-block;width:10px;height:10px;margin-right:4px}.note{color:#555;font-size:13px}"
             "#dock{position:sticky;bottom:0;background:#fff;padding:6px 0;border-top:1px solid #ddd}"
             "#tip{position:absolute;background:#222;color:#fff;font-size:12px;padding:3px 6px;border-radius:3px;"
             "pointer-events:none}")
    dock = ("<div id='tip' hidden></div><div id='dock'><audio id='player' controls preload='metadata'></audio>"
            "<span id='audio-note'></span></div>")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>sercli report</title>"
            f"<style>{style}</style></head><body>{''.join(parts)}{dock}<script>{PLAYER_JS}</script></body></html>")
