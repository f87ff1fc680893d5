"""``sercli label``: the queue, the label book, the page (driven in headless Chromium by key
presses) and its safety (token, loopback Host, chosen clips only)."""

from __future__ import annotations

import http.client
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from cdp import Browser
from conftest import EXAMPLES, ROOT, run_cli, speech, start_cli, write

from sercli.labeling import Clip, LabelBook, choose, queue, without_long_files
from sercli.label_server import LabelServer, LabelSession
from sercli.reports import read_results

#: The example clips' true classes, from CREMA-D's file names, in a user's own spelling.
CODES = {"ANG": "angry", "DIS": "disgusted", "FEA": "afraid", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
CLASSES = list(CODES.values())
#: Two classes of a user's own, so twelve clips are enough to fine-tune (six each).
TENSE = {"ANG": "tense", "DIS": "tense", "FEA": "tense", "HAP": "calm", "NEU": "calm", "SAD": "calm"}


def truth(name: str, mapping: dict = CODES) -> str:
    return mapping[Path(name).stem.split("_")[2]]


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> Path:
    """The examples annotated by the default model, as a user's first step would write them."""
    out = tmp_path_factory.mktemp("label") / "emotions.parquet"
    res = run_cli("annotate", str(EXAMPLES), "-o", str(out), "--jobs", "1", "--quiet")
    assert res.returncode == 0, res.stderr
    return out


def start_label(table: Path, labels: Path, *extra: str, env: dict | None = None,
                browser: bool = False) -> tuple[subprocess.Popen, str]:
    """``sercli label`` running, and its page's URL (read from what it prints)."""
    proc = start_cli(["label", str(table), "--labels", str(labels), "--open" if browser else "--no-open", *extra],
                     env=env)
    text = ""
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stderr.readline()
        text += line
        if m := re.search(r"http://127\.0\.0\.1:\d+/\S+/", text):
            return proc, m.group(0)
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError(f"sercli label printed no address: {text}")


def post(url: str, route: str, body: dict) -> dict:
    import urllib.request

    req = urllib.request.Request(url + route, data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_the_queue_visits_every_predicted_class_and_group_before_repeating_one(table):
    df = read_results(table)
    df["speaker"] = df["path"].map(lambda p: Path(p).stem[:4])
    for strategy in ("spread", "uncertain"):
        clips = queue(df, strategy=strategy, by="speaker")
        assert sorted(c.path for c in clips) == sorted(df["path"])
        predicted = df["emotion"].astype(str)
        n = predicted.nunique()
        assert {c.predicted for c in clips[:n]} == set(predicted)  # one of each predicted class first
        first = [c for c in clips if c.predicted == clips[0].predicted]
        if len(first) > 1 and df.loc[predicted.eq(clips[0].predicted), "speaker"].nunique() > 1:
            assert first[0].group != first[1].group  # within a class, the groups take turns
    uncertain = queue(df, strategy="uncertain")
    by_class: dict[str, list[float]] = {}
    for c in uncertain:
        by_class.setdefault(c.predicted, []).append(c.confidence)
    assert all(v == sorted(v) for v in by_class.values())  # least certain first within a class
    assert queue(df, strategy="random", seed=1) != queue(df, strategy="random", seed=2)
    long = df.assign(duration_s=[45.0] + [2.0] * (len(df) - 1))  # an hour-long file is not a clip to label
    assert without_long_files(long)[1] == 1 and len(without_long_files(long)[0]) == len(df) - 1
    first = queue(df)[0]
    rest = queue(df, exclude={(first.path, None, None)})  # e.g. the training labels, when choosing a test set
    assert [c.id for c in rest] == list(range(len(df) - 1)) and first.path not in {c.path for c in rest}


def test_a_labelled_segment_becomes_its_own_clip_and_undo_forgets_it(tmp_path):
    long = write(tmp_path / "a" / "long.wav", speech(40.0), 16000)
    namesake = write(tmp_path / "b" / "long.wav", speech(40.0, index=3), 16000)  # same name, other audio
    book = LabelBook(tmp_path / "labels.csv", ["calm", "tense"])
    book.add(Clip(0, str(long), 12.0, 15.5, "anger", 0.4, ""), "tense")
    book.add(Clip(1, str(namesake), 12.0, 15.5, "anger", 0.4, ""), "calm")
    book.add(Clip(2, str(long), 20.0, 23.0, "anger", 0.4, ""), None)  # skipped: no clip written
    rows = pd.read_csv(tmp_path / "labels.csv", keep_default_na=False)
    assert list(rows["emotion"]) == ["tense", "calm", ""]
    from sercli.training.corpora import read_manifest

    assert read_manifest(tmp_path / "labels.csv")["emotion"].notna().sum() == 2  # a skip reads, and is no label
    assert rows.loc[0, "path"] != rows.loc[1, "path"]  # a clip each, though the files share a name
    y, sr = sf.read(tmp_path / rows.loc[0, "path"])
    assert sr == 16000 and len(y) == int(3.5 * sr)
    assert np.allclose(y, speech(40.0)[12 * sr:int(15.5 * sr)], atol=1e-4)  # the same samples, 16-bit WAV
    assert LabelBook(tmp_path / "labels.csv", ["calm", "tense"]).counts() == {"calm": 1, "tense": 1}
    shown = {(str(long), 12.0, 15.5), (str(long), 20.0, 23.0)}  # a clip's (path, start_s, end_s)
    book.undo(shown)  # this session's clips: the skip goes
    book.undo(shown)  # then the first label; the namesake's stays
    assert LabelBook(tmp_path / "labels.csv", ["calm", "tense"]).done() == {(str(namesake), 12.0, 15.5)}


def test_the_label_file_keeps_added_columns_and_a_failed_write_records_nothing(tmp_path):
    clip = Clip(0, str(EXAMPLES / "1006_IEO_ANG_HI.wav"), None, None, "anger", 0.5, "")
    book = LabelBook(tmp_path / "labels.csv", ["calm", "tense"])
    book.add(clip, "tense")
    rows = pd.read_csv(tmp_path / "labels.csv").assign(note="loud")  # the user adds a column
    rows.to_csv(tmp_path / "labels.csv", index=False)
    book = LabelBook(tmp_path / "labels.csv", ["calm", "tense"])
    book.add(Clip(1, str(EXAMPLES / "1006_IEO_SAD_HI.wav"), None, None, "sadness", 0.5, ""), "calm")
    again = pd.read_csv(tmp_path / "labels.csv", dtype=str, keep_default_na=False)
    assert list(again["note"]) == ["loud", ""] and list(again["emotion"]) == ["tense", "calm"]
    (tmp_path / "file").write_text("")
    broken = LabelBook(tmp_path / "file" / "labels.csv", ["calm", "tense"])  # its folder is a file
    with pytest.raises(OSError):
        broken.add(clip, "calm")
    assert broken.rows == [] and broken.done() == set()
    with pytest.raises(ValueError, match="missing value"):
        LabelBook(tmp_path / "x.csv", ["calm", "None"])


def test_the_page_labels_by_key_presses_undoes_survives_a_reload_and_finishes(table, tmp_path):
    labels = tmp_path / "labels.csv"
    proc, url = start_label(table, labels, "--classes", ",".join(CLASSES), "--by", "folder")
    browser = None
    try:
        browser = Browser(tmp_path / "profile")
        browser.send("Page.navigate", {"url": url})
        name = "document.getElementById('name').textContent"
        shown = lambda: browser.wait_for(f"{name}.endsWith('.wav') && {name}")  # noqa: E731
        progress = "document.getElementById('progress').textContent"

        def wait_labelled(n: int) -> None:
            browser.wait_for(f"{progress}.startsWith('{n} labelled')")

        first = shown()
        wrong = CLASSES[(CLASSES.index(truth(first)) + 1) % len(CLASSES)]
        browser.press(str(CLASSES.index(wrong) + 1))  # a slip of the finger ...
        wait_labelled(1)
        browser.press("u")  # ... undone
        wait_labelled(0)
        assert shown() == first
        for n in range(11):
            browser.press(str(CLASSES.index(truth(shown())) + 1))
            wait_labelled(n + 1)
        last = shown()
        browser.press("s")  # skipped: the queue is empty now
        browser.wait_for(f"{name} === 'No clips left in the queue.'")
        browser.send("Page.reload")  # a reload shows where the labelling is
        browser.wait_for(f"{name} === 'No clips left in the queue.' && {progress}.startsWith('11 labelled')")
        browser.press("u")  # the skip undone, the clip comes back
        assert shown() == last
        browser.press(str(CLASSES.index(truth(last)) + 1))
        wait_labelled(12)
        assert "ready to fine-tune" not in browser.evaluate("document.getElementById('status').textContent")
        assert browser.evaluate("document.querySelectorAll('#counts tr').length") == len(CLASSES)
        browser.evaluate("document.getElementById('finish').click()")
        out, err = proc.communicate(timeout=60)
        assert browser.console_errors() == []
    finally:
        if browser is not None:
            browser.close()
        proc.kill()
    assert proc.returncode == 0, err
    assert "Fine-tuning needs 5 clips per class" in err  # two of each: not enough, and it says so
    rows = pd.read_csv(labels, keep_default_na=False)
    assert len(rows) == 12 and rows["source"].is_unique
    assert all(rows["emotion"] == rows["source"].map(truth))  # every label as pressed, none lost
    assert set(rows["speaker"]) == {"examples"}  # the --by group: fine-tuning validates on whole groups


def test_an_interrupted_session_continues_and_its_labels_fine_tune_a_model(table, tmp_path):
    labels = tmp_path / "labels.csv"
    proc, url = start_label(table, labels, "--classes", "tense,calm", "--per-class", "6")
    for _ in range(5):
        clip = json.loads(urlopen(url + "state"))["clip"]
        post(url, "label", {"id": clip["id"], "label": truth(clip["name"], TENSE)})
    second = run_cli("label", str(table), "--labels", str(labels), "--no-open")
    assert second.returncode == 2 and "Another sercli run" in second.stderr  # one session per label file
    proc.send_signal(signal.SIGINT)  # Ctrl-C in the terminal
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert len(pd.read_csv(labels)) == 5

    test, url = start_label(table, tmp_path / "test.csv", "--not-in", str(labels), "--choose", "random", "--test")
    try:
        state = json.loads(urlopen(url + "state"))  # a test set: the clips not labelled for training
        assert state["purpose"] == "test" and state["remaining"] == 7
        assert state["command"].startswith(f"sercli summarize {table} --truth ")
        post(url, "finish", {})
        assert test.communicate(timeout=60)[0].startswith("sercli summarize")
    finally:
        test.kill()

    proc, url = start_label(table, labels, "--classes", "tense,calm", "--per-class", "6")
    state = json.loads(urlopen(url + "state"))
    assert state["labelled"] == 5 and state["remaining"] == 7
    while state["clip"]:
        state = post(url, "label", {"id": state["clip"]["id"], "label": truth(state["clip"]["name"], TENSE)})
    assert state["ready"] and state["counts"] == {"tense": 6, "calm": 6}
    post(url, "finish", {})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    command = out.strip().split()
    assert command[:4] == ["sercli", "train", "--init", "whisper-base"]
    model = tmp_path / "tuned"
    res = run_cli(*command[1:-1], str(model), "--jobs", "1", cwd=ROOT)
    assert res.returncode == 0, res.stderr
    card = json.loads((model / "card.json").read_text())
    assert card["classes"] == ["calm", "tense"]
    assert "stratified folds (no speaker column" in card["training"]["comparison"]["folds"]  # no --by
    assert "cross-validated UAR" in err  # the comparison, at Finish as after fine-tuning
    again = run_cli(*command[1:-1], str(model), "--jobs", "1", cwd=ROOT)
    assert again.returncode == 2 and "holds a model already" in again.stderr  # the model is kept


def urlopen(url: str, host: str | None = None, method: str = "GET", body: bytes | None = None,
            headers: dict | None = None) -> bytes:
    """The body of a response (``http.client``: ``Host`` is ours to set); raises on an error status."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    conn.putrequest(method, parts.path, skip_host=True)
    conn.putheader("Host", parts.netloc if host is None else host)
    for k, v in (headers or {}).items():
        conn.putheader(k, v)
    conn.putheader("Content-Length", str(len(body or b"")))
    conn.endheaders(body)
    r = conn.getresponse()
    data = r.read()
    if r.status != 200:
        raise PermissionError(r.status)
    return data


def test_the_server_refuses_other_hosts_wrong_tokens_and_clips_it_did_not_choose(table, tmp_path):
    df = read_results(table)
    book = LabelBook(tmp_path / "labels.csv", CLASSES)
    session = LabelSession(choose(df, book, limit=3)[0], book, target=10, minimum=5, command="")
    server = LabelServer(session)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = server.url
    port = server.server_address[1]
    try:
        assert server.server_address[0] == "127.0.0.1"
        assert url.startswith(f"http://127.0.0.1:{port}/") and len(server.token) >= 20
        assert sf.info(__import__("io").BytesIO(urlopen(url + "clip/0.wav"))).frames > 0  # a chosen clip plays
        root = f"http://127.0.0.1:{port}/"
        refused = {
            "no token": root,
            "wrong token": root + "x" * len(server.token) + "/state",
            "token as a query": root + f"state?token={server.token}",
            "a clip not chosen": url + "clip/3.wav",
            "a negative clip": url + "clip/-1.wav",
            "a file path": url + "clip/" + str(EXAMPLES / "1006_IEO_ANG_HI.wav"),
            "a path outside": url + "../../../etc/passwd",
            "an encoded path outside": url + "clip/%2e%2e/%2e%2e/etc/passwd",
            "an unknown page": url + "labels.csv",
        }
        for what, bad in refused.items():
            with pytest.raises(PermissionError) as e:
                urlopen(bad)
            assert e.value.args[0] in (403, 404), what
        for host in ("evil.example", f"evil.example:{port}", f"192.168.1.2:{port}", ""):
            with pytest.raises(PermissionError, match="403"):
                urlopen(url + "state", host=host)  # DNS rebinding: another name for this address
        assert json.loads(urlopen(url + "state", host=f"localhost:{port}"))["remaining"] == 3
        with pytest.raises(PermissionError, match="415"):  # a form post from another site is not JSON
            urlopen(url + "label", method="POST", body=b"id=0&label=angry",
                    headers={"Content-Type": "application/x-www-form-urlencoded"})
        json_type = {"Content-Type": "application/json"}
        for body in (b'{"id": 0, "label": "../../x"}', b'[1]', b'{"id": "../x", "label": "angry"}', b'{',
                     b'{"id": 1e400, "label": "angry"}', b"[" * 4000 + b"]" * 4000):
            with pytest.raises(PermissionError, match="400"):
                urlopen(url + "label", method="POST", body=body, headers=json_type)
        with pytest.raises(PermissionError, match="413"):
            urlopen(url + "label", method="POST", body=b"{" + b" " * 20_000 + b"}", headers=json_type)
        urlopen(url + "finish", method="POST", body=b"{}", headers=json_type)
        with pytest.raises(PermissionError, match="400"):  # a finished session takes no more labels
            urlopen(url + "label", method="POST", body=b'{"id": 0, "label": "angry"}', headers=json_type)
    finally:
        server.shutdown()
        server.server_close()
    assert not (tmp_path / "labels.csv").exists()  # nothing refused was written


def test_a_folder_is_classified_once_across_sessions_and_new_files_with_the_same_statistics(tmp_path):
    """``sercli label FOLDER`` keeps its annotation next to the label file: a second session
    classifies nothing (the table is not even rewritten), a file added later is classified alone,
    with the corpus statistics the folder was first measured with (as ``annotate --resume`` does)."""
    import sercli
    from sercli.labeling import annotation_cache, emotion_table
    from sercli.output import table_metadata

    folder = tmp_path / "calls"
    for i in range(2):  # 24 files: enough for the default model to measure the corpus
        for clip in sorted(EXAMPLES.glob("*.wav")):
            (folder / f"speaker{i}").mkdir(parents=True, exist_ok=True)
            (folder / f"speaker{i}" / clip.name).symlink_to(clip)
    cache = annotation_cache(tmp_path / "labels.csv", folder)
    assert cache == tmp_path / "calls.emotions.parquet" == annotation_cache(tmp_path / "test.csv", folder)
    first = emotion_table(folder, jobs=1, cache=cache)
    meta = table_metadata(cache)
    assert len(first) == 24 and meta["adapt"] == "corpus" and meta["shift"]
    written = cache.stat().st_mtime_ns

    again = emotion_table(folder, jobs=1, cache=cache)
    assert cache.stat().st_mtime_ns == written  # nothing classified again
    pd.testing.assert_frame_equal(again.sort_values("path").reset_index(drop=True),
                                  first.sort_values("path").reset_index(drop=True), check_dtype=False)

    added = folder / "speaker2" / "later.wav"
    added.parent.mkdir()
    added.symlink_to(sorted(EXAMPLES.glob("*.wav"))[0])
    (folder / "speaker1" / sorted(EXAMPLES.glob("*.wav"))[1].name).unlink()
    third = emotion_table(folder, jobs=1, cache=cache)
    assert table_metadata(cache)["shift"] == meta["shift"]  # the folder's first statistics
    assert len(third) == 24 and third["path"].is_unique
    kept = third[~third["path"].str.endswith("later.wav")].set_index("path")
    old = first.set_index("path").loc[kept.index]
    np.testing.assert_array_equal(kept["confidence"].to_numpy(), old["confidence"].to_numpy())  # not redone
    later = third[third["path"].str.endswith("later.wav")].iloc[0]
    twin = sercli.annotate([added], model=third["model"].iloc[0], adapt="corpus", shift=meta["shift"],
                           jobs=1).files.iloc[0]
    assert later["emotion"] == twin["emotion"] and abs(later["confidence"] - twin["confidence"]) < 1e-6


@pytest.mark.parametrize("long_first", [False, True], ids=["short-then-long", "long-then-short"])
def test_the_kept_annotation_queues_every_clip_when_short_and_long_files_come_in_turn(tmp_path, long_first):
    """A long file is kept as its segments, a short one whole, whichever session met it; a file
    that failed is tried again; another model starts afresh; an empty folder is refused."""
    from sercli.labeling import annotation_cache, emotion_table

    folder = tmp_path / "calls"
    folder.mkdir()
    gap = np.zeros(16000, np.float32)
    long = np.concatenate([np.concatenate([speech(None, index=i), gap]) for i in range(12)])  # ~40 s, 12 turns
    clips = sorted(EXAMPLES.glob("*.wav"))[:4]
    cache = annotation_cache(tmp_path / "labels.csv", folder)
    first, second = (["long"], ["short"]) if long_first else (["short"], ["long"])
    for batch in (first, second):
        if "long" in batch:
            write(folder / "call.wav", long, 16000)
        else:
            for clip in clips:
                (folder / clip.name).symlink_to(clip)
            (folder / "broken.wav").write_bytes(b"not audio")
        table = emotion_table(folder, model="mfcc-cnn", jobs=1, cache=cache)
    segments = table[table["path"].str.endswith("call.wav")]
    assert len(segments) > 1 and segments["start_s"].notna().all()
    queued = queue(table)
    assert len(queued) == len(segments) + len(clips)  # every clip, none lost to a missing status
    assert table.loc[table["path"].str.endswith("broken.wav"), "status"].tolist() == ["corrupt"]

    (folder / "broken.wav").write_bytes((EXAMPLES / clips[0].name).read_bytes())  # mended: tried again
    mended = emotion_table(folder, model="mfcc-cnn", jobs=1, cache=cache)
    assert mended.loc[mended["path"].str.endswith("broken.wav"), "status"].tolist() == ["ok"]
    other = emotion_table(folder, model="mel-cnn", jobs=1, cache=cache)
    assert set(other["model"]) == {"mel-cnn"} and len(other) == len(mended)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no audio files"):
        emotion_table(tmp_path / "empty", model="mfcc-cnn", cache=annotation_cache(tmp_path / "labels.csv", folder))


def test_the_browser_is_opened_without_the_token_on_its_command_line(table, tmp_path):
    """Other users of a machine can read every process's command line: the browser gets a
    redirect file only this user can read, deleted when the session ends."""
    seen = tmp_path / "browser.json"
    fake = tmp_path / "browser.py"
    fake.write_text("import json, os, sys, pathlib\n"
                    "page = pathlib.Path(sys.argv[1].removeprefix('file://'))\n"
                    f"json.dump({{'argv': sys.argv, 'mode': os.stat(page).st_mode & 0o777, 'page': page.read_text(), "
                    f"'file': str(page)}}, open({str(seen)!r}, 'w'))\n")
    env = {"DISPLAY": ":0", "BROWSER": f"{sys.executable} {fake} %s"}
    proc, url = start_label(table, tmp_path / "labels.csv", env=env, browser=True)
    try:
        deadline, opened = time.time() + 30, None
        while opened is None and time.time() < deadline:
            try:
                opened = json.loads(seen.read_text())
            except (OSError, ValueError):  # not written yet, or half written
                time.sleep(0.1)
        token = url.rstrip("/").rsplit("/", 1)[-1]
        assert not any(token in arg for arg in opened["argv"])
        assert opened["mode"] == 0o600 and url in opened["page"]
        assert Path(opened["file"]).parent == tmp_path  # next to the label file: a snap browser can read it
        post(url, "finish", {})
        proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert not Path(opened["file"]).exists()
