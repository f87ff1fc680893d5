"""``sercli evaluate`` and ``sercli summarize`` at the terminal: tables of scores and shares."""

from __future__ import annotations

import json
import os

from rich.console import Console
from rich.table import Table

from . import err, fail
from .models import fmt

__all__ = ["run_evaluate", "run_summarize"]


def run_evaluate(*, model, manifest, split, split_column, json_out, plot, record, jobs, calibration, adapt,
                 command) -> int:
    """``sercli evaluate``; returns the exit status."""
    from ..evaluation import evaluate, plot_confusion, record_in_card
    from ..models import ModelNotFound, load_model

    try:
        load_model(model, calibration=calibration)
        missing = [m for m in manifest if not m.is_file()]
        if missing:
            return fail(f"the manifest {missing[0]} does not exist.")
        manifest = manifest[0] if len(manifest) == 1 else manifest
        metrics, _ = evaluate(model, manifest, split=split, split_column=split_column, jobs=jobs,
                              calibration=calibration, adapt=adapt)
    except (ModelNotFound, ValueError) as exc:
        return fail(str(exc))
    out = Console()
    table = Table(title=f"{metrics['model']} on {split_column} = {split} (n = {metrics['n']})")
    for col in ("class", "precision", "recall", "f1-score", "support"):
        table.add_column(col, justify="right")
    for cls, m in metrics["per_class"].items():
        table.add_row(cls, f"{m['precision']:.2f}", f"{m['recall']:.2f}", f"{m['f1']:.2f}", f"{int(m['support'])}")
    out.print(table)
    eces = metrics.get("ece_by_calibration")  # only models with an off-domain factor have two
    ece = ", ".join(f"{v:.4f} ({k} calibration)" for k, v in eces.items()) if eces else f"{metrics['ece']:.4f}"
    out.print(f"accuracy {metrics['accuracy']:.4f}   UAR {metrics['uar']:.4f}   macro-F1 {metrics['macro_f1']:.4f}   "
              f"ECE {ece}", highlight=False)
    if metrics.get("per_corpus"):
        ct = Table(title="per corpus")
        for col in ("corpus", "n", "accuracy", "UAR", "macro-F1", "ECE"):
            ct.add_column(col, justify="right")
        for corpus, m in metrics["per_corpus"].items():
            ct.add_row(corpus, str(m["n"]), f"{m['accuracy']:.3f}", f"{m['uar']:.3f}", f"{m['macro_f1']:.3f}",
                       f"{m['ece']:.3f}")
        out.print(ct)
    cm = Table(title="confusion (rows true, columns predicted)")
    labels = metrics["confusion"]["labels"]
    cm.add_column("")
    for lb in labels:
        cm.add_column(lb[:5], justify="right")
    for lb, row in zip(labels, metrics["confusion"]["matrix"]):
        cm.add_row(lb, *map(str, row))
    out.print(cm)
    if metrics["not_ok"]:
        err.print(f"{len(metrics['not_ok'])} files could not be classified, e.g. "
                  f"{metrics['not_ok'][0]['path']}: {metrics['not_ok'][0]['error']}", markup=False)
    if json_out:
        json_out.write_text(json.dumps(metrics, indent=1))
    if plot:
        plot_confusion(metrics, plot)
    for model_dir in record:
        key = record_in_card(model_dir, metrics, command)
        err.print(f"recorded in {model_dir}/card.json as {key}", markup=False)
    return 0


