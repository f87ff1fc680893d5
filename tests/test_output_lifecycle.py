"""A stateful property-based test of the output's life: random sequences of runs with two
sets of options, interrupted by SIGINT or SIGKILL at random moments, re-run with or without
``--resume`` / ``--overwrite``. After every step the guarantees of the README's Reliability
section must hold:

- a finished table is only ever replaced by ``--overwrite`` (``--resume`` may only add rows);
- a refused command (exit 2) changes no file;
- a completed run's rows equal an uninterrupted run's: none lost, none doubled, none changed;
- no process of a run outlives it by more than a few seconds;
- while a run writes the output, a second run on it is refused, and the first finishes intact.

CI runs a few sequences; ``SERCLI_STATEFUL_EXAMPLES=50`` runs more.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from conftest import ROOT, default_sigint, example_files, run_cli
from sercli.tables import PROB_COLUMNS

#: Two ways of making rows: the model differs, so their rows differ.
OPTIONS = {"A": ["-m", "mfcc-cnn"], "B": ["-m", "mel-cnn"]}
N_FILES = 480


def _corpus() -> Path:
    root = Path(tempfile.mkdtemp(prefix="sercli-lifecycle-"))
    clips = example_files()
    for i in range(N_FILES):
        (root / f"f{i:03d}.wav").symlink_to(clips[i % len(clips)])
    return root


def _rows(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path).sort_values("path").reset_index(drop=True)


def _same_rows(got: pd.DataFrame, want: pd.DataFrame) -> None:
    assert got["path"].is_unique, "a row is doubled"
    assert len(got) == len(want), f"{len(got)} rows, not {len(want)}"
    pd.testing.assert_frame_equal(got.drop(columns=PROB_COLUMNS + ["confidence"]),
                                  want.drop(columns=PROB_COLUMNS + ["confidence"]))
    np.testing.assert_allclose(got[PROB_COLUMNS].to_numpy(), want[PROB_COLUMNS].to_numpy(), atol=1e-6)


class OutputLifecycle(RuleBasedStateMachine):
    corpus: Path
    reference: dict[str, pd.DataFrame] = {}

    @initialize()
    def fresh_folder(self) -> None:
        self.work = Path(tempfile.mkdtemp(prefix="sercli-out-"))
        self.out = self.work / "e.parquet"
        self.journal = self.work / "e.parquet.journal"
        self.overwrite_pending = False  # an interrupted --overwrite run may replace the table on --resume

    def teardown(self) -> None:
        shutil.rmtree(self.work, ignore_errors=True)

    def _files(self) -> dict[str, bytes]:
        return {p.name: p.read_bytes() for p in sorted(self.work.iterdir())}

    @rule(opts=st.sampled_from(sorted(OPTIONS)), resume=st.booleans(), overwrite=st.booleans(),
          stop=st.sampled_from([None, signal.SIGINT, signal.SIGKILL]), after_s=st.floats(0.5, 4.0))
    def run(self, opts: str, resume: bool, overwrite: bool, stop, after_s: float) -> None:
        before = self._files()
        table_before = _rows(self.out) if self.out.exists() else None
        args = [sys.executable, "-m", "sercli", "annotate", str(self.corpus), *OPTIONS[opts], "-o", str(self.out),
                "-q", "-j", "2", *(["--resume"] if resume else []), *(["--overwrite"] if overwrite else [])]
        proc = psutil.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            preexec_fn=default_sigint)
        family: set[psutil.Process] = set()
        deadline = time.time() + after_s
        while proc.poll() is None:
            try:
                family.update(proc.children(recursive=True))
            except psutil.Error:
                pass
            if stop is not None and time.time() >= deadline:
                # the main process only: workers must notice by themselves. (Not before 0.5 s: a
                # Ctrl-C while the interpreter itself starts is Python's to report, not sercli's.)
                proc.send_signal(stop)
                stop = None
            time.sleep(0.02)
        stderr = proc.stderr.read()
        code = proc.returncode
        _, alive = psutil.wait_procs(list(family), timeout=5)
        assert not alive, f"processes outlived the run: {[p.pid for p in alive]}"
        assert "Traceback" not in stderr, stderr

        if code == 2:  # refused: nothing changed
            assert self._files() == before, f"a refused command changed files: {stderr}"
            return
        if table_before is not None and self.out.exists():
            table_after = _rows(self.out)
            replaced = not (len(table_after) == len(table_before) and table_after.equals(table_before))
            if replaced:
                assert overwrite or (resume and self.overwrite_pending), "a finished table was replaced"
        if code == 0:
            assert not self.journal.exists()
            _same_rows(_rows(self.out), self.reference[opts])
            self.overwrite_pending = False
        else:  # interrupted (130 after Ctrl-C, -9 after a kill)
            assert code in (130, -signal.SIGKILL), (code, stderr)
            self.overwrite_pending = self.overwrite_pending or overwrite

    @rule(first=st.sampled_from(sorted(OPTIONS)), second=st.sampled_from(sorted(OPTIONS)),
          flag=st.sampled_from([[], ["--resume"], ["--overwrite"]]))
    def second_writer(self, first: str, second: str, flag: list[str]) -> None:
        """While one run writes the output, another on the same output is refused (issue 23, hole 1)."""
        args = [sys.executable, "-m", "sercli", "annotate", str(self.corpus), "-o", str(self.out), "-q", "-j", "2"]
        proc = subprocess.Popen([*args, *OPTIONS[first], "--overwrite"], cwd=ROOT, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, preexec_fn=default_sigint)
        lock = self.out.with_name(self.out.name + ".lock")
        deadline = time.time() + 60
        while not (lock.exists() and lock.read_text().startswith(f"pid {proc.pid},")) and time.time() < deadline:
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.02)
        other = subprocess.run([*args, *OPTIONS[second], *flag], cwd=ROOT, capture_output=True, text=True)
        assert other.returncode == 2 and f"Another sercli run (pid {proc.pid}," in other.stderr, other.stderr
        assert proc.wait(timeout=300) == 0, proc.communicate()
        _same_rows(_rows(self.out), self.reference[first])
        assert not lock.exists() and not self.journal.exists()
        self.overwrite_pending = False

    @invariant()
    def journal_rows_are_true_rows(self) -> None:
        if not hasattr(self, "journal") or not self.journal.exists():
            return
        from sercli.output import Journal

        journal = Journal(self.journal)
        try:
            opts = {"mfcc-cnn": "A", "mel-cnn": "B"}[journal.meta()["model"]]
        except Exception:
            return  # killed while the journal header was being replaced (it is atomic: an old one stays)
        rows = pd.DataFrame([r for chunk in journal.rows() for r in chunk])
        if rows.empty:
            return
        assert rows["path"].is_unique, "the journal has a doubled row"
        want = self.reference[opts].set_index("path").loc[rows["path"]]
        np.testing.assert_allclose(rows[PROB_COLUMNS].to_numpy(dtype=float), want[PROB_COLUMNS].to_numpy(), atol=1e-6)


@pytest.fixture(scope="module")
def lifecycle_corpus():
    root = _corpus()
    reference = {}
    for name, opts in OPTIONS.items():
        out = root.parent / f"{root.name}-ref-{name}.parquet"
        res = run_cli("annotate", str(root), *opts, "-o", str(out), "-q")
        assert res.returncode == 0, res.stderr
        reference[name] = _rows(out)
        out.unlink()
    yield root, reference
    shutil.rmtree(root, ignore_errors=True)


def test_output_lifecycle_keeps_its_guarantees_under_random_interrupts_and_reruns(lifecycle_corpus):
    corpus, reference = lifecycle_corpus
    OutputLifecycle.corpus = corpus
    OutputLifecycle.reference = reference
    examples = int(os.environ.get("SERCLI_STATEFUL_EXAMPLES", "3"))
    machine = settings(max_examples=examples, stateful_step_count=6, deadline=None, database=None,
                       suppress_health_check=list(HealthCheck))(OutputLifecycle)
    machine.TestCase().runTest()
