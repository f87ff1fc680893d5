"""Running ``annotate`` on a Dask cluster (``pip install sercli[dask]``).

The pipeline only needs a :class:`concurrent.futures.Executor`; Dask's
``Client.get_executor()`` is one, so chunks go to Dask workers with the same code,
the same journal and the same resume guarantees as local runs. Dask retries a chunk
whose worker died; one that keeps killing workers ends as ``KilledWorker``, and the
pipeline then retries its files one by one, as it does locally.
"""

from __future__ import annotations

import logging
from typing import Callable

from .workers import worker_env

__all__ = ["dask_executor_factory"]


class _DaskExecutors:
    """Callable returning the cluster's executor; ``close()`` shuts down what it started."""

    def __init__(self, scheduler: str | None, jobs: int) -> None:
        try:
            from distributed import Client, LocalCluster
        except ImportError:
            raise ValueError("--backend dask needs Dask: pip install 'sercli[dask]'.") from None
        # distributed logs connection trouble with tracebacks; a lost cluster is reported in one sentence
        for name in [n for n in logging.root.manager.loggerDict if n.startswith("distributed")] + ["distributed"]:
            logging.getLogger(name).setLevel(logging.CRITICAL)
        self._cluster = None
        if scheduler:
            try:
                self._client = Client(scheduler, timeout="10s")
            except (OSError, TimeoutError):
                raise ValueError(f"cannot reach the Dask scheduler at {scheduler}.") from None
        else:
            self._cluster = LocalCluster(n_workers=jobs, threads_per_worker=1, processes=True,
                                         dashboard_address=None, env=worker_env())
            self._client = Client(self._cluster)

    def __call__(self):
        return self._client.get_executor()

    def in_flight(self) -> int:
        """Chunks to keep queued: twice the cluster's threads, read now (clusters grow and shrink)."""
        return 2 * max(1, sum(self._client.nthreads().values()))

    def close(self) -> None:
        self._client.close()
        if self._cluster is not None:
            self._cluster.close()


def dask_executor_factory(scheduler: str | None, jobs: int) -> Callable:
    """Executor factory for ``iter_chunks`` on a Dask cluster (a new ``LocalCluster`` when
    ``scheduler`` is None)."""
    return _DaskExecutors(scheduler, jobs)
