"""Batch runs into files: check the output first, journal rows, resume, write atomically."""

from __future__ import annotations

import datetime as _dt
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import pandas as pd

from . import __version__
from .discovery import display_path
from .models import Model
from .output import CsvStream, Journal, OutputError, check_output, read_table, write_atomic
from .pipeline import COLUMNS, SEGMENT_COLUMNS, ChunkResult, Options, iter_chunks

__all__ = ["RunStats", "run_metadata", "annotate_to_file", "typed_frame"]

_STRING = "string"
DTYPES = {
    "path": _STRING, "status": _STRING, "error": _STRING, "emotion": _STRING, "flags": _STRING,
    "model": _STRING, "sample_rate": "Int64", "channels": "Int64", "segments": "Int64", "silent": "boolean",
}


def typed_frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """Rows as a DataFrame with fixed dtypes (strings, nullable ints, floats), so every
    chunk of a streamed table has one schema."""
    df = pd.DataFrame(rows, columns=columns)
    return df.astype({c: DTYPES.get(c, "float64") for c in columns})


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

    @property
    def failed(self) -> int:
        return self.done - self.ok

    def add(self, res: ChunkResult) -> None:
        self.done += len(res.rows)
        self.ok += sum(r["status"] == "ok" for r in res.rows)
        self.audio_s += res.audio_s
        for k, v in res.stage_s.items():
            self.stage_s[k] = self.stage_s.get(k, 0.0) + v


def run_metadata(model: Model, options: Options) -> dict:
    """Provenance stored with the table (Parquet schema metadata, the journal header)."""
    return {
        "sercli_version": __version__,
        "model": model.name,
        "model_card_sha256": model.card_hash,
        "feature_params": model.params.to_dict(),
        "hop_s": options.hop_s,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def _open_journal(output: Path, meta: dict, *, resume: bool, columns: list[str]) -> tuple[Journal, set[str]]:
    """A journal for ``output``; on resume, the keys of rows already done."""
    journal = Journal.for_output(output)
    if resume and journal.exists():
        old = journal.meta()
        if (old.get("model"), old.get("model_card_sha256")) != (meta["model"], meta["model_card_sha256"]):
            raise OutputError(f"Cannot resume {output.name}: it was made with model {old.get('model')!r}, "
                              f"not {meta['model']!r}.")
        return journal, journal.done_keys()
    journal.start(meta)
    if resume and output.exists():  # a finished run: its rows count as done
        old = read_table(output)
        if "model" in old and len(old) and set(old["model"].dropna()) - {meta["model"]}:
            raise OutputError(f"Cannot resume {output.name}: it was made with another model.")
        rows = old.reindex(columns=columns).astype(object).where(old.notna(), None).to_dict("records")
        journal.append(rows)
        return journal, {r["path"] for r in rows}
    return journal, set()


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
    options: Options,
    model: Model,
    *,
    output: Path | str,
    segments_output: Path | None = None,
    overwrite: bool = False,
    resume: bool = False,
    executor_factory: Callable,
    on_chunk: Callable[[ChunkResult, RunStats], None] | None = None,
) -> RunStats:
    """Annotate ``paths`` into ``output`` (a path, or ``"-"`` for CSV on stdout).

    Rows go to a journal as they arrive; the final table replaces ``output`` atomically
    once all files are done. A KeyboardInterrupt stops the run and keeps the journal
    (``stats.interrupted``); ``resume=True`` continues from it.
    """
    stats = RunStats(total=len(paths))
    t0 = time.perf_counter()
    if str(output) == "-":
        stream = CsvStream(COLUMNS)
        for res in iter_chunks(paths, options, executor_factory=executor_factory):
            stream.append(res.rows)
            stats.add(res)
            if on_chunk:
                on_chunk(res, stats)
        stats.wall_s = time.perf_counter() - t0
        return stats

    output = Path(output)
    check_output(output, overwrite=overwrite, resume=resume)
    if segments_output is not None:
        check_output(segments_output, overwrite=overwrite, resume=resume)
    meta = run_metadata(model, options)
    journal, done = _open_journal(output, meta, resume=resume, columns=COLUMNS)
    seg_journal = None
    if segments_output is not None:
        seg_journal, _ = _open_journal(segments_output, meta, resume=resume and bool(done), columns=SEGMENT_COLUMNS)
    todo = [p for p in paths if display_path(p) not in done]
    stats.resumed = len(paths) - len(todo)
    try:
        for res in iter_chunks(todo, options, executor_factory=executor_factory):
            t_write = time.perf_counter()
            if seg_journal is not None:
                seg_journal.append(res.segments)  # before the file rows: a kill in between re-runs the files
            journal.append(res.rows)
            stats.add(res)
            stats.stage_s["write"] = stats.stage_s.get("write", 0.0) + time.perf_counter() - t_write
            if on_chunk:
                on_chunk(res, stats)
    except KeyboardInterrupt:
        stats.interrupted = True
        stats.wall_s = time.perf_counter() - t0
        return stats

    t_write = time.perf_counter()
    write_atomic(_journal_frames(journal, COLUMNS, lambda df: df), output, meta)
    if seg_journal is not None:
        finished = journal.done_keys()
        seen: set[tuple] = set()

        def keep(df: pd.DataFrame) -> pd.DataFrame:  # segments of finished files, each once
            key = list(zip(df["path"], df["start_s"]))
            mask = [p in finished and k not in seen and not seen.add(k) for p, k in zip(df["path"], key)]
            return df[mask]

        write_atomic(_journal_frames(seg_journal, SEGMENT_COLUMNS, keep), segments_output, meta)
        seg_journal.remove()
    journal.remove()
    stats.stage_s["write"] = stats.stage_s.get("write", 0.0) + time.perf_counter() - t_write
    stats.wall_s = time.perf_counter() - t0
    return stats
