"""``--adapt corpus``: the corpus's mean spectral envelope is measured and aligned with the
model's reference, on real speech (the example clips, and copies of them through a channel)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

import sercli
from conftest import example_files, run_cli, write
from sercli.adaptation import MIN_FILES, Envelope, measure_envelope
from sercli.features import FeatureParams, frame_db, log_mel
from sercli.windowing import WindowStream, concat_windows, windows_from_log_mel
from sercli.models import load_model
from sercli.tables import PROB_COLUMNS


def _corpus(root: Path, channel: np.ndarray | None = None) -> Path:
    """24 files: every example clip at two gains, optionally through the FIR filter ``channel``."""
    import soundfile as sf

    for path in example_files():
        y, sr = sf.read(path, dtype="float32")
        if channel is not None:
            y = np.convolve(y, channel)[: len(y)].astype(np.float32)
            y = y / np.abs(y).max() * 0.9
        for gain in (1.0, 0.5):
            write(root / f"{gain}_{path.stem}.wav", y * gain, sr)
    return root


@pytest.fixture(scope="module")
def corpora(tmp_path_factory) -> tuple[Path, Path]:
    """The same speech as recorded, and through a telephone-like tilted channel."""
    base = tmp_path_factory.mktemp("adapt")
    return _corpus(base / "plain"), _corpus(base / "tilted", channel=np.array([1.0, -0.95]))


def test_envelope_is_the_mean_level_removed_spectrum_of_speech_frames():
    env = Envelope.empty(3)
    mel = np.array([[10.0, 20.0, -80.0], [0.0, 10.0, -80.0], [-10.0, 0.0, -80.0]])
    env.add(mel, np.array([-10.0, -12.0, -90.0]))  # the third frame is 80 dB down: not speech
    assert env.frames == 2 and env.files == 1
    np.testing.assert_allclose(env.mean, [10.0, 0.0, -10.0])


def test_a_shifted_window_stream_equals_windowing_the_shifted_log_mel():
    import soundfile as sf

    y, _ = sf.read(example_files()[0], dtype="float32")
    params = FeatureParams(trim_db=35, floor_db=60)
    shift = np.linspace(-6.0, 6.0, params.n_mels)
    stream = WindowStream(params, shift=shift)
    streamed = concat_windows([stream.feed(y[:20000]), stream.feed(y[20000:]), stream.finish()], params)
    direct = windows_from_log_mel(log_mel(y, params) + shift[:, None], frame_db(y, params), params,
                                  duration_s=len(y) / params.sample_rate)
    np.testing.assert_allclose(streamed.x, direct.x, atol=1e-4)
    np.testing.assert_allclose(streamed.start_s, direct.start_s)


def test_corpus_adaptation_undoes_a_fixed_channel(corpora):
    plain, tilted = corpora
    params = load_model("mfcc-cnn").params
    gap = measure_envelope(list(tilted.glob("*.wav")), params).mean - measure_envelope(list(plain.glob("*.wav")),
                                                                                         params).mean
    assert np.ptp(gap) > 20  # the channel moves the envelope by tens of dB across the bands

    def files(folder: Path, adapt: str):
        table = sercli.annotate(folder, model="mfcc-cnn", adapt=adapt, jobs=1).files
        assert table["status"].eq("ok").all()
        return table

    tables = {(c, a): files(f, a) for c, f in (("plain", plain), ("tilted", tilted)) for a in ("none", "corpus")}

    def gap(adapt: str) -> tuple[float, float]:
        a, b = tables["tilted", adapt], tables["plain", adapt]
        return np.abs(a[PROB_COLUMNS].to_numpy() - b[PROB_COLUMNS].to_numpy()).mean(), (a["emotion"] == b["emotion"]).mean()

    (unadapted, agree_unadapted), (adapted, agree_adapted) = gap("none"), gap("corpus")
    assert adapted < unadapted / 2
    assert agree_adapted >= 0.9 > agree_unadapted


def test_adapt_corpus_refuses_fewer_files_than_a_corpus_in_one_sentence(tmp_path):
    folder = tmp_path / "few"
    folder.mkdir()
    for path in example_files()[: MIN_FILES - 8]:
        shutil.copy(path, folder)
    out = run_cli("annotate", str(folder), "-m", "mfcc-cnn", "--adapt", "corpus", "-o", str(tmp_path / "e.csv"))
    assert out.returncode == 2
    assert f"needs at least {MIN_FILES} readable audio files with speech" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "e.csv").exists()


def test_a_resumed_adapted_run_keeps_the_shift_it_started_with(corpora, tmp_path):
    plain, tilted = corpora
    folder = tmp_path / "corpus"
    shutil.copytree(plain, folder)
    out = tmp_path / "e.parquet"
    assert run_cli("annotate", str(folder), "-m", "mfcc-cnn", "--adapt", "corpus", "-o", str(out), "-q").returncode == 0
    first = json.loads(pq.read_schema(out).metadata[b"sercli"])
    assert first["adapt"] == "corpus" and len(first["shift"]) == 64

    for path in sorted(tilted.glob("*.wav"))[:3]:  # new files that would move the corpus's envelope
        shutil.copy(path, folder / f"new_{path.name}")
    assert run_cli("annotate", str(folder), "-m", "mfcc-cnn", "--adapt", "corpus", "-o", str(out), "-q",
                   "--resume").returncode == 0
    resumed = json.loads(pq.read_schema(out).metadata[b"sercli"])
    assert resumed["shift"] == first["shift"]
    assert pq.read_table(out).num_rows == 27

    kept = run_cli("annotate", str(folder), "-m", "mfcc-cnn", "-o", str(out), "-q", "--resume")  # auto: as it began
    assert kept.returncode == 0 and json.loads(pq.read_schema(out).metadata[b"sercli"])["shift"] == first["shift"]
    changed = run_cli("annotate", str(folder), "-m", "mfcc-cnn", "-o", str(out), "-q", "--resume", "--adapt", "none")
    assert changed.returncode == 2 and "--adapt: 'corpus' then, 'none' now" in changed.stderr


def test_the_shift_reaches_the_windows_of_long_files_split_into_speech_regions():
    from conftest import speech

    y = speech(40.0, index=3)
    no_shift = sercli.annotate(y, sample_rate=16000, vad="on", model="mfcc-cnn").files
    shifted = [sercli.annotate(y, sample_rate=16000, vad="on", model="mfcc-cnn", adapt="corpus", shift=s).files
               for s in (np.zeros(64), np.linspace(-12.0, 12.0, 64))]
    np.testing.assert_allclose(shifted[0][PROB_COLUMNS], no_shift[PROB_COLUMNS], atol=1e-6)
    assert np.abs(shifted[1][PROB_COLUMNS].to_numpy() - no_shift[PROB_COLUMNS].to_numpy()).max() > 0.01


def test_a_model_without_a_reference_spectrum_is_refused_before_any_work(tmp_path):
    model = tmp_path / "old-model"
    shutil.copytree(load_model("mfcc-cnn").path, model)
    card = json.loads((model / "card.json").read_text())
    del card["adaptation"]
    (model / "card.json").write_text(json.dumps(card))
    out = run_cli("annotate", str(example_files()[0].parent), "-m", str(model), "--adapt", "corpus",
                  "-o", str(tmp_path / "e.csv"))
    assert out.returncode == 2 and "has no reference spectrum" in out.stderr
    assert "Traceback" not in out.stderr and not (tmp_path / "e.csv").exists()


def test_the_models_table_reports_loco_without_adaptation():
    card = load_model("mfcc-cnn").card["evaluation"]
    plain = [v["uar"] for k, v in card.items() if k.startswith("loco_") and "+" not in k]
    assert len(plain) == 3 and any("+adapt_corpus" in k for k in card)
    row = next(line for line in run_cli("models").stdout.splitlines() if "mfcc-cnn" in line)
    assert f"{sum(plain) / len(plain):.3f}" in row
