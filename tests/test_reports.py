"""summarize, --truth and the HTML report, checked against plain pandas on real annotations."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import EXAMPLES, run_cli
from sercli.reports import read_results, summarize

EMOTIONS = ["anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise"]


@pytest.fixture(scope="module")
def annotated(model, tmp_path_factory) -> tuple[Path, Path]:
    """The bundled examples, plus a copy in a second folder and a corrupt file."""
    root = tmp_path_factory.mktemp("reports")
    (root / "a").mkdir()
    (root / "b").mkdir()
    for i, f in enumerate(sorted(EXAMPLES.glob("*.wav"))):
        shutil.copy(f, root / ("a" if i % 3 else "b") / f.name)
    (root / "b" / "broken.wav").write_bytes(b"not audio at all")
    out, seg = root / "files.parquet", root / "segments.parquet"
    res = run_cli("annotate", str(root / "a"), str(root / "b"), "-m", model, "-o", str(out), "--segments", str(seg),
                  "-q")
    assert res.returncode == 1, res.stderr
    return out, seg


def test_read_results_gives_ordered_categorical_and_metadata(annotated):
    df = read_results(annotated[0])
    assert list(df["emotion"].cat.categories) == EMOTIONS and df["emotion"].cat.ordered
    assert df.attrs["model"] and df.attrs["sercli_version"]


def test_summarize_by_folder_matches_pandas(annotated):
    df = pd.read_parquet(annotated[0])
    got = summarize(df, by="folder")
    parents = df["path"].map(lambda p: str(Path(p).parent))
    root = os.path.commonpath(list(parents.unique()))
    folder = parents.map(lambda f: os.path.relpath(f, root))  # labels show what differs: "a", "b"
    assert sorted(got.index) == ["a", "b"]
    ok = df["status"] == "ok"
    for name, g in df.groupby(folder):
        row = got.loc[name]
        gok = g[g["status"] == "ok"]
        assert row["files"] == len(g) and row["ok"] == len(gok) and row["failed"] == len(g) - len(gok)
        assert row["duration_s"] == pytest.approx(g["duration_s"].fillna(0).sum(), abs=1e-3)
        assert row["mean_confidence"] == pytest.approx(gok["confidence"].mean(), abs=1e-4)
        counts = gok["emotion"].value_counts()
        for e in EMOTIONS:
            assert row[f"n_{e}"] == counts.get(e, 0)
            assert row[f"share_{e}"] == pytest.approx(counts.get(e, 0) / len(gok), abs=1e-4)
            dur = gok.loc[gok["emotion"] == e, "duration_s"].sum() / gok["duration_s"].sum()
            assert row[f"duration_share_{e}"] == pytest.approx(dur, abs=1e-4)
        assert row["dominant"] == counts.idxmax()
    assert got["files"].sum() == len(df) and got["ok"].sum() == ok.sum()


def test_summarize_by_regex_group_and_depth(annotated):
    df = pd.read_parquet(annotated[0])
    by_speaker = summarize(df, by=r"/(?P<speaker>\d{4})_")
    assert sorted(by_speaker.index) == ["1006", "1015", "<NA>"]  # broken.wav has no speaker
    assert by_speaker.loc["1006", "files"] == 6
    depth = summarize(df, by=f"depth:{len(Path(df['path'][0]).parts) - 1}")
    assert len(depth) == 2


def test_truth_agreement_matches_sklearn(annotated, tmp_path):
    from sklearn.metrics import accuracy_score, f1_score

    df = pd.read_parquet(annotated[0])
    res = run_cli("summarize", str(annotated[0]), "--truth", str(EXAMPLES / "labels.csv"),
                  "--json", str(tmp_path / "s.json"), "--csv", str(tmp_path / "s.csv"))
    assert res.returncode == 0, res.stderr
    doc = json.loads((tmp_path / "s.json").read_text())
    labels = pd.read_csv(EXAMPLES / "labels.csv").set_index("path")["emotion"]
    ok = df[df["status"] == "ok"]
    truth = ok["path"].map(lambda p: labels[Path(p).name])
    assert doc["agreement"]["n"] == 12
    assert doc["agreement"]["accuracy"] == pytest.approx(accuracy_score(truth, ok["emotion"]))
    assert doc["agreement"]["macro_f1"] == pytest.approx(f1_score(truth, ok["emotion"], average="macro"))
    assert np.array(doc["agreement"]["confusion"]).sum() == 12
    assert doc["overall"]["all"]["files"] == 13 and doc["overall"]["all"]["failed"] == 1
    assert f"accuracy {doc['agreement']['accuracy']:.4f}" in res.stdout
    assert len(pd.read_csv(tmp_path / "s.csv")) == 1


def test_truth_in_a_users_own_spelling_is_mapped_to_the_models_classes(annotated, tmp_path):
    """Hole 5 of issue 23: Angry/Happy/... folders used to score 0.0000 with no word."""
    spelled = {"anger": "Angry", "disgust": "Disgusted", "fear": "Fearful", "happiness": "Happy",
               "neutral": "Neutral", "sadness": "Sad"}
    labels = pd.read_csv(EXAMPLES / "labels.csv")
    labels.assign(emotion=labels["emotion"].map(spelled)).to_csv(tmp_path / "mine.csv", index=False)
    plain = run_cli("summarize", str(annotated[0]), "--truth", str(EXAMPLES / "labels.csv"))
    mine = run_cli("summarize", str(annotated[0]), "--truth", str(tmp_path / "mine.csv"))
    assert mine.returncode == 0, mine.stderr
    assert "Angry -> anger" in mine.stdout and "Sad -> sadness" in mine.stdout
    accuracy = re.search(r"accuracy (\d\.\d{4})", plain.stdout).group(1)
    assert f"accuracy {accuracy}" in mine.stdout


def test_truth_labels_that_are_no_class_of_the_model_are_refused_in_one_sentence(annotated, tmp_path):
    labels = pd.read_csv(EXAMPLES / "labels.csv")
    labels.assign(emotion="calm").to_csv(tmp_path / "calm.csv", index=False)
    res = run_cli("summarize", str(annotated[0]), "--truth", str(tmp_path / "calm.csv"))
    assert res.returncode == 2
    assert "calm (12 rows) are not classes of the table's model" in res.stderr
    assert res.stderr.count("\n") == 1 and "Traceback" not in res.stderr
    mapped = run_cli("summarize", str(annotated[0]), "--truth", str(tmp_path / "calm.csv"), "--map", "calm=neutral",
                     "--json", str(tmp_path / "s.json"))  # the fix the sentence names
    assert mapped.returncode == 0, mapped.stderr
    ok = read_results(annotated[0]).query("status == 'ok'")
    agreement = json.loads((tmp_path / "s.json").read_text())["agreement"]
    assert agreement["n"] == len(ok) and agreement["accuracy"] == pytest.approx((ok["emotion"] == "neutral").mean())
    wrong = run_cli("summarize", str(annotated[0]), "--truth", str(tmp_path / "calm.csv"), "--map", "calm")
    assert wrong.returncode == 2 and "--map takes LABEL=CLASS" in wrong.stderr


def test_a_file_name_two_reference_files_share_is_not_matched_by_name(annotated, tmp_path):
    """Hole 5: the file-name fallback kept the first of two files with one name, mislabelling the other."""
    labels = pd.read_csv(EXAMPLES / "labels.csv")
    first = labels["path"].iloc[0]
    twice = pd.concat([labels.assign(path="x/" + labels["path"]),
                       pd.DataFrame({"path": ["y/" + first], "emotion": ["sadness"]})])
    twice.to_csv(tmp_path / "twice.csv", index=False)
    res = run_cli("summarize", str(annotated[0]), "--truth", str(tmp_path / "twice.csv"), "--json",
                  str(tmp_path / "s.json"))
    assert res.returncode == 0, res.stderr
    assert "1 rows not matched: their file name belongs to two or more files" in res.stdout
    assert json.loads((tmp_path / "s.json").read_text())["agreement"]["n"] == 11


def test_a_label_given_by_full_path_does_not_label_another_file_of_the_same_name(model, tmp_path):
    """A newcomer's test set named speakerB/clip04.wav; the file-name fallback also scored
    speakerA's and speakerC's clip04.wav, training clips, as test rows."""
    clip = sorted(EXAMPLES.glob("*.wav"))[0]
    for speaker in "ABC":
        (tmp_path / f"speaker{speaker}").mkdir()
        (tmp_path / f"speaker{speaker}" / "clip04.wav").symlink_to(clip)
    out = tmp_path / "t.parquet"
    assert run_cli("annotate", *(str(tmp_path / f"speaker{x}") for x in "ABC"), "-m", model, "-o", str(out),
                   "-q").returncode == 0
    pd.DataFrame({"path": [str(tmp_path / "speakerB" / "clip04.wav")], "emotion": ["anger"]}).to_csv(
        tmp_path / "one.csv", index=False)
    res = run_cli("summarize", str(out), "--truth", str(tmp_path / "one.csv"), "--json", str(tmp_path / "s.json"))
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "s.json").read_text())["agreement"]["n"] == 1
    pd.DataFrame({"path": ["elsewhere/clip04.wav"], "emotion": ["anger"]}).to_csv(tmp_path / "name.csv", index=False)
    res = run_cli("summarize", str(out), "--truth", str(tmp_path / "name.csv"))  # which clip04.wav? none
    assert res.returncode == 2 and res.stderr.strip() == ("sercli: no row of the table matches a reference label "
                                                          "(3 by a file name that two or more files share); give the "
                                                          "table's paths in the manifest.")


def test_labels_of_segments_score_the_segments_table_they_were_cut_from(model, tmp_path):
    """``sercli label`` on a segments table writes cut clips (``path``) with their ``source``
    and ``start_s``; ``summarize SEGMENTS --truth labels.csv`` scores the segments by those."""
    from conftest import speech, write
    from sercli.labeling import Clip, LabelBook

    gap = np.zeros(16000, np.float32)
    long = write(tmp_path / "call.wav", np.concatenate([np.concatenate([speech(None, index=i), gap])
                                                        for i in range(8)]), 16000)
    files, segs = tmp_path / "files.parquet", tmp_path / "segments.parquet"
    res = run_cli("annotate", str(long), "-m", model, "-o", str(files), "--segments", str(segs), "--vad", "on", "-q")
    assert res.returncode == 0, res.stderr
    table = pd.read_parquet(segs)
    assert len(table) >= 4
    book = LabelBook(tmp_path / "labels.csv", EMOTIONS)
    labelled = table.iloc[:4]
    for i, row in enumerate(labelled.itertuples()):  # the model's own label, but one wrong
        wrong = next(e for e in EMOTIONS if e != row.emotion)
        book.add(Clip(i, row.path, row.start_s, row.end_s, row.emotion, row.confidence, ""),
                 wrong if i == 0 else row.emotion)
    res = run_cli("summarize", str(segs), "--truth", str(tmp_path / "labels.csv"), "--json", str(tmp_path / "s.json"))
    assert res.returncode == 0, res.stderr
    scored = json.loads((tmp_path / "s.json").read_text())["agreement"]
    assert scored["n"] == 4 and scored["accuracy"] == pytest.approx(3 / 4)
    rounded = pd.read_csv(tmp_path / "labels.csv")  # starts as a CSV table's six digits may give them
    rounded.assign(start_s=rounded["start_s"] + 0.03).to_csv(tmp_path / "rounded.csv", index=False)
    res = run_cli("summarize", str(segs), "--truth", str(tmp_path / "rounded.csv"), "--json", str(tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text())["agreement"] == scored


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip("chromium is not installed (.ci/run installs it)")
    return path


@pytest.mark.parametrize("which", ["files", "segments"])
def test_html_report_renders_in_chromium(annotated, tmp_path, which):
    table = annotated[0] if which == "files" else annotated[1]
    html = tmp_path / "report.html"
    args = ["summarize", str(table), "--html", str(html)]
    if which == "files":
        args += ["--by", "folder", "--truth", str(EXAMPLES / "labels.csv")]
    res = run_cli(*args)
    assert res.returncode == 0, res.stderr
    text = html.read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", text)  # self-contained: nothing to fetch
    n_svg = text.count("<svg")
    # distribution, confidence, then groups and confusion | no timeline: no recording is 30 s long
    assert n_svg == (4 if which == "files" else 2)
    assert "button class='play'" in text  # the moments: most confident files, or regions
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0",
         "--window-size=1000,2400", f"--screenshot={shot}", html.as_uri()],
        capture_output=True, text=True, timeout=120)
    assert shot.exists(), proc.stderr
    console = [line for line in proc.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]
    assert not console, console
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.std() > 10  # not blank
    assert (img < 128).mean() > 0.01  # plots and text drawn


def test_evaluation_metrics_match_a_case_computed_by_hand():
    """Two corpora, a class (surprise) predicted but never true, and confidences for ECE."""
    from sercli.evaluation import _headline
    from sercli.reports import agreement

    truth = pd.DataFrame({"path": [f"f{i}.wav" for i in range(6)],
                          "emotion": ["anger", "anger", "anger", "sadness", "sadness", "neutral"]})
    pred = truth.assign(status="ok", true=truth["emotion"],
                        emotion=["anger", "anger", "surprise", "sadness", "anger", "neutral"],
                        confidence=[0.9, 0.9, 0.6, 0.6, 0.6, 0.9], corpus=["a", "a", "a", "b", "b", "b"])
    m = _headline(agreement(pred, truth), pred)
    # accuracy 4/6; recalls anger 2/3, sadness 1/2, neutral 1/1 -> UAR 13/18 over the 3 present classes
    assert m["accuracy"] == round(4 / 6, 4) and m["uar"] == round(13 / 18, 4)
    # F1: anger P 2/3 R 2/3 -> 2/3; sadness P 1 R 1/2 -> 2/3; neutral 1 -> mean 7/9 (surprise not averaged in)
    assert m["macro_f1"] == round(7 / 9, 4)
    # ECE: bin 0.9 (3 rows, all right): |1 - 0.9| = 0.1; bin 0.6 (3 rows, 1 right): |1/3 - 0.6| -> 0.5*0.1 + 0.5*0.2667
    assert m["ece"] == round(0.5 * 0.1 + 0.5 * (0.6 - 1 / 3), 4)
    b = _headline(agreement(pred[pred["corpus"] == "b"], truth), pred[pred["corpus"] == "b"])
    assert (b["n"], b["accuracy"], b["uar"]) == (3, round(2 / 3, 4), round(0.75, 4))  # sadness 1/2, neutral 1


@pytest.mark.parametrize("hours", [0.5, 4.0])
def test_timeline_of_a_long_recording_stays_readable(annotated, hours, tmp_path):
    """A 30-minute and a 4-hour file of windows (real rows, repeated): the timeline pools
    them into at most 400 columns per file, so the report stays small and legible."""
    from sercli.html import render_report

    real = pd.read_parquet(annotated[1])  # the examples' rows: a mix of emotions
    n = int(hours * 3600 / 1.5)
    rows = real.sample(n, replace=True, random_state=0).reset_index(drop=True)
    rows["start_s"] = np.arange(n) * 1.5
    rows["end_s"] = rows["start_s"] + 3.0
    rows["path"] = "/archive/broadcasts/2026/long-show.wav"
    rows = rows[(rows["start_s"] // 600) % 4 != 3]  # every fourth 10 minutes without speech
    text = render_report(rows, summarize(rows), summarize(rows), source="test")
    assert text.count("<svg") == 3
    assert text.count("<rect") < 3 * 400 + 200  # bounded by the bins, not by the rows
    assert "long-show.wav" in text
    html = tmp_path / "report.html"
    html.write_text(text)
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                    "--disable-background-networking", "--disable-component-update", "--disable-sync",
                    f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1000,1400", f"--screenshot={shot}",
                    html.as_uri()], capture_output=True, text=True, timeout=120)
    from PIL import Image

    img = np.asarray(Image.open(shot).convert("RGB"), dtype=float)
    colourful = (img.max(axis=2) - img.min(axis=2)) > 60
    assert colourful.mean() > 0.005  # the lane's coloured bars are drawn


def test_summaries_and_html_follow_the_classes_of_the_table(tmp_path):
    from sercli.html import render_report
    from sercli.output import write_atomic

    df = pd.DataFrame({"path": ["a/1.wav", "a/2.wav", "b/3.wav"], "status": ["ok"] * 3,
                       "emotion": ["calm", "tense", "calm"], "confidence": [0.7, 0.6, 0.8],
                       "prob_calm": [0.7, 0.4, 0.8], "prob_tense": [0.3, 0.6, 0.2], "duration_s": [2.0, 3.0, 1.0]})
    write_atomic(iter([df]), tmp_path / "t.parquet", {"model": "mine"})
    table = read_results(tmp_path / "t.parquet")
    assert list(table["emotion"].cat.categories) == ["calm", "tense"]
    by = summarize(table, by="folder")
    assert by.attrs["classes"] == ["calm", "tense"]
    assert by[["n_calm", "n_tense"]].to_numpy().tolist() == [[1, 1], [1, 0]]
    assert not any(c.endswith("anger") for c in by.columns)
    page = render_report(table, by, summarize(table), source="t.parquet")
    assert "tense" in page and "anger" not in page
