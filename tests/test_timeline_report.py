"""A report a person reads: the timeline of a long recording shows its pauses, tells the time and the
answer under the pointer, and plays its moments in the page; ``summarize`` lists the moments;
any table (files or segments) can be scored against the labels one has."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cdp import Browser
from conftest import example_files, run_cli, speech, write
from sercli.timeline import moments

#: Where the known pause of the test recording is (seconds).
PAUSE = (40.0, 45.0)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """A 90 s interview of real speech (the example clips, 0.8 s apart) with one 5 s pause at
    40-45 s, annotated (files, segments, windows) by the default model."""
    root = tmp_path_factory.mktemp("talk")
    parts, t = [], 0.0
    clips = [speech(index=i % 12) for i in range(40)]
    for y in clips:
        if t < PAUSE[0] <= t + len(y) / 16000 + 0.8:  # the pause starts here
            parts.append(np.zeros(int((PAUSE[0] - t) * 16000), np.float32))
            t = PAUSE[0]
            parts.append(np.zeros(int(5 * 16000), np.float32))
            t += 5.0
        parts += [y, np.zeros(int(0.8 * 16000), np.float32)]
        t += len(y) / 16000 + 0.8
        if t > 90:
            break
    audio = write(root / "talk.wav", np.concatenate(parts), 16000)
    res = run_cli("annotate", str(audio), "-o", str(root / "f.parquet"), "--segments", str(root / "s.parquet"),
                  "--windows", str(root / "w.parquet"), "-q")
    assert res.returncode == 0, res.stderr
    return root


def test_the_timeline_shows_the_pause_tells_the_time_and_plays_a_moment(recording, tmp_path):
    page = tmp_path / "report.html"
    res = run_cli("summarize", str(recording / "w.parquet"), "--html", str(page))
    assert res.returncode == 0, res.stderr
    browser = Browser(tmp_path / "profile")
    try:
        browser.send("Page.navigate", {"url": page.as_uri()})
        browser.wait_for("document.querySelector('svg.timeline') !== null")
        box = browser.evaluate("(() => { const r = document.querySelector('svg.timeline').getBoundingClientRect();"
                               " return [r.left, r.top, r.width, parseFloat(document.querySelector('svg.timeline')"
                               ".dataset.seconds)]; })()")
        left, top, width, seconds = box
        browser.evaluate(f"window.scrollTo(0, {top - 100})")
        top = browser.evaluate("document.querySelector('svg.timeline').getBoundingClientRect().top")

        def at(t: float) -> tuple[float, float]:
            return left + t / seconds * width, top + 35

        x, y = at(sum(PAUSE) / 2)  # the middle of the pause: background, no emotion
        assert browser.evaluate(f"document.elementFromPoint({x}, {y}).classList.contains('gap')")
        x, y = at(10.0)  # in speech: hovering gives the time and the answer
        assert browser.evaluate(f"document.elementFromPoint({x}, {y}).closest('g.bin') !== null")
        browser.send("Input.dispatchMouseEvent", {"type": "mouseMoved", "x": x, "y": y})
        tip = browser.wait_for("!document.getElementById('tip').hidden && document.getElementById('tip').textContent")
        assert tip.startswith(("0:09", "0:10")) and "%" in tip
        first = browser.evaluate("(() => { const b = document.querySelector('button.play'); b.click();"
                                 " return [parseFloat(b.dataset.start), parseFloat(b.dataset.end)]; })()")
        played = browser.wait_for(f"(() => {{ const p = document.getElementById('player');"
                                  f" return p.readyState >= 1 && p.currentTime >= {first[0]} - 0.01"
                                  f" && p.currentTime <= {first[1]} + 0.5 ? p.currentTime : null; }})()")
        assert first[0] - 0.01 <= played <= first[1] + 0.5
        assert browser.evaluate("document.getElementById('audio-note').textContent") == ""
        assert browser.console_errors() == []
    finally:
        browser.close()


def test_summarize_and_the_library_give_the_moments_of_each_emotion(recording):
    segments = pd.read_parquet(recording / "s.parquet")
    found = moments(segments, per_class=2)
    assert set(found.columns) == {"path", "emotion", "start_s", "end_s", "duration_s", "confidence"}
    assert found.groupby("emotion").size().max() <= 2 and (found["end_s"] > found["start_s"]).all()
    assert not ((found["start_s"] < PAUSE[1]) & (found["end_s"] > PAUSE[0]) &
                (found["duration_s"] < 5)).any()  # no moment lies in the pause
    for r in found.itertuples():  # each moment is a stretch its emotion wins, as sure as said
        inside = segments[(segments["start_s"] >= r.start_s) & (segments["end_s"] <= r.end_s)]
        assert (inside["emotion"].astype(str) == r.emotion).all()
        assert r.confidence == pytest.approx(np.average(inside[f"prob_{r.emotion}"],
                                                        weights=inside["end_s"] - inside["start_s"]), abs=1e-3)
    res = run_cli("summarize", str(recording / "s.parquet"), "--moments", "2")
    assert res.returncode == 0 and "moments: the strongest 2 per emotion" in res.stdout
    files = moments(pd.read_parquet(recording / "f.parquet"))
    assert len(files) == 1 and files.loc[0, "start_s"] == 0.0  # a files table: its most confident files


def test_a_files_table_is_scored_with_whole_file_labels(tmp_path):
    out = tmp_path / "e.parquet"
    assert run_cli("annotate", *map(str, example_files()), "-m", "mfcc-cnn", "-o", str(out), "-q").returncode == 0
    truth = tmp_path / "truth.csv"
    code = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
    pd.DataFrame({"path": [str(p) for p in example_files()],
                  "emotion": [code[p.stem.split("_")[2]] for p in example_files()]}).to_csv(truth, index=False)
    res = run_cli("summarize", str(out), "--truth", str(truth), "--json", str(tmp_path / "s.json"))
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "s.json").read_text())["agreement"]["n"] == 12


@pytest.mark.parametrize("content", ["", "path,emotion\n", "just some text\n", "path;emotion\na;b\n"])
def test_an_empty_or_malformed_truth_file_is_one_sentence(tmp_path, content):
    out = tmp_path / "e.parquet"
    assert run_cli("annotate", str(example_files()[0]), "-m", "mfcc-cnn", "-o", str(out), "-q").returncode == 0
    (tmp_path / "truth.csv").write_text(content)
    res = run_cli("summarize", str(out), "--truth", str(tmp_path / "truth.csv"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("sercli: ")
