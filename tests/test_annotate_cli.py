"""``sercli annotate`` end to end: the real CLI on real speech in many formats."""

from __future__ import annotations

import json
import shutil
import subprocess
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from conftest import ROOT, EXAMPLES, example_files, run_cli, speech, write
from sercli.tables import COLUMNS, PROB_COLUMNS

EMOTIONS = {"anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Real speech in several formats, rates, bit depths and channel counts, plus a long file."""
    root = tmp_path_factory.mktemp("recordings")
    y16 = speech(index=0)
    write(root / "wav16k.wav", y16, 16000, subtype="PCM_16")
    write(root / "sub dir" / "café 8bit.WAV", speech(index=1, sr=8000), 8000, subtype="PCM_U8")
    write(root / "sub dir" / "pcm24_44k.wav", speech(index=2, sr=44100), 44100, subtype="PCM_24")
    write(root / "float_96k.wav", speech(index=3, sr=96000), 96000, subtype="FLOAT")
    write(root / "stereo48k.flac", np.stack([speech(index=4, sr=48000)] * 2, axis=1), 48000)
    write(root / "six_channels.wav", np.stack([speech(index=5)] * 6, axis=1) * 0.5, 16000)
    write(root / "vorbis.ogg", speech(index=6, sr=22050), 22050, format="OGG", subtype="VORBIS")
    write(root / "opus.opus", speech(index=7, sr=48000), 48000, format="OGG", subtype="OPUS")
    write(root / "mp3.mp3", speech(index=8, sr=44100), 44100, format="MP3")
    write(root / "aiff.aiff", speech(index=9), 16000, format="AIFF")
    write(root / "long.wav", speech(65.0, index=10), 16000)
    (root / "notes.txt").write_text("not audio, not picked up from a folder")
    return root


def read(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def test_annotate_folder_gives_one_valid_row_per_audio_file(corpus, model, tmp_path):
    out = tmp_path / "emotions.parquet"
    res = run_cli("annotate", str(corpus), "--model", model, "-o", str(out), "--jobs", "2")
    assert res.returncode == 0, res.stderr
    df = read(out)
    assert list(df.columns) == COLUMNS
    assert len(df) == 11 and df["path"].is_unique
    assert (df["status"] == "ok").all()
    assert set(df["emotion"]) <= EMOTIONS
    probs = df[PROB_COLUMNS].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert (df["confidence"] == probs.max(axis=1)).all()
    by_name = df.set_index(df["path"].map(lambda p: Path(p).name))
    assert by_name.loc["stereo48k.flac", "channels"] == 2 and by_name.loc["stereo48k.flac", "sample_rate"] == 48000
    assert by_name.loc["six_channels.wav", "channels"] == 6
    assert by_name.loc["float_96k.wav", "sample_rate"] == 96000
    assert by_name.loc["long.wav", "duration_s"] == pytest.approx(65.0, abs=0.01)
    assert by_name.loc["long.wav", "segments"] > 20
    assert by_name.loc["wav16k.wav", "segments"] == 1


def test_parquet_carries_run_metadata(corpus, model, tmp_path):
    out = tmp_path / "e.parquet"
    assert run_cli("annotate", str(corpus / "wav16k.wav"), "-m", model, "-o", str(out), "-q").returncode == 0
    meta = json.loads(pq.read_schema(out).metadata[b"sercli"])
    assert meta["model"] and meta["model_sha256"] and meta["sercli_version"]
    assert meta["feature_params"]["sample_rate"] == 16000
    assert meta["created"].startswith("20")


def test_windows_table_covers_long_file_and_matches_file_row(corpus, model, tmp_path):
    """Without speech regions (--vad off) a long file is cut into windows from start to end."""
    out, win = tmp_path / "files.csv", tmp_path / "windows.csv"
    res = run_cli("annotate", str(corpus / "long.wav"), str(corpus / "wav16k.wav"), "-m", model,
                  "-o", str(out), "--windows", str(win), "--hop", "1.0", "--vad", "off", "-q")
    assert res.returncode == 0, res.stderr
    files, wins = pd.read_csv(out), pd.read_csv(win)
    long_row = files[files["path"].str.endswith("long.wav")].iloc[0]
    long_wins = wins[wins["path"] == long_row["path"]]
    assert len(long_wins) == long_row["windows"] and long_row["segments"] == 1
    assert long_wins["start_s"].is_monotonic_increasing
    assert long_wins["end_s"].max() == pytest.approx(65.0, abs=0.02)
    assert np.diff(long_wins["start_s"].to_numpy())[:-1] == pytest.approx(1.0, abs=0.02)
    # the file-level result is the duration-weighted mean of the non-silent windows
    w = (long_wins["end_s"] - long_wins["start_s"]).to_numpy()[:, None]
    mean = (long_wins[PROB_COLUMNS].to_numpy() * w).sum(axis=0) / w.sum()
    np.testing.assert_allclose(long_row[PROB_COLUMNS].to_numpy(dtype=float), mean, atol=1e-5)


def test_long_recording_is_split_into_speech_regions(model, tmp_path):
    """Real clips joined by known gaps of silence, noise and music-like tones: one segment per
    speech region, windows only within speech, and the file's result from those windows."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from vad import build  # the VAD benchmark's long-file builder

    y, truth = build(12, seed=3)
    long = write(tmp_path / "talk.wav", y, 16000)
    out, seg, win = tmp_path / "f.parquet", tmp_path / "s.parquet", tmp_path / "w.parquet"
    res = run_cli("annotate", str(long), "-m", model, "-o", str(out), "--segments", str(seg),
                  "--windows", str(win), "-q")
    assert res.returncode == 0, res.stderr
    row, segs, wins = pd.read_parquet(out).iloc[0], pd.read_parquet(seg), pd.read_parquet(win)
    assert row["segments"] == len(segs) and row["windows"] == len(wins)
    assert (segs["start_s"].diff().dropna() > 0).all() and (segs["start_s"] < segs["end_s"]).all()
    found = sum(any(min(b, d) > max(a, c) for c, d in zip(segs["start_s"], segs["end_s"])) for a, b in truth)
    assert found >= len(truth) - 1, f"only {found} of {len(truth)} clips found"
    speech_s = sum(b - a for a, b in truth)
    assert (segs["end_s"] - segs["start_s"]).sum() < 1.6 * speech_s  # the gaps are mostly left out
    inside = [any(c - 1e-6 <= a and b <= d + 1e-6 for c, d in zip(segs["start_s"], segs["end_s"]))
              for a, b in zip(wins["start_s"], wins["end_s"])]
    assert all(inside), "every window lies within a speech segment"
    w = (wins["end_s"] - wins["start_s"]).to_numpy()[:, None] * ~wins["silent"].to_numpy()[:, None]
    mean = (wins[PROB_COLUMNS].to_numpy() * w).sum(axis=0) / w.sum()
    np.testing.assert_allclose(row[PROB_COLUMNS].to_numpy(dtype=float), mean, atol=1e-5)


def test_stdin_paths_and_csv_on_stdout(corpus, model):
    paths = "\n".join([str(corpus / "wav16k.wav"), str(corpus / "mp3.mp3"), str(corpus / "wav16k.wav")]) + "\n"
    res = run_cli("annotate", "-", "-m", model, "-o", "-", input=paths)
    assert res.returncode == 0, res.stderr
    df = pd.read_csv(StringIO(res.stdout))
    assert list(df.columns) == COLUMNS
    assert len(df) == 2  # named twice, annotated once
    assert (df["status"] == "ok").all()


def test_jsonl_output_and_include_exclude_globs(corpus, model, tmp_path):
    out = tmp_path / "e.jsonl"
    res = run_cli("annotate", str(corpus), "-m", model, "-o", str(out), "--include", "*.wav",
                  "--exclude", "long*", "-q")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    names = sorted(Path(r["path"]).name for r in rows)
    assert names == sorted(["wav16k.wav", "pcm24_44k.wav", "float_96k.wav", "six_channels.wav"])


def test_existing_output_is_refused_without_overwrite(corpus, model, tmp_path):
    out = tmp_path / "e.csv"
    out.write_text("precious")
    res = run_cli("annotate", str(corpus / "wav16k.wav"), "-m", model, "-o", str(out))
    assert res.returncode == 2
    assert "--overwrite" in res.stderr and "Traceback" not in res.stderr
    assert out.read_text() == "precious"
    assert run_cli("annotate", str(corpus / "wav16k.wav"), "-m", model, "-o", str(out), "--overwrite",
                   "-q").returncode == 0
    assert len(pd.read_csv(out)) == 1


@pytest.mark.parametrize("args, needle", [
    (["--model", "no-such-model"], "No model named"),
    (["-o", "/nonexistent-dir/e.parquet"], "does not exist"),
    (["-o", "e.xlsx"], "Unknown output format"),
    (["--hop", "0"], "--hop must be"),
])
def test_unusable_arguments_exit_2_with_one_sentence(corpus, model, tmp_path, args, needle):
    res = run_cli("annotate", str(corpus / "wav16k.wav"), "--model", model, *args, cwd=tmp_path)
    assert res.returncode == 2
    assert needle in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_bad_file_gives_exit_1_and_a_row(corpus, model, tmp_path):
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF\x00\x00garbage" * 10)
    out = tmp_path / "e.csv"
    res = run_cli("annotate", str(corpus / "wav16k.wav"), str(bad), "-m", model, "-o", str(out))
    assert res.returncode == 1
    df = pd.read_csv(out)
    assert sorted(df["status"]) == ["corrupt", "ok"]
    assert "files not ok" in res.stderr


def test_examples_match_their_labels_better_than_chance(model, tmp_path):
    """The bundled examples (unseen speakers) through the library API."""
    import sercli

    df = sercli.annotate(EXAMPLES, model=model, jobs=1).files
    labels = pd.read_csv(EXAMPLES / "labels.csv")
    merged = df.assign(name=df["path"].map(lambda p: Path(p).name)).merge(labels, left_on="name", right_on="path")
    assert len(merged) == len(example_files()) == 12
    accuracy = (merged["emotion_x"] == merged["emotion_y"]).mean()
    assert accuracy > 2 / 12  # chance is 1/6 over these six emotions


def test_help_imports_nothing_heavy():
    """``--help`` must stay fast: the CLI module may not import the audio/ML stack."""
    import subprocess
    import sys

    code = ("import sys, sercli.cli; heavy = {'tensorflow', 'keras', 'librosa', 'pandas', 'numba', "
            "'ai_edge_litert', 'sklearn'} & set(sys.modules); print(sorted(heavy))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"
    res = subprocess.run([sys.executable, "-m", "sercli", "annotate", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--segments" in res.stdout


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_file_format_does_not_change_whether_a_short_file_is_split(model, tmp_path):
    """Hole 2 of issue 23: files decoded through ffmpeg report no length, and --vad auto used to
    split every one as if it were long. Short m4a clips now get exactly the rows of --vad off."""
    folder = tmp_path / "m4a"
    folder.mkdir()
    for clip in example_files():
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(clip), "-c:a", "aac", str(folder / (clip.stem + ".m4a"))],
                       check=True)
    auto, off = tmp_path / "auto.csv", tmp_path / "off.csv"
    assert run_cli("annotate", str(folder), "-m", model, "-o", str(auto), "-q").returncode == 0
    assert run_cli("annotate", str(folder), "-m", model, "-o", str(off), "-q", "--vad", "off").returncode == 0
    a, b = (pd.read_csv(p).sort_values("path").reset_index(drop=True) for p in (auto, off))
    assert a["status"].eq("ok").all() and a["segments"].eq(1).all()
    pd.testing.assert_frame_equal(a, b)


def test_csv_on_stdout_into_a_pipe_closed_early_ends_quietly(many, model):
    """`annotate -o - | head` is not a failure: no traceback, exit status 0."""
    import sys

    script = (f'"{sys.executable}" -m sercli annotate "{many}" -m {model} -o - -q | head -3 >/dev/null; '
              'echo "status=${PIPESTATUS[0]}" >&2')
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert res.stderr.strip() == "status=0", res.stderr


def test_version_is_printed():
    from sercli import __version__

    res = run_cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"sercli {__version__}"
