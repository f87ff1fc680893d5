"""Shared fixtures: real speech from ``examples/`` (CREMA-D, always present) and from
``../shared/corpora`` (skipped when absent), turned into test files of many kinds."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SHARED = ROOT.parent / "shared" / "corpora"
#: Scripts that made fixtures (with libraries sercli does not install) are not tests.
collect_ignore_glob = ["fixtures/*.py"]

#: The model the tests run; SERCLI_TEST_MODEL points at another model directory.
MODEL = os.environ.get("SERCLI_TEST_MODEL", "mfcc-cnn")


@pytest.fixture(scope="session")
def model() -> str:
    return MODEL


@pytest.fixture(scope="session")
def shared() -> Path:
    if not (SHARED / "manifest.csv").is_file():
        pytest.skip("../shared/corpora is not present")
    return SHARED


def example_files() -> list[Path]:
    return sorted(EXAMPLES.glob("*.wav"))


def speech(seconds: float | None = None, *, index: int = 0, sr: int = 16000) -> np.ndarray:
    """Real speech (an example clip, repeated to ``seconds``) at ``sr``, float32 mono."""
    y, rate = sf.read(example_files()[index], dtype="float32")
    if rate != sr:
        y = soxr.resample(y, rate, sr)
    if seconds is not None:
        n = int(seconds * sr)
        y = np.tile(y, n // len(y) + 1)[:n]
    return y.astype(np.float32)


def write(path: Path, y: np.ndarray, sr: int, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), y, sr, **kwargs)
    return path


#: A sitecustomize that kills the process (SIGSEGV) opening any file whose name holds "segfault":
#: a decoder crash, as a worker meets it.
SEGFAULT_HOOK = (
    "import os, signal, soundfile\n"
    "_orig = soundfile.SoundFile.__init__\n"
    "def _init(self, file, *a, **k):\n"
    "    if b'segfault' in (file if isinstance(file, bytes) else str(file).encode()):\n"
    "        os.kill(os.getpid(), signal.SIGSEGV)\n"
    "    _orig(self, file, *a, **k)\n"
    "soundfile.SoundFile.__init__ = _init\n")


def python_hook(folder: Path, code: str) -> dict[str, str]:
    """Environment in which every Python process (the CLI and its workers) runs ``code`` at
    start-up, as a ``sitecustomize`` module in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "sitecustomize.py").write_text(code)
    return {"PYTHONPATH": f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}


def run_cli(*args: str, cwd: Path | None = None, input: str | None = None, timeout: float = 300,
            env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the real ``sercli`` command (as a user would) and capture its output."""
    cmd = [sys.executable, "-m", "sercli", *args]
    return subprocess.run(cmd, cwd=cwd, input=input, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


#: Files in the ``many`` fixture: a run over them takes a few seconds, so interrupts land mid-run.
N_MANY = 1500


@pytest.fixture(scope="session")
def many(tmp_path_factory) -> Path:
    """N_MANY files (links to 12 real clips): enough for a run to be interrupted part-way."""
    root = tmp_path_factory.mktemp("many")
    clips = [write(root / "src" / f"clip{i}.wav", speech(index=i), 16000) for i in range(12)]
    for i in range(N_MANY):
        (root / "links").mkdir(exist_ok=True)
        (root / "links" / f"f{i:04d}.wav").symlink_to(clips[i % 12])
    return root / "links"


def default_sigint() -> None:
    """In the child: Ctrl-C as in a terminal. A shell that runs the tests in the background
    starts them with SIGINT ignored, and Python would then never raise KeyboardInterrupt."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_cli(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "sercli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True,
                            preexec_fn=default_sigint, env={**os.environ, **(env or {})})


def wait_for_rows(journal: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if journal.exists() and journal.read_text().count("\n") > n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("the run made no progress")
