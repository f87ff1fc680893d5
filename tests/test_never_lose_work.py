"""Regression tests for the ways a user could lose work (issue 16), each through the real CLI."""

from __future__ import annotations

import signal
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import N_MANY, python_hook, run_cli, speech, start_cli, wait_for_rows, write


def _digest(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` with its content: to prove a command changed nothing."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _interrupted(many: Path, out: Path, model: str, *extra: str) -> Path:
    """Start a run into ``out``, Ctrl-C it after 40 rows; returns its journal."""
    journal = out.with_name(out.name + ".journal")
    proc = start_cli(["annotate", str(many), "-m", model, "-o", str(out), "-q", "-j", "2", *extra])
    wait_for_rows(journal, 40, proc)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert proc.returncode == 130 and journal.exists()
    return journal


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("clips")
    for i in range(6):
        write(folder / f"c{i}.wav", speech(index=i), 16000)
    return folder


@pytest.fixture
def finished(clips, model, tmp_path) -> Path:
    out = tmp_path / "out" / "a.parquet"
    out.parent.mkdir()
    res = run_cli("annotate", str(clips), "-m", model, "-o", str(out), "-q")
    assert res.returncode == 0, res.stderr
    return out


def test_refused_resume_with_another_model_writes_no_journal_and_keeps_the_table(clips, model, finished):
    other = "mel-cnn" if model != "mel-cnn" else "mfcc-cnn"
    before = _digest(finished.parent)
    res = run_cli("annotate", str(clips), "-m", other, "-o", str(finished), "--resume", "-q")
    assert res.returncode == 2 and "Cannot resume a.parquet" in res.stderr and f"--model: '{model}' then" in res.stderr
    assert _digest(finished.parent) == before  # no journal, the table untouched
    # the correct resume is still accepted and changes no row
    res = run_cli("annotate", str(clips), "-m", model, "-o", str(finished), "--resume", "-q")
    assert res.returncode == 0, res.stderr
    pd.testing.assert_frame_equal(pd.read_parquet(finished), pd.read_parquet(_table(before, "a.parquet")))


def _table(digest: dict[str, bytes], name: str):
    import io

    return io.BytesIO(digest[name])


def test_rerun_without_resume_after_an_interrupt_is_refused_and_keeps_the_journal(many, model, tmp_path):
    out = tmp_path / "e.parquet"
    journal = _interrupted(many, out, model)
    before = _digest(tmp_path)
    res = run_cli("annotate", str(many), "-m", model, "-o", str(out), "-q")
    assert res.returncode == 2 and "interrupted run left" in res.stderr and "--resume" in res.stderr
    assert _digest(tmp_path) == before
    res = run_cli("annotate", str(many), "-m", model, "-o", str(out), "-q", "--overwrite")
    assert res.returncode == 0 and not journal.exists() and len(pd.read_parquet(out)) == N_MANY


@pytest.mark.parametrize("changed, message", [
    (["--hop", "1.0"], "--hop: not given then, 1.0 now"),
    (["--include", "f00*"], "--include: not given then, f00* now"),
    (["--segments", "SEG"], "--segments: not given then"),
    (["--calibration", "in-domain"], "--calibration: 'off-domain' then, 'in-domain' now"),
], ids=["hop", "include", "segments", "calibration"])
def test_resume_with_changed_options_is_refused_in_one_sentence(many, model, tmp_path, changed, message):
    out = tmp_path / "e.parquet"
    _interrupted(many, out, model)
    before = _digest(tmp_path)
    args = [str(tmp_path / "w.parquet") if a == "SEG" else a for a in changed]
    res = run_cli("annotate", str(many), "-m", model, "-o", str(out), "--resume", "-q", *args)
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    assert _digest(tmp_path) == before


def test_resume_of_a_finished_csv_is_refused_because_csv_records_no_options(clips, model, tmp_path):
    out = tmp_path / "a.csv"
    assert run_cli("annotate", str(clips), "-m", model, "-o", str(out), "-q").returncode == 0
    before = _digest(tmp_path)
    res = run_cli("annotate", str(clips), "-m", model, "-o", str(out), "-q", "--resume")
    assert res.returncode == 2 and "does not record the options" in res.stderr
    assert _digest(tmp_path) == before


def test_an_error_after_decoding_gives_that_file_an_error_row_and_the_run_goes_on(clips, model, tmp_path):
    """Feature extraction raising on one file (a bug, a MemoryError) must not end the run."""
    poison_len = 16000 + 1234  # the poisoned file is recognised by its length
    env = python_hook(tmp_path / "hook",
        "import sercli.windowing as f\n"
        "_orig = f.WindowStream.finish\n"
        "def finish(self):\n"
        f"    if self.n_samples == {poison_len}:\n"
        "        raise MemoryError('simulated')\n"
        "    return _orig(self)\n"
        "f.WindowStream.finish = finish\n")
    data = tmp_path / "data"
    for i in range(3):
        write(data / f"ok{i}.wav", speech(index=i), 16000)
    write(data / "poison.wav", speech(index=5)[:poison_len], 16000)
    out = tmp_path / "e.csv"
    res = run_cli("annotate", str(data), "-m", model, "-o", str(out), "-j", "1", "-q", env=env)
    assert res.returncode == 1, res.stderr
    df = pd.read_csv(out).set_index("path")
    bad = df.loc[str(data / "poison.wav")]
    assert bad["status"] == "error" and bad["error"] == "Reading or classifying the file failed unexpectedly (MemoryError: simulated)."
    assert (df.drop(index=str(data / "poison.wav"))["status"] == "ok").all()


def test_workers_exit_within_seconds_of_the_main_process_being_killed(many, model, tmp_path):
    import psutil

    out = tmp_path / "e.parquet"
    proc = start_cli(["annotate", str(many), "-m", model, "-o", str(out), "-q", "-j", "2"])
    wait_for_rows(out.with_name(out.name + ".journal"), 40, proc)
    children = psutil.Process(proc.pid).children(recursive=True)
    assert children, "the run has worker processes"
    proc.send_signal(signal.SIGKILL)  # the main process only, as a crash or the OOM killer would
    proc.communicate(timeout=30)
    gone, alive = psutil.wait_procs(children, timeout=5)
    assert not alive, f"still running 5 s after their parent died: {[p.cmdline()[:3] for p in alive]}"


def test_boolean_flags_show_no_value_in_help():
    res = run_cli("annotate", "--help")
    assert res.returncode == 0 and "<bool>" not in res.stdout and "--quiet" in res.stdout


def test_quiet_run_prints_nothing_even_for_an_mp3_with_a_bad_xing_header(clips, model, tmp_path):
    import soundfile as sf

    full = tmp_path / "full.mp3"
    sf.write(full, np.tile(speech(index=0), 3), 16000, format="MP3")
    data = full.read_bytes()
    (tmp_path / "cut.mp3").write_bytes(data[: len(data) // 2])  # the Xing header now overstates the size
    full.unlink()
    res = run_cli("annotate", str(tmp_path / "cut.mp3"), "-m", model, "-o", str(tmp_path / "e.csv"), "-q")
    assert res.returncode == 0 and res.stderr == ""


def test_manifest_follows_folder_links_and_refuses_zero_rows(tmp_path):
    real = tmp_path / "real" / "1001"
    for emo in ("ANG", "SAD", "NEU"):
        write(real / f"1001_DFA_{emo}_XX.wav", speech(index=0)[:16000], 16000)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "1001").symlink_to(real, target_is_directory=True)
    res = run_cli("manifest", str(corpus), "--format", "crema-d", "-o", str(tmp_path / "m.csv"))
    assert res.returncode == 0, res.stderr
    assert len(pd.read_csv(tmp_path / "m.csv")) == 3
    res = run_cli("manifest", str(corpus), "--format", "ravdess", "-o", str(tmp_path / "r.csv"))
    assert res.returncode == 2 and "no ravdess files" in res.stderr and not (tmp_path / "r.csv").exists()


def test_manifest_writes_a_speaker_independent_split(tmp_path):
    corpus = tmp_path / "corpus"
    for spk in range(1001, 1011):
        for emo in ("ANG", "SAD", "NEU", "HAP"):
            write(corpus / str(spk) / f"{spk}_DFA_{emo}_XX.wav", speech(index=1)[:8000], 16000)
    res = run_cli("manifest", str(corpus), "--format", "crema-d", "-o", str(tmp_path / "m.csv"),
                  "--val", "0.2", "--test", "0.2")
    assert res.returncode == 0, res.stderr
    m = pd.read_csv(tmp_path / "m.csv", dtype={"speaker": str})
    assert set(m["split"]) == {"train", "val", "test"}
    assert m.groupby("speaker")["split"].nunique().max() == 1  # whole speakers


def test_validation_slice_without_a_val_split_holds_whole_speakers():
    from sercli.training.options import TrainOptions, validation_slice

    df = pd.DataFrame({"path": [f"{s}_{i}.wav" for s in range(20) for i in range(7)],
                       "speaker": [str(s) for s in range(20) for _ in range(7)],
                       "emotion": ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"] * 20})
    train, val = validation_slice(df, TrainOptions(val_fraction=0.1))
    assert 0 < len(val) < len(df) / 4
    assert not set(train["speaker"]) & set(val["speaker"])


def test_resumed_training_with_changed_options_is_refused(tmp_path):
    from dataclasses import asdict

    from sercli.training.loop import TrainOptions, _check_resume

    state = {"options": asdict(TrainOptions(epochs=30, mixup_alpha=0.2))}
    _check_resume(state, TrainOptions(epochs=30, mixup_alpha=0.2), tmp_path)  # the same options: fine
    _check_resume(state, TrainOptions(epochs=40, mixup_alpha=0.2), tmp_path)  # more epochs: extends the run
    with pytest.raises(ValueError, match="started with mixup_alpha = 0.2, not 0.0"):
        _check_resume(state, TrainOptions(epochs=30, mixup_alpha=0.0), tmp_path)
