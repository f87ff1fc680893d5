"""Batch runs into files: check the output first, journal rows, resume, write atomically."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import pandas as pd

from .discovery import display_path
from .output import (CsvStream, Journal, OutputError, check_location, read_table, table_metadata, typed_frame,
                     write_atomic)
from .scheduling import RunAborted
from .results import ChunkResult
from .tables import table_columns

if TYPE_CHECKING:
    from .job import Job

__all__ = ["OutputPlan", "RUN_KEY", "RunStats", "annotate_to_file", "plan_output", "previous_run"]

@dataclass
class RunStats:
    """What a run did, for the closing summary."""

    total: int = 0
    resumed: int = 0
    done: int = 0
    ok: int = 0
    audio_s: float = 0.0
    wall_s: float = 0.0
    stage_s: dict = field(default_factory=dict)
    interrupted: bool = False
    #: why the run stopped before finishing, not by the user's hand (e.g. the cluster went away)
    aborted: str = ""
    #: ``-o -``: the reader of stdout went away (``| head``); the run stopped there, quietly
    pipe_closed: bool = False

    @property
    def failed(self) -> int:
        return self.done - self.ok

    def add(self, res: ChunkResult) -> None:
        self.done += len(res.rows)
        self.ok += sum(r["status"] == "ok" for r in res.rows)
        self.audio_s += res.audio_s
        for k, v in res.stage_s.items():
            self.stage_s[k] = self.stage_s.get(k, 0.0) + v


#: Metadata that defines what the rows mean, with the option that sets it: a resumed run
#: must match every one of them, or its rows would be made two ways.
RUN_KEY = {
    "model": "--model",
    "model_sha256": "the model (its weights, classes or calibration)",
    "classes": "--classes",
    "feature_params": "the model's feature parameters",
    "hop_s": "--hop",
    "vad": "--vad",
    "calibration": "--calibration",
    "adapt": "--adapt",
    "segments": "--segments",
    "windows": "--windows",
    "include": "--include",
    "exclude": "--exclude",
}
_KEY_DEFAULTS = {"segments": None, "windows": None, "vad": "auto", "calibration": "in-domain", "adapt": "none",
                 "include": [], "exclude": []}


def _same_run(name: str, old: dict, new: dict) -> None:
    """Refuse, in one sentence, to continue a run whose rows were made another way."""
    for key, option in RUN_KEY.items():
        before, now = old.get(key, _KEY_DEFAULTS.get(key)), new.get(key, _KEY_DEFAULTS.get(key))
        if before != now:
            if key in ("model_sha256", "feature_params"):
                detail = f"{option} changed since"
            else:
                detail = f"{option}: {_show(before)} then, {_show(now)} now"
            raise OutputError(f"Cannot resume {name}: its rows were made with other options ({detail}); "
                              "run the same command as before with --resume, or pass --overwrite to start again.")


def _show(value) -> str:
    if value is None or value == []:
        return "not given"
    return " ".join(map(str, value)) if isinstance(value, list) else repr(value)


@dataclass(frozen=True)
class OutputPlan:
    """What a run does with its output, decided before anything is written.

    ``tables``: side tables by name (``segments``, ``windows``). ``resume_from``: ``""`` (a
    fresh table), ``"journal"`` (an interrupted run) or
    ``"table"`` (a finished Parquet table that new files are added to). ``previous``: the
    metadata of the run being resumed.
    """

    output: Path
    tables: dict[str, Path]  # side tables by name (``segments``, ``windows``)
    meta: dict
    resume_from: str = ""
    previous: dict = field(default_factory=dict)


def previous_run(output: Path) -> dict:
    """The metadata of the run that ``output`` would resume (its journal's, else its finished
    table's): what ``adapt="auto"`` and the classes resolved to then; empty when there is none."""
    journal = Journal.for_output(output)
    try:
        meta = journal.meta() if journal.exists() else (table_metadata(output) if output.exists() else None)
    except (OutputError, OSError, ValueError):
        return {}
    return meta or {}


def plan_output(output: Path, meta: dict, *, tables: dict[str, Path] | None = None, overwrite: bool = False,
                resume: bool = False) -> OutputPlan:
    """Decide, reading only, whether and how ``output`` may be written; raises :class:`OutputError`.

    A finished table is only replaced with ``overwrite``; an interrupted run's journal is
    only continued with ``resume`` (and the same :data:`RUN_KEY`) or discarded with
    ``overwrite``. Nothing is written here, so a refused command changes no file.
    """
    if overwrite and resume:
        raise OutputError("--overwrite and --resume exclude each other; pass one.")
    output = Path(output)
    tables = {name: Path(path) for name, path in (tables or {}).items()}
    for path in (output, *tables.values()):
        check_location(path)
    plan = OutputPlan(output, tables, meta)
    if overwrite:
        return plan
    journal = Journal.for_output(output)
    if journal.exists():
        if not resume:
            raise OutputError(f"An interrupted run left {journal.count()} finished rows in {journal.path.name}; "
                              "pass --resume to continue it, or --overwrite to start again.")
        previous = journal.meta()
        _same_run(output.name, previous, meta)
        return OutputPlan(output, tables, meta, "journal", previous)
    if output.exists():
        old = table_metadata(output)
        if not resume:
            more = ", or --resume to add files it does not have yet" if old is not None else ""
            raise OutputError(f"The output {output} exists; pass --overwrite to replace it{more}.")
        if old is None:
            raise OutputError(f"Cannot resume {output.name}: it is finished, and a {output.suffix} table does not "
                              "record the options it was made with (Parquet does); pass --overwrite to redo it.")
        _same_run(output.name, old, meta)
        return OutputPlan(output, tables, meta, "table", old)
    for name, path in tables.items():
        if path.exists():
            raise OutputError(f"The {name} table {path} exists; pass --overwrite to replace it.")
    return plan


def _columns(plan: OutputPlan) -> dict[str, list[str]]:
    """Columns of the run's tables (``files`` and the side tables), from the model's classes."""
    return table_columns(plan.meta["classes"])


#: Journal metadata key of a run that adds files to a finished table: the table keeps its rows until
#: the run ends, and the journal holds only the new ones.
EXTENDS = "extends_table"


def _extends(plan: OutputPlan) -> bool:
    return plan.resume_from == "table" or bool(plan.previous.get(EXTENDS))


def _open_journals(plan: OutputPlan) -> tuple[Journal, dict[str, Journal], set[str]]:
    """Carry out ``plan``: the journals to append to (file rows, side tables), and the paths already
    done (a finished table's are read, not copied: the journal holds only the new rows)."""
    journal = Journal.for_output(plan.output)
    sides = {name: Journal.for_output(path) for name, path in plan.tables.items()}
    meta = {**plan.meta, EXTENDS: True} if _extends(plan) else plan.meta
    if plan.resume_from == "journal":
        for side in sides.values():
            if not side.exists():
                side.start(meta)
        done = _ok_paths(pd.DataFrame(_last_rows(journal), columns=["path", "status"]))
    else:
        journal.start(meta)
        for side in sides.values():
            side.start(meta)
        done = set()
    if _extends(plan):
        done |= _ok_paths(read_table(plan.output))
    return journal, sides, done


#: Statuses a second try would give again (the audio itself is so): a resume keeps them.
FINAL_STATUSES = ("ok", "silent", "too_short", "too_long", "invalid_samples")


def _ok_paths(rows: pd.DataFrame) -> set[str]:
    """The files a resume does not classify again: those whose row is final (:data:`FINAL_STATUSES`);
    a file that failed otherwise (unreadable, unsupported, crashed, ...) is tried again, and its new
    row replaces the old."""
    return set(rows.loc[rows["status"].astype(str).isin(FINAL_STATUSES), "path"].astype(str))


def _last_rows(journal: Journal) -> list[tuple[str, str]]:
    """``(path, status)`` of each file's last row in the journal."""
    last: dict[str, str] = {}
    for chunk in journal.rows():
        for r in chunk:
            last[r["path"]] = r["status"]
    return list(last.items())


def _latest(journal: Journal, columns: list[str]) -> Iterator[pd.DataFrame]:
    """The journal's file rows, each file's last only (a resume that tried a failed file again)."""
    last_line = {}
    for n, r in enumerate(r for chunk in journal.rows() for r in chunk):
        last_line[r["path"]] = n
    start = 0
    for chunk in _journal_frames(journal, columns, lambda df: df):
        lines = range(start, start + len(chunk))
        start += len(chunk)
        yield chunk[[last_line.get(p) == n for p, n in zip(chunk["path"], lines)]]


def _with_table(plan: OutputPlan, name: str, frames: Iterator[pd.DataFrame],
                redone: set[str] = frozenset()) -> Iterator[pd.DataFrame]:
    """The rows of the finished table a run extends (``name``: ``files`` or a side table), but those
    of files this run classified again (``redone``), then ``frames``."""
    path = plan.output if name == "files" else plan.tables[name]
    if _extends(plan) and path.exists():
        columns = _columns(plan)[name]
        old = read_table(path).reindex(columns=columns)
        old = old[~old["path"].astype(str).isin(redone)]
        yield typed_frame(old.astype(object).where(old.notna(), None).to_dict("records"), columns)
    yield from frames


def _journal_frames(journal: Journal, columns: list[str], keep: Callable[[pd.DataFrame], pd.DataFrame]) \
        -> Iterator[pd.DataFrame]:
    empty = True
    for chunk in journal.rows():
        empty = False
        yield keep(typed_frame(chunk, columns))
    if empty:
        yield typed_frame([], columns)


def annotate_to_file(
    paths: list[str],
    job: Job,
    *,
    plan: OutputPlan | None,
    executor_factory: Callable,
    on_chunk: Callable[[ChunkResult, RunStats], None] | None = None,
) -> RunStats:
    """Annotate ``paths`` as :func:`plan_output` decided (``plan=None``: CSV rows on stdout): the
    rows of ``job.chunks`` (the generator :func:`sercli.annotate` collects), written as they come.

    Rows go to a journal as they arrive; the final table replaces the output atomically
    once all files are done. A KeyboardInterrupt stops the run and keeps the journal
    (``stats.interrupted``), which a run planned with ``resume=True`` continues.
    """
    stats = RunStats(total=len(paths))
    t0 = time.perf_counter()
    if plan is None:
        stream = CsvStream(table_columns(job.options.classes)["files"])
        try:
            for res in job.chunks(paths, executor_factory):
                stream.append(res.rows)
                stats.add(res)
                if on_chunk:
                    on_chunk(res, stats)
        except RunAborted as exc:
            stats.aborted = str(exc)
        except BrokenPipeError:
            stats.pipe_closed = True
        stats.wall_s = time.perf_counter() - t0
        return stats

    if plan.resume_from == "table":  # a finished table: untouched unless it lacks files or some failed
        have = _ok_paths(read_table(plan.output))
        if all(display_path(p) in have for p in paths):
            stats.resumed = len(paths)
            stats.wall_s = time.perf_counter() - t0
            return stats
    journal, sides, done = _open_journals(plan)
    todo = [p for p in paths if display_path(p) not in done]
    stats.resumed = len(paths) - len(todo)
    try:
        for res in job.chunks(todo, executor_factory):
            t_write = time.perf_counter()
            for name, side in sides.items():  # before the file rows: a kill in between re-runs the files
                side.append(getattr(res, name))
            journal.append(res.rows)
            stats.add(res)
            stats.stage_s["write"] = stats.stage_s.get("write", 0.0) + time.perf_counter() - t_write
            if on_chunk:
                on_chunk(res, stats)
    except KeyboardInterrupt:
        stats.interrupted = True
        stats.wall_s = time.perf_counter() - t0
        return stats
    except RunAborted as exc:  # the journal keeps what finished
        stats.aborted = str(exc)
        stats.wall_s = time.perf_counter() - t0
        return stats

    t_write = time.perf_counter()
    finished = journal.done_keys() if sides else set()
    for name, side in sides.items():
        seen: set[tuple] = set()

        def keep(df: pd.DataFrame, seen=seen) -> pd.DataFrame:  # rows of finished files, each once
            key = list(zip(df["path"], df["start_s"]))
            mask = [p in finished and k not in seen and not seen.add(k) for p, k in zip(df["path"], key)]
            return df[mask]

        write_atomic(_with_table(plan, name, _journal_frames(side, _columns(plan)[name], keep), finished),
                     plan.tables[name], plan.meta)
    write_atomic(_with_table(plan, "files", _latest(journal, _columns(plan)["files"]), journal.done_keys()),
                 plan.output, plan.meta)
    for side in sides.values():
        side.remove()
    journal.remove()
    stats.stage_s["write"] = stats.stage_s.get("write", 0.0) + time.perf_counter() - t_write
    stats.wall_s = time.perf_counter() - t0
    return stats
