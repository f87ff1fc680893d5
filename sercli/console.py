"""What the CLI shows: progress, summaries and model cards (``rich``, all on stderr
except what a command is asked to print)."""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table


if TYPE_CHECKING:
    from .batch import OutputPlan
    from .models import Model
    from .pipeline import Options

err = Console(stderr=True)


def _fail(message: str) -> int:
    print(f"sercli: {message}", file=sys.stderr)
    return 2


def run_annotate(*, output, **kwargs) -> int:
    """``sercli annotate``; returns the exit status. Holds the output's lock (:class:`~sercli.output.OutputLock`)
    for the whole run, so a second run on the same output is refused."""
    from .output import OutputError, OutputLock

    if output == "-":
        return _annotate(output=output, lock=None, **kwargs)
    lock = OutputLock(Path(output))
    try:
        lock.acquire()
    except OutputError as exc:
        return _fail(str(exc))
    try:
        return _annotate(output=output, lock=lock, **kwargs)
    finally:
        lock.release()


def _annotate(*, inputs, model, output, segments, windows, vad, jobs, hop_s, calibration, adapt, include,
              exclude, overwrite, resume, backend, scheduler, quiet, lock) -> int:
    import os

    from .adaptation import MIN_FILES, TooFewFiles, check_reference, resolve_mode
    from .batch import annotate_to_file, plan_output, run_metadata
    from .discovery import discover
    from .models import ModelNotFound, load_model
    from .output import OutputError
    from .pipeline import Options, resolve_jobs

    if output == "-" and (resume or segments or windows):
        return _fail("--resume, --segments and --windows need an output file, not -.")
    if hop_s is not None and hop_s <= 0:
        return _fail("--hop must be a positive number of seconds.")
    named = [i for i in inputs if i != "-"]
    missing = [i for i in named if not os.path.lexists(i)]
    if named and len(missing) == len(named) and "-" not in inputs:
        return _fail(f"{'no input exists' if len(missing) > 1 else 'the input does not exist'}: "
                     f"{', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}.")
    try:
        mdl = load_model(model, calibration=calibration)
        auto = adapt == "auto"  # what suits the model; a resumed run keeps what it started with
        adapt = resolve_mode(adapt, mdl.card,
                             previous=_previous_adapt(Path(output)) if auto and resume and output != "-" else None)
        if adapt == "corpus" and mdl.head is None:  # an encoder model adapts its embeddings: no reference needed
            check_reference(mdl.card, mdl.params.n_mels)
        tables = {name: path for name, path in (("segments", segments), ("windows", windows)) if path is not None}
        options = Options.for_model(model, mdl, hop_s=hop_s, segments="segments" in tables,
                                    windows="windows" in tables, vad=vad, adapt=adapt)
        plan = None
        if output != "-":
            meta = run_metadata(mdl, options, tables=tables, include=include, exclude=exclude)
            plan = plan_output(Path(output), meta, tables=tables, overwrite=overwrite, resume=resume)
        executor_factory = _executor_factory(backend, scheduler, resolve_jobs(jobs))
    except (ModelNotFound, OutputError, ValueError) as exc:
        return _fail(str(exc))
    paths = discover(inputs, include=include, exclude=exclude)
    if not paths:
        _shutdown(executor_factory)
        return _fail("no audio files found in the given inputs.")
    adapted = ""
    if adapt == "corpus":
        t0 = time.perf_counter()
        try:
            options = _with_corpus_shift(options, mdl, paths, plan, jobs=resolve_jobs(jobs), quiet=quiet)
            adapted = ("corpus, the statistics of the resumed run" if plan is not None and plan.resume_from else
                       f"corpus, measured in {time.perf_counter() - t0:.1f} s (not in the wall time)")
        except ValueError as exc:
            if not (auto and isinstance(exc, TooFewFiles)):
                _shutdown(executor_factory)
                return _fail(str(exc))
            options = replace(options, adapt="none")  # --adapt auto: too few files to stand for a corpus
            adapted = f"none: fewer than {MIN_FILES} files with speech to stand for a corpus"
        except BaseException:
            _shutdown(executor_factory)  # interrupted while measuring: the run ends here
            raise
        if plan is not None:
            plan = replace(plan, meta=run_metadata(mdl, options, tables=tables, include=include, exclude=exclude))
    if lock is not None:
        lock.claim()  # the run goes ahead: a refused command above changed no file
    seen: dict[str, list] = {"status": [], "emotion": [], "confidence": [], "duration_s": []}
    progress, task = _progress(len(paths), quiet)

    def on_chunk(res, stats) -> None:
        for r in res.rows:  # the few columns the closing summary needs
            for k, column in seen.items():
                column.append(r[k])
        if progress is not None:
            progress.update(task, completed=stats.resumed + stats.done,
                            hours=f"{stats.audio_s / 3600:.2f} h audio")

    try:
        if progress is not None:
            progress.start()
        stats = annotate_to_file(paths, options, plan=plan, executor_factory=executor_factory, on_chunk=on_chunk)
    except OutputError as exc:
        return _fail(str(exc))
    finally:
        if progress is not None:
            progress.stop()
        _shutdown(executor_factory)
    if stats.pipe_closed:  # `-o - | head`: the reader has what it wanted; not a failure
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's last flush does not fail either
        return 0
    if stats.aborted:
        print(f"sercli: the run stopped: {stats.aborted} {stats.done} finished rows are kept; run the same "
              "command with --resume to finish.", file=sys.stderr)
        return 3
    if stats.interrupted:
        print(f"Interrupted: {stats.done} finished rows are kept; run the same command with --resume "
              "to finish.", file=sys.stderr)
        return 130
    if not quiet:
        _print_summary(stats, seen, output, options.classes, adapted=adapted)
    return 0 if stats.failed == 0 else 1


