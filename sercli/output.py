"""Emotion tables on disk: a crash-safe journal and one small writer class per format.

While a run goes on, finished rows are appended to a *journal* next to the output
(``OUT.journal``, JSON lines, flushed after every chunk). A run killed at any moment
leaves the journal, which ``--resume`` reads back; only when every file is done is the
final table written to a temporary sibling and renamed over the output (atomic), and
the journal removed.
"""

from __future__ import annotations

import csv
import json
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import pandas as pd

__all__ = [
    "FORMATS",
    "Journal",
    "OutputLock",
    "OutputError",
    "atomic_path",
    "check_location",
    "check_writable",
    "read_table",
    "table_metadata",
    "typed_frame",
    "write_atomic",
    "write_text_atomic",
    "writer_for",
]

JOURNAL_SUFFIX = ".journal"
_JOURNAL_VERSION = 1


_STRING = "string"
DTYPES = {
    "path": _STRING, "status": _STRING, "error": _STRING, "emotion": _STRING, "flags": _STRING,
    "model": _STRING, "sample_rate": "Int64", "channels": "Int64", "segments": "Int64", "windows": "Int64",
    "silent": "boolean",
}


def typed_frame(rows: list[dict], columns: list[str]) -> pd.DataFrame:
    """Rows as a DataFrame with fixed dtypes (strings, nullable ints, floats), so every
    chunk of a streamed table has one schema."""
    df = pd.DataFrame(rows, columns=columns)
    return df.astype({c: DTYPES.get(c, "float64") for c in columns})


class OutputError(Exception):
    """The output location is unusable; the message is one sentence for the user."""


class ParquetWriter:
    """Parquet with the run's metadata in the schema (``sercli`` key, JSON)."""

    suffix = ".parquet"

    def write(self, frames: Iterable[pd.DataFrame], path: Path, metadata: dict) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        writer = None
        try:
            for df in frames:
                table = pa.Table.from_pandas(df, preserve_index=False)
                if writer is None:
                    schema = table.schema.with_metadata({**(table.schema.metadata or {}),
                                                         b"sercli": json.dumps(metadata).encode()})
                    writer = pq.ParquetWriter(str(path), schema)
                writer.write_table(table.cast(writer.schema))
        finally:
            if writer is not None:
                writer.close()


class CsvWriter:
    """CSV with a header; metadata is not stored (use Parquet for that)."""

    suffix = ".csv"

    def write(self, frames: Iterable[pd.DataFrame], path: Path, metadata: dict) -> None:
        with open(path, "w", newline="", encoding="utf-8") as fh:
            for i, df in enumerate(frames):
                df.to_csv(fh, header=i == 0, index=False, float_format="%.6g")


class JsonlWriter:
    """One JSON object per line."""

    suffix = ".jsonl"

    def write(self, frames: Iterable[pd.DataFrame], path: Path, metadata: dict) -> None:
        with open(path, "w", encoding="utf-8") as fh:
            for df in frames:
                if len(df):
                    text = df.to_json(orient="records", lines=True, force_ascii=False, double_precision=7)
                    fh.write(text if text.endswith("\n") else text + "\n")


#: Output format by file extension.
FORMATS = {w.suffix: w for w in (ParquetWriter, CsvWriter, JsonlWriter)}


