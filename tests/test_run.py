"""One annotate run for every caller (:class:`sercli.Run`): typed results as a stream, nothing
done twice (a measured corpus is not encoded again; a resume appends only its new rows), the
CPUs this process may use, and a weight reader that refuses what it cannot read."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

import sercli
from conftest import EXAMPLES, example_files
from sercli.models import Model, load_model
from sercli.output import Journal

ENCODER = next((n for n in sercli.available_models() if load_model(n).head is not None), None)


def test_the_readmes_streaming_example_runs(capsys, monkeypatch):
    from conftest import ROOT

    readme = (ROOT / "README.md").read_text()
    code = readme.split("This runs as")[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.chdir(ROOT)
    exec(compile(code, "README.md", "exec"), {})
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 13 and lines[-1] == "mfcc-cnn none"
    assert all(line.endswith(" 1") for line in lines[:-1])  # each short file: one segment


def test_the_run_streams_typed_results_that_annotate_collects():
    run = sercli.Run.prepare([EXAMPLES], model="mfcc-cnn", segments=True, jobs=1)
    run.adapt()
    results = list(run.results())
    assert {r.path for r in results} == {str(p) for p in example_files()}
    first = next(r for r in results if r.path.endswith("1006_IEO_ANG_HI.wav"))
    assert first.row["status"] == "ok" and len(first.segments) == 1 and first.windows == ()
    assert run.info.model == "mfcc-cnn" and run.info["classes"] == sercli.EMOTIONS
    table = sercli.annotate(EXAMPLES, model="mfcc-cnn", jobs=1).files.set_index("path")
    for r in results:
        assert table.loc[r.path, "emotion"] == r.row["emotion"]


@pytest.mark.skipif(ENCODER is None, reason="no encoder model is shipped")
def test_files_measured_for_the_corpus_statistics_are_not_encoded_again(tmp_path, monkeypatch):
    for gain in (1.0, 0.7):  # 24 files: enough to stand for a corpus
        for p in example_files():
            shutil.copy(p, tmp_path / f"{gain}_{p.name}")
    encoded = []
    run_window = Model.run

    def counting(self, x):
        if len(x) == 1:  # an encoder runs window by window (a batch calls this once per window)
            encoded.append(1)
        return run_window(self, x)

    monkeypatch.setattr(Model, "run", counting)
    run = sercli.Run.prepare([tmp_path], model=ENCODER, windows=True, executors=lambda: ThreadPoolExecutor(1))
    run.adapt()
    results = list(run.results())
    assert run.info.adapt == "corpus" and len(results) == 24
    assert sum(encoded) == sum(len(r.windows) for r in results)  # every window encoded once


def test_a_resume_with_one_new_file_appends_one_row(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in example_files()[:11]:
        shutil.copy(p, folder / p.name)
    out = tmp_path / "e.parquet"
    run = sercli.Run.prepare([folder], model="mfcc-cnn", output=out, jobs=1)
    run.adapt()
    assert run.write().done == 11
    shutil.copy(example_files()[11], folder / example_files()[11].name)
    journal_rows = []
    run = sercli.Run.prepare([folder], model="mfcc-cnn", output=out, resume=True, jobs=1)
    run.adapt()
    stats = run.write(lambda res, stats: journal_rows.append(Journal.for_output(out).count()))
    assert (stats.resumed, stats.done) == (11, 1) and journal_rows == [1]
    table = sercli.read_results(out)
    assert len(table) == 12 and table["path"].is_unique


def test_job_counts_follow_the_cpus_this_process_may_use():
    if not hasattr(__import__("os"), "sched_setaffinity"):
        pytest.skip("no CPU affinity on this system")
    code = "import os; os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}); " \
           "from sercli.workers import resolve_jobs; print(resolve_jobs(-1))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "1"


def _ct2(dtype_code: int, data: bytes, shape: tuple[int, ...]) -> bytes:
    """A CTranslate2 model.bin (version 6) holding one encoder variable."""
    def string(s: str) -> bytes:
        return struct.pack("<H", len(s) + 1) + s.encode() + b"\0"

    var = string("encoder/conv1/weight") + struct.pack("<B", len(shape)) + struct.pack(f"<{len(shape)}I", *shape)
    var += struct.pack("<BI", dtype_code, len(data)) + data
    return struct.pack("<I", 6) + string("WhisperSpec") + struct.pack("<II", 3, 1) + var


def test_the_weight_reader_refuses_quantised_or_unknown_weights_in_one_sentence():
    encoder = pytest.importorskip("sercli.training.encoder")
    ok = encoder.read_ctranslate2(_ct2(0, np.arange(4, dtype=np.float32).tobytes(), (2, 2)))
    np.testing.assert_array_equal(ok["encoder/conv1/weight"], [[0, 1], [2, 3]])
    with pytest.raises(ValueError, match=r"^The weight encoder/conv1/weight is quantised \(int8\)"):
        encoder.read_ctranslate2(_ct2(1, bytes(4), (2, 2)))
    with pytest.raises(ValueError, match=r"type this reader does not know \(code 9\)"):
        encoder.read_ctranslate2(_ct2(9, bytes(4), (2, 2)))


def test_a_resume_keeps_final_rows_and_never_doubles_window_rows(tmp_path):
    """A silent file's row is final (a second try would give it again): a resume does not redo it,
    so its window rows stay single; an unreadable file is tried again, its new row replacing the old."""
    from conftest import write

    folder = tmp_path / "in"
    write(folder / "silence.wav", np.zeros(32000, np.float32), 16000)
    (folder / "broken.wav").write_bytes(b"not audio")
    shutil.copy(example_files()[0], folder / "ok.wav")
    out, win = tmp_path / "e.parquet", tmp_path / "w.parquet"
    for resume in (False, True, True):
        if resume:
            shutil.copy(example_files()[1], folder / "broken.wav")  # mended
        run = sercli.Run.prepare([folder], model="mfcc-cnn", output=out, windows=win, resume=resume, jobs=1)
        run.adapt()
        run.write()
    files, windows = sercli.read_results(out), sercli.read_results(win)
    assert files["path"].is_unique and set(files["status"]) == {"ok", "silent"}
    assert not windows.duplicated(["path", "start_s"]).any()


@pytest.mark.skipif(ENCODER is None, reason="no encoder model is shipped")
def test_a_long_file_not_split_is_measured_without_stopping_the_run(tmp_path):
    from conftest import speech, write

    write(tmp_path / "long.wav", speech(700.0), 16000)  # more windows than a measured file keeps
    result = sercli.annotate(tmp_path / "long.wav", model=ENCODER, vad="off", adapt="auto", jobs=1)
    assert result.files["status"].tolist() == ["ok"] and result.files["windows"].iloc[0] > 400
