"""Preparing labels of one's own for ``sercli train --init``: a manifest from class folders, and the
refusals of labels too few to fine-tune on (the fine-tuning itself: ``test_anchored_fine_tuning.py``)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from conftest import EXAMPLES, run_cli

#: The user's own classes, made from SAVEE's (folder name: SAVEE emotion).
CUSTOM = {"angry": "anger", "calm": "neutral", "low": "sadness"}


def _savee(shared: Path) -> pd.DataFrame:
    m = pd.read_csv(shared / "manifest.csv", dtype={"speaker": str})
    m = m[m["corpus"].eq("savee")]
    return m.assign(path=[str(shared / p) for p in m["path"]])


@pytest.fixture(scope="module")
def class_folders(shared, tmp_path_factory) -> Path:
    """A user's folder-per-class layout: 6 SAVEE clips per class of their own, 3 speakers,
    the speaker in the file name (links to the real clips)."""
    root = tmp_path_factory.mktemp("mine") / "labelled"
    m = _savee(shared)
    for folder, emotion in CUSTOM.items():
        (root / folder).mkdir(parents=True)
        rows = m[m["emotion"].eq(emotion) & m["speaker"].isin(["DC", "JE", "JK"])].groupby("speaker").head(2)
        for _, r in rows.iterrows():
            (root / folder / f"{r['speaker']}_{Path(r['path']).name}").symlink_to(r["path"])
    return root


def test_manifest_from_class_folders_takes_labels_from_folders_and_speakers_from_a_regex(class_folders, tmp_path):
    manifest = tmp_path / "mine.csv"
    res = run_cli("manifest", str(class_folders), "--speaker", r"/([A-Z]{2})_[^/]*$", "-o", str(manifest))
    assert res.returncode == 0, res.stderr
    df = pd.read_csv(manifest, dtype={"speaker": str})
    assert sorted(df["emotion"].unique()) == sorted(CUSTOM)
    assert df.groupby("emotion").size().tolist() == [6, 6, 6]
    assert sorted(df["speaker"].unique()) == ["DC", "JE", "JK"]
    assert all(Path(p).parent.name == e for p, e in zip(df["path"], df["emotion"]))


def test_too_few_clips_per_class_or_one_class_is_refused_in_one_sentence(tmp_path):
    clips = sorted(EXAMPLES.glob("*.wav"))  # two clips per class
    manifest = tmp_path / "few.csv"
    pd.DataFrame({"path": [str(p) for p in clips],
                  "emotion": [p.stem.split("_")[2] for p in clips]}).to_csv(manifest, index=False)
    res = run_cli("train", "--init", "whisper-base", "--manifest", str(manifest), "--out", str(tmp_path / "m"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == (
        "sercli: Too few labelled clips to train and validate: every class needs at least 5 (at least one is "
        "kept for validation), and ANG has only 2, DIS has only 2, FEA has only 2, HAP has only 2, NEU has only 2, "
        "SAD has only 2.")
    assert not (tmp_path / "m").exists()
    pd.DataFrame({"path": [str(p) for p in clips], "emotion": "anger"}).to_csv(manifest, index=False)
    res = run_cli("train", "--init", "whisper-base", "--manifest", str(manifest), "--out", str(tmp_path / "m"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines()[-1] == "sercli: The manifest has one class only (anger); a classifier " \
        "needs at least two."


def test_manifest_warns_about_classes_under_the_fine_tuning_minimum(tmp_path):
    for clip in sorted(EXAMPLES.glob("*.wav")):  # two clips per class
        (tmp_path / "mine" / clip.stem.split("_")[2]).mkdir(parents=True, exist_ok=True)
        (tmp_path / "mine" / clip.stem.split("_")[2] / clip.name).symlink_to(clip)
    res = run_cli("manifest", str(tmp_path / "mine"), "-o", str(tmp_path / "mine.csv"))
    assert res.returncode == 0
    assert "warning: ANG has 2, DIS has 2, FEA has 2, HAP has 2, NEU has 2, SAD has 2 clips; fine-tuning needs at " \
        "least 5 per class" in res.stderr