def writer_for(path: Path):
    """The writer for ``path``'s extension (``.parquet``, ``.csv``, ``.jsonl``)."""
    try:
        return FORMATS[path.suffix.lower()]()
    except KeyError:
        raise OutputError(f"Unknown output format {path.suffix!r}; use .parquet, .csv or .jsonl.") from None


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write; renamed over ``path`` when the block succeeds
    (the file fsynced before, its folder after, so the new name survives a power cut before
    anything that relies on it, such as the journal's removal), removed when it fails."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_folder(path.parent)
    finally:
        tmp.unlink(missing_ok=True)


def _fsync_folder(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(frames: Iterable[pd.DataFrame], path: Path, metadata: dict) -> None:
    """Write ``frames`` in ``path``'s format, atomically."""
    writer = writer_for(path)
    with atomic_path(path) as tmp:
        writer.write(frames, tmp, metadata)


def write_text_atomic(path: Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a table that ``annotate`` wrote (any format); Parquet metadata goes to ``df.attrs``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        df = table.to_pandas()
        meta = (table.schema.metadata or {}).get(b"sercli")
        if meta:
            df.attrs.update(json.loads(meta))
        return df
    if suffix == ".csv":
        return pd.read_csv(path, keep_default_na=False, na_values=[""])
    if suffix == ".jsonl":
        return pd.read_json(path, lines=True, dtype=False)
    raise OutputError(f"Cannot read {path.name}: unknown format {suffix!r}.")


def check_location(path: Path) -> None:
    """Fail early (before any work) if ``path`` cannot be written at all (format, folder, permissions)."""
    writer_for(path)
    check_writable(path)


def check_writable(path: Path) -> None:
    """Raise :class:`OutputError` (one sentence) unless a file can be written at ``path``: its
    folder exists and is writable, and ``path`` is not a folder."""
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.exists():
        raise OutputError(f"The output folder {parent} does not exist.")
    if not parent.is_dir():
        raise OutputError(f"The output folder {parent} is a file, not a folder.")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"The output folder {parent} is not writable.")
    if path.is_dir():
        raise OutputError(f"The output {path} is a directory.")


def table_metadata(path: Path) -> dict | None:
    """The run metadata a finished table carries (Parquet only; None for CSV and JSON lines)."""
    if path.suffix.lower() != ".parquet":
        return None
    import pyarrow.parquet as pq

    try:
        meta = (pq.read_schema(path).metadata or {}).get(b"sercli")
    except Exception:  # not a Parquet file we can read
        raise OutputError(f"The output {path} exists but is not a readable Parquet table.") from None
    return json.loads(meta) if meta else None


class OutputLock:
    """One writer per output: an exclusive ``flock`` on ``OUT.lock``, held for the whole run.

    A second run on the same output is refused in one sentence naming the process that holds
    it. The lock dies with its process (``kill -9`` included), so a stale file locks nothing.
    A lock file this run created is removed when it is released; one left by a killed run is
    left as it is by a run that is then refused (a refused command changes no file), and
    taken over by one that goes ahead (:meth:`claim`).
    """

    def __init__(self, output: Path) -> None:
        self.output = Path(output)
        self.path = self.output.with_name(self.output.name + ".lock")
        self._fd: int | None = None
        self._created = False

    def acquire(self) -> None:
        """Take the lock, or raise :class:`OutputError` naming the run that has it. A folder
        where no lock file can be made is left to the output checks to report."""
        import fcntl

        while True:
            try:
                created = not self.path.exists()
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError:
                return
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "starting"
                os.close(fd)
                raise OutputError(f"Another sercli run ({holder}) is writing {self.output.name}; wait for it to "
                                  "finish or stop it, then run this command again.") from None
            try:
                same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the run that held it removed it meanwhile: lock the new file
        self._fd, self._created = fd, created
        if created:
            self.claim()

    def claim(self) -> None:
        """Write this process into the lock file (the run goes ahead)."""
        import datetime as dt

        if self._fd is None:
            return
        started = dt.datetime.now().astimezone().isoformat(timespec="seconds")
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"pid {os.getpid()}, started {started}".encode(), 0)
        self._created = True

    def release(self) -> None:
        """Give the lock up, removing the lock file unless it was another run's left-over."""
        import fcntl

        if self._fd is None:
            return
        if self._created:
            self.path.unlink(missing_ok=True)
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


@dataclass
class Journal:
    """Append-only JSON-lines record of finished rows, next to an output file.

    Line 1 is a header (``{"sercli_journal": 1, "meta": {...}}``); every other line is
    one row. A line cut short by a kill is ignored on reading.
    """

    path: Path

    @classmethod
    def for_output(cls, output: Path) -> Journal:
        return cls(output.with_name(output.name + JOURNAL_SUFFIX))

    def exists(self) -> bool:
        return self.path.exists()

    def count(self) -> int:
        """Number of complete rows."""
        with open(self.path, "rb") as fh:
            return max(0, sum(chunk.count(b"\n") for chunk in iter(lambda: fh.read(1 << 20), b"")) - 1)

    def start(self, meta: dict) -> None:
        """Begin a new journal (replacing an old one atomically)."""
        with atomic_path(self.path) as tmp:
            tmp.write_text(json.dumps({"sercli_journal": _JOURNAL_VERSION, "meta": meta}) + "\n", encoding="utf-8")

    def meta(self) -> dict:
        with open(self.path, encoding="utf-8") as fh:
            try:
                return json.loads(fh.readline())["meta"]
            except (ValueError, KeyError):
                raise OutputError(f"The journal {self.path} is damaged; remove it and run again.") from None

    def append(self, rows: list[dict]) -> None:
        """Append rows and flush them to disk."""
        if not rows:
            return
        self._repair_tail()
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write("".join(json.dumps(r, allow_nan=True) + "\n" for r in rows))
            fh.flush()
            os.fsync(fh.fileno())

    def _repair_tail(self) -> None:
        """Cut a partial last line left by a kill, so new rows start on a line of their own."""
        with open(self.path, "rb+") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            if size == 0:
                return
            fh.seek(size - 1)
            if fh.read(1) == b"\n":
                return
            fh.seek(0)
            data = fh.read()
            fh.truncate(data.rfind(b"\n") + 1)

    def rows(self, chunk_rows: int = 5_000) -> Iterator[list[dict]]:
        """The journal's complete rows, in chunks."""
        chunk: list[dict] = []
        with open(self.path, encoding="utf-8") as fh:
            fh.readline()
            for line in fh:
                if not line.endswith("\n"):
                    break  # cut short by a kill
                chunk.append(json.loads(line))
                if len(chunk) >= chunk_rows:
                    yield chunk
                    chunk = []
        if chunk:
            yield chunk

    def done_keys(self, key: str = "path") -> set[str]:
        return {r[key] for chunk in self.rows() for r in chunk}

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


class CsvStream:
    """Rows streamed as CSV to a text stream (``-o -``): header first, then each chunk."""

    def __init__(self, columns: list[str], stream=None) -> None:
        self.columns = columns
        self.stream = stream or sys.stdout
        self._writer = csv.DictWriter(self.stream, fieldnames=columns, extrasaction="ignore")
        self._writer.writeheader()

    def append(self, rows: list[dict]) -> None:
        self._writer.writerows({k: ("" if _isnan(v) else v) for k, v in r.items()} for r in rows)
        self.stream.flush()


def _isnan(v) -> bool:
    return v is None or (isinstance(v, float) and v != v)

