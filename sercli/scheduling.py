"""Chunks of files over an executor (local processes or Dask), with crash isolation: a
chunk whose worker dies is retried file by file, so only the file that kills a worker
becomes an error row."""

from __future__ import annotations

import os
import traceback
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from typing import Callable, Iterator

from .models import ModelMismatch
from .results import ChunkResult, Options, crash_row
from .stream import annotate_chunk

__all__ = ["CHUNK_BYTES", "RunAborted", "iter_chunks"]


def _is_worker_crash(exc: BaseException) -> bool:
    names = {type(exc).__name__, *(type(c).__name__ for c in (exc.__cause__, exc.__context__) if c)}
    return bool(names & {"TerminatedWorkerError", "BrokenProcessPool", "KilledWorker", "ShutdownExecutorError"})


def iter_chunks(
    paths: list[str],
    options: Options,
    *,
    executor_factory: Callable[[], Executor],
    chunk_size: int = 32,
    in_flight: int | None = None,
) -> Iterator[ChunkResult]:
    """Run ``annotate_chunk`` over ``paths`` and yield results as chunks finish.

    At most ``in_flight`` chunks are queued at a time, so memory does not grow with the
    number of files. By default that is what the executor factory says it can run
    (``factory.in_flight()``: twice the worker processes, or twice a Dask cluster's threads,
    read again as chunks finish, so a cluster that grows is used), else 4. Infrastructure
    failures that are not a file's fault (a Dask scheduler gone) raise :class:`RunAborted`.
    When a worker dies, the files of every chunk that was in flight become suspects: each
    is then retried alone, with nothing else running, so a file that kills its worker
    again is known for sure and gets a ``crashed`` row.
    """
    if options.adapt == "corpus" and options.shift is None and not options.measure:
        raise ValueError("adapt='corpus' needs the corpus's statistics: measure them first (Job.adapt_to).")
    chunks: deque[list[str]] = deque(_chunks(paths, chunk_size))
    suspects: deque[str] = deque()
    running: dict[Future, tuple[list[str], bool]] = {}  # future -> (paths, ran alone)
    executor = executor_factory()

    def submit(chunk: list[str], alone: bool) -> None:
        nonlocal executor
        try:
            fut = executor.submit(annotate_chunk, chunk, options)
        except Exception as exc:  # the pool broke between two results: start a fresh one
            if not _is_worker_crash(exc):
                raise
            executor = executor_factory()
            fut = executor.submit(annotate_chunk, chunk, options)
        running[fut] = (chunk, alone)

    while chunks or suspects or running:
        if suspects:
            if not running:
                submit([suspects.popleft()], alone=True)
        else:
            limit = in_flight or _capacity(executor_factory)
            while chunks and len(running) < limit:
                submit(chunks.popleft(), alone=False)
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for fut in done:
            chunk, alone = running.pop(fut)
            try:
                result = fut.result()
            except Exception as exc:
                if not _is_worker_crash(exc):
                    raise RunAborted(_abort_reason(exc)) from exc
                if alone:
                    yield ChunkResult(rows=[crash_row(chunk[0], options, _crash_reason(exc))])
                else:
                    suspects.extend(chunk)
                executor = executor_factory()
                continue
            yield result


#: A chunk holds at most this many bytes of files, so long recordings get a worker each.
CHUNK_BYTES = 16 * 2**20


def _chunks(paths: list[str], size: int, max_bytes: int = CHUNK_BYTES) -> Iterator[list[str]]:
    """Consecutive chunks of at most ``size`` paths and (but for single files) ``max_bytes``.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for name, n in [("a", 10), ("b", 10), ("big", 100), ("c", 10)]:
    ...     _ = (d / name).write_bytes(b"x" * n)
    >>> [[pathlib.Path(p).name for p in c] for c in _chunks([str(d / n) for n in "a b big c".split()], 32, 50)]
    [['a', 'b'], ['big'], ['c']]
    """
    chunk: list[str] = []
    total = 0
    for path in paths:
        try:
            n = os.path.getsize(path)
        except OSError:
            n = 0
        if chunk and (len(chunk) >= size or total + n > max_bytes):
            yield chunk
            chunk, total = [], 0
        chunk.append(path)
        total += n
    if chunk:
        yield chunk


class RunAborted(Exception):
    """The run cannot go on for a reason that is not one file's fault; one sentence."""


def _abort_reason(exc: BaseException) -> str:
    if isinstance(exc, ModelMismatch):
        return str(exc)
    text = traceback.format_exception_only(exc)[-1].strip()
    names = {type(exc).__name__, *(type(c).__name__ for c in (exc.__cause__, exc.__context__) if c)}
    if names & {"CommClosedError", "CancelledError", "FutureCancelledError", "TimeoutError", "OSError"}:
        return "The connection to the Dask scheduler was lost."
    return f"A worker failed ({text})."


def _capacity(executor_factory) -> int:
    try:
        return max(1, int(executor_factory.in_flight()))
    except Exception:  # a factory without in_flight(), or a cluster that cannot say: the default
        return 4


def _crash_reason(exc: BaseException) -> str:
    text = str(exc)
    for sig in ("SIGSEGV", "SIGKILL", "SIGABRT", "SIGBUS"):
        if sig in text:
            return f"killed by {sig}"
    return "the worker died"
