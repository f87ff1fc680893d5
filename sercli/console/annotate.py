"""``sercli annotate`` at the terminal: the output's lock, the progress bar, the closing summary."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from rich.table import Table

from . import err, fail, holding_lock
from .reports import shares_table, summary_table

if TYPE_CHECKING:
    from ..pipeline import Run

__all__ = ["run_annotate"]


def run_annotate(*, output, **kwargs) -> int:
    """``sercli annotate``; returns the exit status. Holds the output's lock (:class:`~sercli.output.OutputLock`)
    for the whole run, so a second run on the same output is refused."""
    if output == "-":
        return _annotate(output=output, lock=None, **kwargs)
    return holding_lock(Path(output), lambda lock: _annotate(output=output, lock=lock, **kwargs))


def _annotate(*, inputs, model, output, segments, windows, vad, jobs, hop_s, calibration, adapt, classes, include,
              exclude, overwrite, resume, backend, scheduler, quiet, lock) -> int:
    import os

    from ..models import ModelNotFound
    from ..output import OutputError
    from ..pipeline import Run
    from ..workers import resolve_jobs

    if output == "-" and (resume or segments or windows):
        return fail("--resume, --segments and --windows need an output file, not -.")
    if hop_s is not None and hop_s <= 0:
        return fail("--hop must be a positive number of seconds.")
    named = [i for i in inputs if i != "-"]
    missing = [i for i in named if not os.path.lexists(i)]
    if named and len(missing) == len(named) and "-" not in inputs:
        return fail(f"{'no input exists' if len(missing) > 1 else 'the input does not exist'}: "
                     f"{', '.join(missing[:3])}{' …' if len(missing) > 3 else ''}.")
    try:
        run = Run.prepare(inputs, model=model, classes=classes, calibration=calibration, adapt=adapt, hop_s=hop_s,
                          vad=vad, segments=segments or False, windows=windows or False, include=include,
                          exclude=exclude, output=None if output == "-" else output, overwrite=overwrite,
                          resume=resume, jobs=jobs)
        run.executors = executor_factory = _executor_factory(backend, scheduler, resolve_jobs(jobs))
    except (ModelNotFound, OutputError, ValueError) as exc:
        return fail(str(exc))
    if not run.paths:
        _shutdown(executor_factory)
        return fail("no audio files found in the given inputs.")
    if run.job.options.adapt == "corpus":
        try:
            _adapt(run, quiet=quiet)
        except ValueError as exc:  # TooFewFiles (asked for corpus, too few files), a resumed shift that does not fit
            _shutdown(executor_factory)
            return fail(str(exc))
        except BaseException:
            _shutdown(executor_factory)  # interrupted while measuring: the run ends here
            raise
    if lock is not None:
        lock.claim()  # the run goes ahead: a refused command above changed no file
    seen: dict[str, list] = {"status": [], "emotion": [], "confidence": [], "duration_s": []}
    progress, task = _progress(len(run.paths), quiet)

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
        stats = run.write(on_chunk)
    except OutputError as exc:
        return fail(str(exc))
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
        _print_summary(stats, seen, output, run.job.options.classes, adapted=run.job.adapted)
    return 0 if stats.failed == 0 else 1


def _adapt(run: Run, *, quiet: bool) -> None:
    """:meth:`Run.adapt` to the corpus: with the resumed run's statistics, else measured now (under a status line)."""
    from contextlib import nullcontext

    from ..adaptation import SAMPLE_FILES

    resumed = run.plan is not None and bool(run.plan.resume_from)
    status = err.status(f"measuring {min(len(run.paths), SAMPLE_FILES)} files to adapt to their corpus")
    with nullcontext() if resumed or quiet else status:
        run.adapt()


def _executor_factory(backend: str, scheduler: str | None, jobs: int):
    from ..workers import LocalExecutors

    if backend == "local":
        if scheduler:
            raise ValueError("--scheduler needs --backend dask.")
        return LocalExecutors(jobs)
    if backend == "dask":
        from ..cluster import dask_executor_factory

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

    from ..reports import summarize

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
        err.print(summary_table(overall, "this run"))
        err.print(shares_table(overall))
