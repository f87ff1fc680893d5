"""Local worker processes: joblib's loky pool, one BLAS thread per worker, workers that
leave Ctrl-C to the main process and die with it."""

from __future__ import annotations

import os
import time
from concurrent.futures import Executor

__all__ = ["LocalExecutors", "local_executor", "resolve_jobs", "worker_env"]


def worker_env() -> dict[str, str]:
    """One BLAS/OpenMP thread per worker: the processes share the cores instead."""
    return {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}


def _init_worker() -> None:
    """Set up a local worker process.

    - Ctrl-C is left to the main process, which stops the run and keeps its rows.
    - The worker exits within a second of its parent's death (``kill -9`` of the main
      process), instead of idling on with the model in memory.
    - Decoder libraries' chatter on the C-level stderr (e.g. mpg123's "Xing stream size"
      notes) is dropped: every problem with a file is reported in its row.
    """
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def exit_with_parent() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=exit_with_parent, name="sercli-parent-watch", daemon=True).start()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


class LocalExecutors:
    """Executor factory for ``iter_chunks``: joblib's loky pool of ``jobs`` processes."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs

    def __call__(self) -> Executor:
        return local_executor(self.jobs)

    def in_flight(self) -> int:
        """Chunks to keep queued: two per worker process, so none waits for work."""
        return 2 * self.jobs


def local_executor(jobs: int) -> Executor:
    """joblib's process pool (loky: spawned workers, reused across runs, shared with
    ``joblib.Parallel``)."""
    from joblib.executor import get_memmapping_executor

    return get_memmapping_executor(jobs, timeout=60, env=worker_env(), initializer=_init_worker)


def resolve_jobs(jobs: int) -> int:
    """``-1`` (or 0) means every CPU this process may use: its CPU affinity and a container's CPU
    quota count (loky's ``cpu_count``), not only the machine's cores."""
    from joblib import cpu_count

    return max(1, cpu_count()) if jobs <= 0 else jobs