def _previous_adapt(output: Path) -> str | None:
    """The ``--adapt`` a run being resumed into ``output`` was made with (its journal's, else its table's)."""
    from .output import Journal, OutputError, table_metadata

    journal = Journal.for_output(output)
    try:
        meta = journal.meta() if journal.exists() else (table_metadata(output) if output.exists() else None)
    except (OutputError, OSError, ValueError):
        return None
    return (meta or {}).get("adapt")


def _with_corpus_shift(options: Options, mdl: Model, paths: list[str], plan: OutputPlan | None, *, jobs: int,
                       quiet: bool) -> Options:
    """``options`` with the corpus shift: the resumed run's, else measured now (under a status line)."""
    from contextlib import nullcontext

    from .adaptation import SAMPLE_FILES
    from .pipeline import with_corpus_shift

    previous = plan.previous.get("shift") if plan is not None and plan.resume_from else None
    status = err.status(f"measuring the average spectrum of {min(len(paths), SAMPLE_FILES)} files")
    with nullcontext() if previous is not None or quiet else status:
        return with_corpus_shift(options, mdl, paths, jobs=jobs, shift=previous)


def _executor_factory(backend: str, scheduler: str | None, jobs: int):
    from .pipeline import LocalExecutors

    if backend == "local":
        if scheduler:
            raise ValueError("--scheduler needs --backend dask.")
        return LocalExecutors(jobs)
    if backend == "dask":
        from .cluster import dask_executor_factory

        return dask_executor_factory(scheduler, jobs)
    raise ValueError(f"unknown backend {backend!r}; use local or dask.")


def _shutdown(executor_factory) -> None:
    close = getattr(executor_factory, "close", None)
    if close:
        close()


