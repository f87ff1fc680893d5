"""annotate on a Dask cluster gives the same rows as a local run, even when a worker dies."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import SEGFAULT_HOOK, python_hook, run_cli, speech, write
from sercli.tables import PROB_COLUMNS

distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dask")
    for i in range(12):
        write(root / f"clip{i:02d}.wav", speech(index=i), 16000)
    write(root / "long.wav", speech(40.0, index=3), 16000)
    return root


@pytest.fixture(scope="module")
def local(data, model, tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("local") / "local.parquet"
    assert run_cli("annotate", str(data), "-m", model, "-o", str(out), "-q").returncode == 0
    return pd.read_parquet(out).sort_values("path").reset_index(drop=True)


def _assert_same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    a, b = a.sort_values("path").reset_index(drop=True), b.sort_values("path").reset_index(drop=True)
    assert a["path"].tolist() == b["path"].tolist()
    assert a["emotion"].tolist() == b["emotion"].tolist()
    np.testing.assert_allclose(a[PROB_COLUMNS].to_numpy(), b[PROB_COLUMNS].to_numpy(), atol=1e-5)


def test_existing_cluster_gives_the_same_rows_as_local(data, model, local, tmp_path):
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        out = tmp_path / "dask.parquet"
        res = run_cli("annotate", str(data), "-m", model, "-o", str(out), "--backend", "dask",
                      "--scheduler", cluster.scheduler_address, "-q")
        assert res.returncode == 0, res.stderr
    _assert_same(pd.read_parquet(out), local)


def test_local_cluster_survives_a_worker_killed_mid_run(data, model, local, tmp_path):
    """A file whose decoding kills the worker (SIGSEGV): Dask retries, then it becomes an error row."""
    crash = write(tmp_path / "segfault.wav", speech(index=0), 16000)
    out = tmp_path / "dask.csv"
    env = {**python_hook(tmp_path / "hook", SEGFAULT_HOOK), "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
    res = run_cli("annotate", str(data), str(crash), "-m", model, "-o", str(out), "--backend", "dask", "-j", "2",
                  "-q", env=env)
    assert res.returncode == 1, res.stderr
    df = pd.read_csv(out)
    crashed = df[df["path"] == str(crash)]
    assert crashed["status"].tolist() == ["crashed"]
    _assert_same(df[df["path"] != str(crash)], local)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stock_cluster(tmp_path_factory):
    """A real `dask scheduler` and `dask worker --nworkers 2 --nthreads 4` (the stock threaded
    worker) on loopback. Chunks of paths under a folder named ``slow`` take 2 s longer and
    leave their start and end times in ``SERCLI_TEST_CHUNK_LOG``."""
    import subprocess
    import sys
    import time

    log = tmp_path_factory.mktemp("chunk-log")
    hook = python_hook(tmp_path_factory.mktemp("hook"),
        "import os, time, uuid\n"
        "import sercli.stream as p\n"
        "_orig = p.annotate_chunk\n"
        "def annotate_chunk(paths, options):\n"
        "    if not any('/slow/' in x for x in paths):\n"
        "        return _orig(paths, options)\n"
        "    t0 = time.time(); time.sleep(2.0); res = _orig(paths, options)\n"
        "    open(os.path.join(os.environ['SERCLI_TEST_CHUNK_LOG'], uuid.uuid4().hex), 'w').write(f'{t0} {time.time()}')\n"
        "    return res\n"
        "p.annotate_chunk = annotate_chunk\n")
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    env = {**os.environ, **hook, "SERCLI_TEST_CHUNK_LOG": str(log)}
    bin_dir = Path(sys.executable).parent
    procs = [subprocess.Popen([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    time.sleep(2)
    procs.append(subprocess.Popen([str(bin_dir / "dask"), "worker", address, "--nworkers", "2", "--nthreads", "4",
                                   "--no-dashboard"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    with distributed.Client(address, timeout="30s") as client:
        client.wait_for_workers(2, timeout=120)
    yield address, log
    for p in reversed(procs):
        p.terminate()
        p.wait(timeout=30)


def test_stock_threaded_dask_workers_give_the_same_rows_as_local(data, model, local, stock_cluster, tmp_path):
    """Four threads per worker process: each thread has its own LiteRT interpreter."""
    address, _ = stock_cluster
    out = tmp_path / "dask.parquet"
    res = run_cli("annotate", str(data), "-m", model, "-o", str(out), "--backend", "dask", "--scheduler", address, "-q")
    assert res.returncode == 0, res.stderr
    _assert_same(pd.read_parquet(out), local)


def test_chunks_in_flight_scale_with_the_cluster_threads(model, stock_cluster, tmp_path):
    """8 threads in the cluster: at least 8 chunks run at the same moment."""
    from conftest import example_files

    address, log = stock_cluster
    slow = tmp_path / "slow"
    slow.mkdir()
    for i in range(16 * 32):  # 16 chunks of 32 paths
        (slow / f"f{i:04d}.wav").symlink_to(example_files()[i % 12])
    res = run_cli("annotate", str(slow), "-m", model, "-o", str(tmp_path / "e.parquet"), "--backend", "dask",
                  "--scheduler", address, "-q")
    assert res.returncode == 0, res.stderr
    spans = [tuple(map(float, f.read_text().split())) for f in log.iterdir()]
    assert len(spans) == 16
    most = max(sum(a <= t < b for a, b in spans) for t, _ in spans)
    assert most >= 8, f"only {most} chunks ran at once on 8 threads"


def test_unreachable_scheduler_is_one_sentence(data, model, tmp_path):
    out = tmp_path / "e.parquet"
    res = run_cli("annotate", str(data), "-m", model, "-o", str(out), "--backend", "dask",
                  "--scheduler", f"tcp://127.0.0.1:{_free_port()}", "-q", timeout=120)
    assert res.returncode == 2 and "cannot reach the Dask scheduler" in res.stderr
    assert res.stderr.count("\n") == 1 and not out.exists() and not list(tmp_path.iterdir())


def test_scheduler_dying_mid_run_keeps_a_resumable_journal(model, tmp_path):
    import signal
    import subprocess
    import sys
    import time

    from conftest import example_files

    slow = tmp_path / "slow"  # not slowed here: this cluster has no hook
    slow.mkdir()
    for i in range(3000):
        (slow / f"f{i:04d}.wav").symlink_to(example_files()[i % 12])
    port = _free_port()
    bin_dir = Path(sys.executable).parent
    sched = subprocess.Popen([str(bin_dir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                              "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2)
    worker = subprocess.Popen([str(bin_dir / "dask"), "worker", f"tcp://127.0.0.1:{port}", "--nworkers", "1",
                               "--nthreads", "2", "--no-dashboard"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = tmp_path / "e.parquet"
    journal = tmp_path / "e.parquet.journal"
    try:
        run = subprocess.Popen([sys.executable, "-m", "sercli", "annotate", str(slow), "-m", model, "-o", str(out),
                                "--backend", "dask", "--scheduler", f"tcp://127.0.0.1:{port}", "-q"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.time() + 120
        while not (journal.exists() and journal.read_text().count("\n") > 40) and time.time() < deadline:
            time.sleep(0.1)
        sched.send_signal(signal.SIGKILL)
        _, stderr = run.communicate(timeout=120)
    finally:
        worker.terminate()
        worker.wait(timeout=30)
        sched.kill()
    assert run.returncode == 3, stderr
    assert stderr.count("\n") == 1 and "connection to the Dask scheduler was lost" in stderr and "--resume" in stderr
    kept = journal.read_text().count("\n") - 1
    assert 0 < kept < 3000 and not out.exists()
    res = run_cli("annotate", str(slow), "-m", model, "-o", str(out), "--resume", "-q")  # finish locally
    assert res.returncode == 0, res.stderr
    df = pd.read_parquet(out)
    assert len(df) == 3000 and df["path"].is_unique
