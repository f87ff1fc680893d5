"""Hostile inputs, crashes, interruption and resume: nothing lost, nothing doubled."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import (N_MANY, ROOT, SEGFAULT_HOOK, default_sigint, example_files, python_hook, run_cli, speech,
                      start_cli, wait_for_rows, write)
from sercli.tables import PROB_COLUMNS


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    """One file per kind of trouble, next to good files."""
    root = tmp_path_factory.mktemp("hostile")
    good = write(root / "good.wav", speech(index=0), 16000)
    (root / "empty.wav").write_bytes(b"")
    (root / "truncated_header.wav").write_bytes(good.read_bytes()[:30])
    (root / "random_bytes.flac").write_bytes(np.random.default_rng(0).bytes(20000))
    (root / "text.mp3").write_text("this is not an mp3 file\n" * 100)
    (root / "no_ffmpeg.m4a").write_bytes(np.random.default_rng(1).bytes(5000))
    (root / "dangling.wav").symlink_to(root / "does-not-exist.wav")
    nan = speech(index=1)
    nan[1000:1100] = np.nan
    write(root / "nan.wav", nan, 16000, subtype="FLOAT")
    write(root / "silence.wav", np.zeros(16000 * 3, np.float32), 16000)
    write(root / "tiny.wav", speech(index=2)[:1600], 16000)
    write(root / "clipped_dc.wav", np.clip(speech(index=3) * 20 + 0.2, -1, 1), 16000)
    write(root / "odd_rate_11025.wav", speech(index=4, sr=11025), 11025)
    write(root / "eight_channels.wav", np.stack([speech(index=5)] * 8, axis=1) * 0.3, 16000, subtype="PCM_24")
    write(root / "name with spaces – ünïcode.wav", speech(index=6), 16000)
    os.rename(write(root / "latin1.wav", speech(index=7), 16000), bytes(root) + b"/latin1_caf\xe9.wav")
    (root / "loop").mkdir()
    (root / "loop" / "back").symlink_to(root, target_is_directory=True)
    return root


EXPECTED = {
    "good.wav": "ok",
    "empty.wav": "empty",
    "truncated_header.wav": "corrupt",
    "random_bytes.flac": "corrupt",
    "text.mp3": "corrupt",
    "dangling.wav": "missing",
    "nan.wav": "invalid_samples",
    "silence.wav": "silent",
    "tiny.wav": "too_short",
    "clipped_dc.wav": "ok",
    "odd_rate_11025.wav": "ok",
    "eight_channels.wav": "ok",
    "name with spaces – ünïcode.wav": "ok",
    "latin1_caf\\xe9.wav": "ok",
}


def test_every_hostile_file_gets_one_row_with_a_clear_status(hostile, model, tmp_path):
    out = tmp_path / "e.parquet"
    res = run_cli("annotate", str(hostile), "-m", model, "-o", str(out))
    assert res.returncode == 1, res.stderr  # completed, some files not ok
    assert "Traceback" not in res.stderr
    df = pd.read_parquet(out)
    assert df["path"].is_unique  # the directory loop was walked once
    names = df["path"].map(lambda p: p.rsplit("/", 1)[-1])
    status = dict(zip(names, df["status"]))
    for name, expected in EXPECTED.items():
        assert status.pop(name) == expected, name
    assert status.pop("no_ffmpeg.m4a") in ("unsupported", "corrupt")
    assert not status, f"unexpected rows: {status}"
    bad = df[df["status"] != "ok"]
    assert bad["error"].notna().all()
    assert all(e.endswith(".") and "\n" not in e for e in bad["error"])
    assert bad[PROB_COLUMNS].isna().all().all()
    tiny = df[names == "tiny.wav"].iloc[0]
    assert "0.25 s" in tiny["error"]  # says where the limit is
    flags = dict(zip(names, df["flags"]))
    assert "clipped" in flags["clipped_dc.wav"] and "dc_offset" in flags["clipped_dc.wav"]


def test_mistyped_path_next_to_a_real_one_gets_a_row_saying_it_does_not_exist(model, tmp_path):
    good = write(tmp_path / "good.wav", speech(index=0), 16000)
    out = tmp_path / "e.csv"
    res = run_cli("annotate", str(good), str(tmp_path / "gone.wav"), "-m", model, "-o", str(out))
    assert res.returncode == 1
    row = pd.read_csv(out).set_index("path").loc[str(tmp_path / "gone.wav")]
    assert row["status"] == "missing" and row["error"] == "The path does not exist."


def test_when_every_named_input_is_missing_the_run_stops_before_any_work(model, tmp_path):
    out = tmp_path / "e.csv"
    res = run_cli("annotate", str(tmp_path / "gone.wav"), "true", "-m", model, "-o", str(out))
    assert res.returncode == 2 and "no input exists" in res.stderr and "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []


def _decode_status_as_nobody(path: str, queue) -> None:
    from sercli.audio import DecodeError, decode

    os.setuid(65534)  # root reads every file: become user nobody first
    try:
        decode(path, sample_rate=16000)
        queue.put(("ok", ""))
    except DecodeError as exc:
        queue.put((exc.status, exc.message))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to user nobody")
def test_unreadable_file_is_reported_as_permission_denied():
    import multiprocessing
    import shutil
    import tempfile

    folder = tempfile.mkdtemp(prefix="sercli-perm-")
    try:
        os.chmod(folder, 0o755)
        secret = write(Path(folder) / "secret.wav", speech(index=0), 16000)
        secret.chmod(0o600)
        ctx = multiprocessing.get_context("fork")
        queue = ctx.Queue()
        child = ctx.Process(target=_decode_status_as_nobody, args=(str(secret), queue))
        child.start()
        status, message = queue.get(timeout=60)
        child.join()
    finally:
        shutil.rmtree(folder)
    assert status == "unreadable" and "permission denied" in message


def test_file_that_kills_its_worker_becomes_an_error_row(model, tmp_path):
    """A decoder crash (SIGSEGV) in a worker: that file gets a row, the run goes on."""
    data = tmp_path / "data"
    for i in range(6):
        write(data / f"ok_{i}.wav", speech(index=i), 16000)
    write(data / "segfault.wav", speech(index=7), 16000)
    out = tmp_path / "e.csv"
    env = python_hook(tmp_path / "hook", SEGFAULT_HOOK)
    res = run_cli("annotate", str(data), "-m", model, "-o", str(out), "-j", "2", env=env)
    assert res.returncode == 1, res.stderr
    df = pd.read_csv(out)
    assert len(df) == 7 and df["path"].is_unique
    crashed = df[df["path"].str.endswith("segfault.wav")].iloc[0]
    assert crashed["status"] == "crashed" and "crashed the worker" in crashed["error"]
    assert (df[~df["path"].str.endswith("segfault.wav")]["status"] == "ok").all()


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values("path").reset_index(drop=True)


@pytest.fixture(scope="module")
def reference(many, model, tmp_path_factory) -> pd.DataFrame:
    out = tmp_path_factory.mktemp("ref") / "ref.parquet"
    res = run_cli("annotate", str(many), "-m", model, "-o", str(out), "-q")
    assert res.returncode == 0, res.stderr
    return _sorted(pd.read_parquet(out))


@pytest.mark.parametrize("sig, group", [(signal.SIGKILL, True), (signal.SIGINT, False), (signal.SIGINT, True)],
                         ids=["kill-9", "ctrl-c-main", "ctrl-c-terminal"])
def test_interrupted_run_resumes_to_the_same_rows(many, model, reference, tmp_path, sig, group):
    """kill -9 of every process, or Ctrl-C (to the main process, or to the whole terminal group)."""
    out = tmp_path / "e.parquet"
    journal = tmp_path / "e.parquet.journal"
    proc = start_cli(["annotate", str(many), "-m", model, "-o", str(out), "-q", "-j", "2"])
    wait_for_rows(journal, 40, proc)
    if group:
        os.killpg(proc.pid, sig)  # every process of the run, workers included
    else:
        proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    if sig == signal.SIGINT:
        assert proc.returncode == 130 and "--resume" in stderr and "Traceback" not in stderr
    assert not out.exists()  # never a half-written final file
    assert journal.exists()
    kept = journal.read_text().count("\n") - 1
    assert 0 < kept < N_MANY

    res = run_cli("annotate", str(many), "-m", model, "-o", str(out), "--resume")
    assert res.returncode == 0, res.stderr
    assert "resumed" in res.stderr
    assert not journal.exists()
    resumed = _sorted(pd.read_parquet(out))
    assert len(resumed) == N_MANY and resumed["path"].is_unique
    pd.testing.assert_frame_equal(resumed.drop(columns=PROB_COLUMNS + ["confidence"]),
                                  reference.drop(columns=PROB_COLUMNS + ["confidence"]))
    np.testing.assert_allclose(resumed[PROB_COLUMNS].to_numpy(), reference[PROB_COLUMNS].to_numpy(), atol=1e-6)


def test_resume_of_a_finished_run_adds_only_new_files(many, model, tmp_path):
    out = tmp_path / "e.parquet"
    files = sorted(many.iterdir())
    assert run_cli("annotate", *map(str, files[:5]), "-m", model, "-o", str(out), "-q").returncode == 0
    first = pd.read_parquet(out)
    res = run_cli("annotate", *map(str, files[:8]), "-m", model, "-o", str(out), "--resume", "-q")
    assert res.returncode == 0, res.stderr
    df = pd.read_parquet(out)
    assert len(df) == 8 and df["path"].is_unique
    pd.testing.assert_frame_equal(df.iloc[:5].reset_index(drop=True), first)  # the finished rows, unchanged


def test_resume_with_another_model_is_refused(many, model, tmp_path, monkeypatch):
    out = tmp_path / "e.parquet"
    journal = out.with_name(out.name + ".journal")
    journal.write_text('{"sercli_journal": 1, "meta": {"model": "other-model", "model_sha256": "x"}}\n')
    res = run_cli("annotate", str(many), "-m", model, "-o", str(out), "--resume")
    assert res.returncode == 2
    assert "--model: 'other-model' then" in res.stderr and "Traceback" not in res.stderr


def test_output_under_a_file_is_refused_before_any_work(many, model, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    res = run_cli("annotate", str(many), "-m", model, "-o", str(blocker / "e.parquet"))
    assert res.returncode == 2 and "is a file, not a folder" in res.stderr
    assert list(tmp_path.iterdir()) == [blocker]  # nothing written anywhere


def test_hour_long_file_is_classified_with_bounded_memory(model, tmp_path):
    import psutil

    long = write(tmp_path / "hour.wav", speech(3600.0, index=0, sr=16000), 16000, subtype="PCM_16")
    out = tmp_path / "e.csv"
    proc = psutil.Popen([sys.executable, "-m", "sercli", "annotate", str(long), "-m", model, "-o", str(out),
                         "-q", "-j", "1"], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak = 0
    while proc.poll() is None:
        try:
            tree = [proc, *proc.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.05)
    assert proc.returncode == 0, proc.stderr.read()
    row = pd.read_csv(out).iloc[0]
    assert row["status"] == "ok" and row["duration_s"] == pytest.approx(3600, abs=0.1)
    assert row["segments"] > 500 and row["windows"] >= row["segments"]  # speech regions of the tiled clip
    assert peak < 1.5 * 2**30, f"peak RSS {peak / 2**20:.0f} MiB"


@pytest.mark.parametrize("flag", [[], ["--overwrite"], ["--resume"]])
def test_a_second_run_on_the_same_output_is_refused_while_the_first_runs(many, model, tmp_path, flag):
    """Hole 1 of issue 23: two runs on one output doubled rows. The second is now refused in one
    sentence naming the first, and the first finishes with every file once."""
    out = tmp_path / "e.parquet"
    first = start_cli(["annotate", str(many), "-m", model, "-o", str(out), "-q", "-j", "2"])
    wait_for_rows(out.with_name("e.parquet.journal"), 1, first)
    second = run_cli("annotate", str(many), "-m", model, "-o", str(out), "-q", *flag)
    assert second.returncode == 2, second.stderr
    assert f"Another sercli run (pid {first.pid}, started" in second.stderr
    assert "Traceback" not in second.stderr and second.stderr.count("\n") == 1
    assert first.wait(timeout=300) == 0, first.communicate()
    rows = pd.read_parquet(out)
    assert len(rows) == N_MANY and rows["path"].is_unique
    assert not out.with_name("e.parquet.lock").exists() and not out.with_name("e.parquet.journal").exists()


def test_model_identity_is_its_weights_and_calibration_not_its_card(model, tmp_path):
    """Hole 3 of issue 23: a recorded evaluation (a rewritten card) must not stop a --resume; replaced
    weights must."""
    import json
    import shutil

    from sercli.models import load_model

    mdir = tmp_path / "m"
    shutil.copytree(load_model("mfcc-cnn").path, mdir)
    clips = tmp_path / "clips"
    clips.mkdir()
    for clip in example_files()[:6]:
        (clips / clip.name).symlink_to(clip)
    out = tmp_path / "e.parquet"
    assert run_cli("annotate", str(clips), "-m", str(mdir), "-o", str(out), "-q").returncode == 0
    card = json.loads((mdir / "card.json").read_text())
    card["evaluation"]["extra"] = {"accuracy": 0.5}  # what `sercli evaluate --record` does to a card
    (mdir / "card.json").write_text(json.dumps(card))
    for clip in example_files()[6:]:
        (clips / clip.name).symlink_to(clip)
    resumed = run_cli("annotate", str(clips), "-m", str(mdir), "-o", str(out), "-q", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert len(pd.read_parquet(out)) == 12
    shutil.copyfile(ROOT / "models" / "study-protocol" / "mfcc-cnn" / "model.tflite", mdir / "model.tflite")
    (clips / "new.wav").symlink_to(example_files()[0])
    refused = run_cli("annotate", str(clips), "-m", str(mdir), "-o", str(out), "-q", "--resume")
    assert refused.returncode == 2
    assert "the model (its weights, classes or calibration) changed since" in refused.stderr


def test_a_worker_that_loads_another_model_refuses_to_run():
    from dataclasses import replace

    from sercli.models import ModelMismatch, load_model
    from sercli.results import Options
    from sercli.stream import annotate_chunk

    options = Options.for_model("mfcc-cnn", load_model("mfcc-cnn"))
    assert annotate_chunk([str(example_files()[0])], options).rows[0]["status"] == "ok"
    with pytest.raises(ModelMismatch, match="is not the one this run started with"):
        annotate_chunk([str(example_files()[0])], replace(options, model_sha256="0" * 16))


def test_resume_with_nothing_new_leaves_the_finished_table_untouched(model, tmp_path):
    """Hole 4 of issue 23: it used to rewrite the table (same rows, new ``created`` stamp)."""
    out = tmp_path / "e.parquet"
    assert run_cli("annotate", str(example_files()[0].parent), "-m", model, "-o", str(out), "-q").returncode == 0
    before = (out.read_bytes(), out.stat().st_mtime_ns)
    again = run_cli("annotate", str(example_files()[0].parent), "-m", model, "-o", str(out), "-q", "--resume")
    assert again.returncode == 0, again.stderr
    assert (out.read_bytes(), out.stat().st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e.parquet"]


def test_the_output_folder_is_fsynced_after_the_rename(tmp_path, monkeypatch):
    """Hole 4: the rename of a finished table must be durable before the journal is removed."""
    import stat

    from sercli import output

    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(output.os, "fsync", lambda fd: (events.append(
        "fsync folder" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file"), real_fsync(fd))[1])
    monkeypatch.setattr(output.os, "replace", lambda a, b: (events.append("rename"), real_replace(a, b))[1])
    output.write_text_atomic(tmp_path / "t.csv", "a\n1\n")
    assert events == ["fsync file", "rename", "fsync folder"]


def test_a_ctrl_c_after_the_command_has_finished_changes_neither_its_status_nor_its_output(model, tmp_path):
    """A Ctrl-C while the interpreter stops the worker pools, after the table is written (here
    sent by the process to itself at exit), used to print a traceback or end it as killed by
    SIGINT; the command's own status stands."""
    out = tmp_path / "e.csv"
    at_exit_ctrl_c = ("import atexit, os, signal; atexit.register(os.kill, os.getpid(), signal.SIGINT); "
                      "from sercli.__main__ import main; main()")
    res = subprocess.run([sys.executable, "-c", at_exit_ctrl_c, "annotate", *map(str, example_files()[:4]),
                          "-m", model, "-o", str(out), "-q", "-j", "2"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=default_sigint)
    assert res.returncode == 0 and res.stderr == "", (res.returncode, res.stderr)
    assert len(pd.read_csv(out)) == 4


def test_a_ctrl_c_while_the_command_loads_ends_it_with_one_line_and_status_130(tmp_path):
    """Python takes a noticeable moment to load typer, numpy and the rest; a Ctrl-C then is an
    interrupt of a command that has not started, not a traceback."""
    ctrl_c_at_import = ("import os, signal, sys\n"
                        "class CtrlC:\n"
                        "    def find_spec(self, name, path=None, target=None):\n"
                        "        if name == 'typer':\n"
                        "            os.kill(os.getpid(), signal.SIGINT)\n"
                        "sys.meta_path.insert(0, CtrlC())\n"
                        "from sercli.__main__ import main; main()")
    res = subprocess.run([sys.executable, "-c", ctrl_c_at_import, "annotate", str(example_files()[0]),
                          "-o", str(tmp_path / "e.csv")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300, preexec_fn=default_sigint)
    assert res.returncode == 130, (res.returncode, res.stderr)
    assert res.stderr.count("\n") == 1 and "interrupted" in res.stderr and "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []
