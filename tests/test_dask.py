"""annotate on a Dask cluster gives the same rows as a local run, even when a worker dies."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import run_cli, speech, write
from sercli.pipeline import PROB_COLUMNS

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
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os, signal, soundfile\n"
        "_orig = soundfile.SoundFile.__init__\n"
        "def _init(self, file, *a, **k):\n"
        "    if b'segfault' in (file if isinstance(file, bytes) else str(file).encode()):\n"
        "        os.kill(os.getpid(), signal.SIGSEGV)\n"
        "    _orig(self, file, *a, **k)\n"
        "soundfile.SoundFile.__init__ = _init\n")
    crash = write(tmp_path / "segfault.wav", speech(index=0), 16000)
    out = tmp_path / "dask.csv"
    env = {"PYTHONPATH": f"{hook}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}
    res = run_cli("annotate", str(data), str(crash), "-m", model, "-o", str(out), "--backend", "dask", "-j", "2",
                  "-q", env=env)
    assert res.returncode == 1, res.stderr
    df = pd.read_csv(out)
    crashed = df[df["path"] == str(crash)]
    assert crashed["status"].tolist() == ["crashed"]
    _assert_same(df[df["path"] != str(crash)], local)