def _progress(total: int, quiet: bool):
    if quiet:
        return None, None
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TaskProgressColumn, TextColumn,
                               TimeElapsedColumn, TimeRemainingColumn)

    progress = Progress(
        TextColumn("annotating"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
        TextColumn("{task.fields[hours]}"), TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(), console=err, transient=True,
    )
    task = progress.add_task("annotate", total=total, hours="0.00 h audio", rate="")
    return _RateProgress(progress, task), task


#: Seconds of a run before the progress line shows files per second.
_RATE_AFTER_S = 3.0


class _RateProgress:
    """A rich Progress that also shows files per second."""

    def __init__(self, progress, task) -> None:
        self._p, self._task = progress, task

    def start(self) -> None:
        self._p.start()

    def stop(self) -> None:
        self._p.stop()

    def update(self, task, **fields) -> None:
        t = self._p.tasks[0]
        # a rate over the first seconds mostly measures start-up: show it once it means something
        speed = t.speed if (t.elapsed or 0) >= _RATE_AFTER_S else None
        self._p.update(task, rate=f"{speed:.0f} files/s" if speed else "", **fields)


def _print_summary(stats, seen: dict[str, list], output, classes: tuple[str, ...], *, adapted: str = "") -> None:
    """The run's numbers, then the same emotion table as ``sercli summarize``."""
    import pandas as pd

    from .reports import summarize

    table = Table(title="sercli annotate", show_header=False, title_justify="left")
    table.add_row("files ok", f"{stats.ok}")
    table.add_row("files not ok", f"{stats.failed}")
    if stats.resumed:
        table.add_row("resumed (already done)", f"{stats.resumed}")
    table.add_row("audio", f"{stats.audio_s / 3600:.3f} h")
    table.add_row("wall time", f"{stats.wall_s:.1f} s")
    if stats.wall_s > 0:
        table.add_row("speed", f"{stats.audio_s / stats.wall_s:.0f}× real time, {stats.done / stats.wall_s:.1f} files/s")
    if adapted:
        table.add_row("adapted", adapted)
    table.add_row("output", str(output))
    err.print(table)
    if seen["status"]:
        overall = summarize(pd.DataFrame(seen), classes=classes)
        err.print(_summary_table(overall, "this run"))
        err.print(_shares_table(overall))


def print_models() -> None:
    from . import DEFAULT_MODEL
    from .models import available_models, load_model

    table = Table(title="shipped models: new speakers of the training corpora (split test: accuracy, UAR, "
                        "macro-F1), and corpora they were not trained on (LOCO mean UAR, balanced and speaker-skewed)")
    table.add_column("model", no_wrap=True)
    for col in ("acc", "UAR", "F1", "LOCO UAR", "skewed LOCO", "params"):
        table.add_column(col, justify="right")
    for name in available_models():
        m = load_model(name)
        ev = m.card.get("evaluation", {})
        si = ev.get("speaker_independent", {})
        table.add_row(name + (" (default)" if name == DEFAULT_MODEL else ""), _fmt(si.get("accuracy")),
                      _fmt(si.get("uar")), _fmt(si.get("macro_f1")), _fmt(_mean_uar(ev, "loco_")),
                      _fmt(_mean_uar(ev, "loco_skewed_")), f"{m.card.get('params', '')}")
    Console().print(table)


def _mean_uar(evaluation: dict, prefix: str) -> float | None:
    """Mean UAR of a card's entries of one protocol family (``loco_``: balanced; ``loco_skewed_``),
    as annotate runs by default (adapted runs left out)."""
    uars = [v["uar"] for k, v in evaluation.items() if k.startswith(prefix) and "+" not in k
            and (prefix != "loco_" or not k.startswith("loco_skewed_"))]
    return sum(uars) / len(uars) if uars else None


def _fmt(v) -> str:
    return "—" if v is None or v != v else f"{v:.3f}"


def print_card(name: str) -> int:
    from .models import ModelNotFound, load_model

    try:
        m = load_model(name)
    except ModelNotFound as exc:
        return _fail(str(exc))
    md = m.path / "CARD.md"
    sys.stdout.write(md.read_text() if md.exists() else json.dumps(m.card, indent=1) + "\n")
    return 0


def _import_tensorflow_quietly() -> None:
    """Import TensorFlow with its C++ start-up lines (oneDNN notes, absl warnings, E0000 lines)
    dropped, and its Python logger kept to warnings."""
    import logging
    import os

    from .models import _quiet_stderr

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    with _quiet_stderr():
        import tensorflow  # noqa: F401
    logging.getLogger("tensorflow").setLevel(logging.WARNING)


def run_train(*, manifest, out, opts, jobs, cache_dir, command) -> int:
    """``sercli train``: log lines above a progress bar over epochs; returns the exit status."""
    import logging

    from rich.logging import RichHandler
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from .training import train

    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s", force=True,
                        handlers=[RichHandler(console=err, show_path=False)])
    _import_tensorflow_quietly()
    progress = Progress(TextColumn("training"), BarColumn(), MofNCompleteColumn(), TextColumn("epochs"),
                        TextColumn("{task.fields[score]}"), TimeElapsedColumn(), console=err)
    task = progress.add_task("train", total=opts.epochs, score="")

    def on_epoch(entry: dict) -> None:
        progress.start()  # shown from the first epoch on: a refused run shows no bar
        progress.update(task, completed=entry["epoch"], score=f"val macro-F1 {entry['val_macro_f1']:.3f}")

    try:
        card = train(manifest, out, opts, jobs=jobs, cache_dir=cache_dir, command=command, on_epoch=on_epoch)
    except ValueError as exc:  # unusable manifest: no split column, no readable files, too few clips
        return _fail(str(exc))
    finally:
        progress.stop()
    tr = card["training"]
    err.print(f"wrote {out} ({len(card['classes'])} classes; best epoch {tr['best_epoch']}, "
              f"val macro-F1 {tr['val_macro_f1']:.3f})", highlight=False)
    return 0