def run_summarize(*, results, by, truth, html_out, json_out, csv_out, label_map=(), timelines=None,
                  per_class: int = 3) -> int:
    """``sercli summarize``; returns the exit status."""
    from ..training.corpora import read_manifest
    from ..output import OutputError
    from ..reports import agreement, read_results, summarize
    from ..timeline import moments

    if not results.is_file():
        return fail(f"{results} does not exist.")
    bad = [m for m in label_map if m.count("=") != 1 or not all(m.split("="))]
    if bad:
        return fail(f"--map takes LABEL=CLASS (e.g. calm=neutral), not {bad[0]!r}.")
    renamed = dict(m.split("=") for m in label_map)
    try:
        df = read_results(results)
        overall = summarize(df)
        groups = summarize(df, by=by) if by else overall
        classes = [c.removeprefix("prob_") for c in df.columns if c.startswith("prob_")]
        if truth:
            reference = read_manifest(truth)
            reference["emotion"] = reference["emotion"].replace(renamed)
        scored = agreement(df, reference, classes) if truth else None
    except (OutputError, ValueError, KeyError) as exc:
        return fail(str(exc).strip("'"))
    out = Console()
    out.print(summary_table(groups, f"{results.name}" + (f" by {by}" if by else "")))
    out.print(shares_table(groups))
    if per_class:
        out.print(_moments_table(moments(df, per_class=per_class), per_class, regions="start_s" in df))
    if scored is not None:
        if scored["mapped"]:
            out.print("reference labels mapped to the model's classes: "
                      + ", ".join(f"{k} -> {v}" for k, v in scored["mapped"].items()), highlight=False)
        if scored["ambiguous"]:
            out.print(f"{scored['ambiguous']} rows not matched: their file name belongs to two or more files "
                      "(in the reference or in the table; give full paths in the manifest)", highlight=False)
        out.print(f"agreement with {truth.name}: n = {scored['n']} rows with a reference label "
                  f"({scored['unmatched']} rows without one), "
                  f"accuracy {scored['accuracy']:.4f}, UAR {scored['uar']:.4f}, macro-F1 {scored['macro_f1']:.4f}",
                  highlight=False)
        pc = Table(title="per class")
        for col in ("class", "precision", "recall", "f1", "support"):
            pc.add_column(col, justify="right")
        for cls, m in scored["per_class"].iterrows():
            pc.add_row(cls, f"{m['precision']:.3f}", f"{m['recall']:.3f}", f"{m['f1']:.3f}", f"{int(m['support'])}")
        out.print(pc)
    if csv_out:
        groups.to_csv(csv_out)
    if json_out:
        doc = {"overall": json.loads(overall.to_json(orient="index")),
               "groups": json.loads(groups.to_json(orient="index")), "by": by}
        if scored is not None:
            doc["agreement"] = {k: scored[k] for k in ("n", "unmatched", "accuracy", "uar", "macro_f1")}
            doc["agreement"]["per_class"] = json.loads(scored["per_class"].to_json(orient="index"))
            doc["agreement"]["confusion"] = scored["confusion"].to_numpy().tolist()
        json_out.write_text(json.dumps(doc, indent=1))
    if html_out:
        from ..html import render_report
        from ..output import write_text_atomic

        write_text_atomic(html_out, render_report(df, groups, overall, agreement=scored, source=str(results),
                                                  timelines=timelines))
    return 0


def _moments_table(found, per_class: int, *, regions: bool) -> Table:
    """The strongest ``per_class`` moments of each emotion over the whole table (:func:`~sercli.timeline.moments`)."""
    from ..timeline import clock

    best = found.sort_values("confidence", ascending=False).groupby("emotion", sort=False).head(per_class)
    best = best.sort_values(["emotion", "confidence"], ascending=[True, False])
    table = Table(title=f"moments: the strongest {per_class} per emotion", title_justify="left")
    for col in ("emotion", "file", "time", "length", "confidence"):
        table.add_column(col, justify="left" if col in ("emotion", "file") else "right")
    for r in best.itertuples():
        table.add_row(str(r.emotion), os.path.basename(str(r.path)), f"{clock(r.start_s)}–{clock(r.end_s)}" if regions else "",
                      f"{r.duration_s:.1f} s", f"{r.confidence:.2f}")
    return table


def summary_table(summary, title: str) -> Table:
    table = Table(title=title)
    for col in ("group", summary.attrs.get("unit", "files"), "ok", "failed", "hours", "mean conf.", "low conf.",
                "dominant"):
        table.add_column(col, justify="right")
    for group, r in summary.iterrows():
        table.add_row(str(group), str(r["files"]), str(r["ok"]), str(r["failed"]), f"{r['duration_s'] / 3600:.3f}",
                      fmt(r["mean_confidence"]), fmt(r["low_confidence_share"]), str(r["dominant"]))
    return table


def shares_table(summary) -> Table:
    table = Table(title=f"share of ok {summary.attrs.get('unit', 'files')} per emotion")
    table.add_column("group", justify="right")
    classes = summary.attrs["classes"]
    for e in classes:
        table.add_column(e, justify="right")
    for group, r in summary.iterrows():
        table.add_row(str(group), *[_pct(r[f"share_{e}"]) for e in classes])
    return table


def _pct(v) -> str:
    return "—" if v != v else f"{v:.0%}"