def run_train_encoder(*, manifest, out, opts, init, jobs, cache_dir, command) -> int:
    """``sercli train`` of an encoder model (or of a new head for one, with ``--init``)."""
    import logging

    from rich.logging import RichHandler

    from .encoder_training import fine_tune_head, train_encoder_model

    logging.basicConfig(level=logging.INFO, format="%(name)s %(message)s", force=True,
                        handlers=[RichHandler(console=err, show_path=False)])
    if not init:  # exporting the encoder needs TensorFlow; a new head does not
        _import_tensorflow_quietly()
    try:
        with err.status("fitting the head" if init else "exporting the encoder and fitting the head"):
            if init:
                card = fine_tune_head(init, manifest, out, seed=opts.seed, jobs=jobs, command=command)
            else:
                card = train_encoder_model(manifest, out, opts, jobs=jobs, cache_dir=cache_dir, command=command)
    except (ValueError, FileNotFoundError) as exc:  # unusable manifest, too few clips, encoder wheel missing
        return _fail(str(exc))
    tr = card["training"]
    err.print(f"wrote {out} ({len(card['classes'])} classes; val macro-F1 {tr['val_macro_f1']:.3f}, "
              f"{tr['train_seconds']:.0f} s)", highlight=False)
    return 0


def run_evaluate(*, model, manifest, split, split_column, json_out, plot, record, jobs, calibration, adapt,
                 command) -> int:
    """``sercli evaluate``; returns the exit status."""
    from .evaluation import evaluate, plot_confusion, record_in_card
    from .models import ModelNotFound, load_model

    try:
        load_model(model, calibration=calibration)
        if not manifest.is_file():
            return _fail(f"the manifest {manifest} does not exist.")
        metrics, _ = evaluate(model, manifest, split=split, split_column=split_column, jobs=jobs,
                              calibration=calibration, adapt=adapt)
    except (ModelNotFound, ValueError) as exc:
        return _fail(str(exc))
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


def run_summarize(*, results, by, truth, html_out, json_out, csv_out) -> int:
    """``sercli summarize``; returns the exit status."""
    from .corpora import read_manifest
    from .output import OutputError
    from .reports import agreement, read_results, summarize

    if not results.is_file():
        return _fail(f"{results} does not exist.")
    try:
        df = read_results(results)
        overall = summarize(df)
        groups = summarize(df, by=by) if by else overall
        classes = [c.removeprefix("prob_") for c in df.columns if c.startswith("prob_")]
        scored = agreement(df, read_manifest(truth), classes) if truth else None
    except (OutputError, ValueError, KeyError) as exc:
        return _fail(str(exc).strip("'"))
    out = Console()
    out.print(_summary_table(groups, f"{results.name}" + (f" by {by}" if by else "")))
    out.print(_shares_table(groups))
    if scored is not None:
        if scored["mapped"]:
            out.print("reference labels mapped to the model's classes: "
                      + ", ".join(f"{k} -> {v}" for k, v in scored["mapped"].items()), highlight=False)
        if scored["ambiguous"]:
            out.print(f"{scored['ambiguous']} rows not matched: their file name belongs to two or more reference "
                      "files (give full paths in the manifest)", highlight=False)
        out.print(f"agreement with {truth.name}: n = {scored['n']} ({scored['unmatched']} unmatched), "
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
        from .html import render_report
        from .output import write_text_atomic

        write_text_atomic(html_out, render_report(df, groups, overall, agreement=scored, source=str(results)))
    return 0


def _summary_table(summary, title: str) -> Table:
    table = Table(title=title)
    for col in ("group", summary.attrs.get("unit", "files"), "ok", "failed", "hours", "mean conf.", "low conf.",
                "dominant"):
        table.add_column(col, justify="right")
    for group, r in summary.iterrows():
        table.add_row(str(group), str(r["files"]), str(r["ok"]), str(r["failed"]), f"{r['duration_s'] / 3600:.3f}",
                      _fmt(r["mean_confidence"]), _fmt(r["low_confidence_share"]), str(r["dominant"]))
    return table


def _shares_table(summary) -> Table:
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


def run_label(*, source, labels, classes, per_class, by, strategy, limit, model, jobs, port, open_browser) -> int:
    """``sercli label``: choose the clips, serve the page until Finish or Ctrl-C, print the
    fine-tuning command."""
    import threading
    import webbrowser

    from .audio import DecodeError
    from .label_server import LabelServer, LabelSession
    from .labeling import LabelBook, emotion_table, queue, train_command
    from .models import ModelNotFound
    from .output import OutputError
    from .reports import classes_of
    from .training import MIN_CLIPS_PER_CLASS

    try:
        with err.status(f"reading {source}" if Path(source).is_file() else f"annotating {source}"):
            table = emotion_table(source, model=model, jobs=jobs)
        book = LabelBook(labels, classes or classes_of(table))
        clips = queue(table, strategy=strategy, by=by, limit=limit)
    except (ValueError, OSError, OutputError, ModelNotFound, DecodeError) as exc:
        return _fail(str(exc).rstrip(".") + ".")
    if not clips:
        return _fail(f"{source} has no clip to label (no file was classified).")
    command = train_command(table, labels)
    session = LabelSession(clips, book, target=per_class, minimum=MIN_CLIPS_PER_CLASS, command=command)
    try:
        server = LabelServer(session, port=port)
    except OSError as exc:
        return _fail(f"Cannot listen on 127.0.0.1:{port}: {exc.strerror}.")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    pending = len(session.pending())
    err.print(f"{len(clips)} clips chosen, {pending} not labelled yet; labels go to {labels}.\n"
              f"Open [bold]{server.url}[/] (Ctrl-C or Finish on the page to stop).", highlight=False)
    if open_browser:
        webbrowser.open(server.url)
    try:
        session.finished.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
        server.server_close()
    counts = book.counts()
    err.print("labels: " + ", ".join(f"{c} {n}" for c, n in counts.items()), highlight=False)
    short = [c for c, n in counts.items() if n < MIN_CLIPS_PER_CLASS]
    if short:
        err.print(f"Fine-tuning needs {MIN_CLIPS_PER_CLASS} clips per class; {', '.join(short)} "
                  f"{'has' if len(short) == 1 else 'have'} fewer. Run the same command again to go on.", highlight=False)
    else:
        err.print("Fine-tune with:", highlight=False)
        print(command)
    return 0
