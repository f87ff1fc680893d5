"""Corpus readers: labels parsed from the original file names, on the real corpora."""

from __future__ import annotations

import pandas as pd
import pytest

from sercli.training.corpora import EMOTIONS, read_corpus, read_manifest


@pytest.mark.parametrize("corpus", ["crema-d", "ravdess", "tess", "savee"])
def test_reader_labels_match_the_manifest(shared, corpus):
    manifest = pd.read_csv(shared / "manifest.csv", dtype={"speaker": str})
    expected = manifest[manifest["corpus"] == corpus].set_index("path")
    df = read_corpus(shared / corpus, corpus)
    df["rel"] = df["path"].map(lambda p: p.split("/corpora/", 1)[1])
    df = df.set_index("rel")
    assert set(df.index) == set(expected.index)
    assert (df["emotion"] == expected.loc[df.index, "emotion"]).all()
    assert (df["speaker"] == expected.loc[df.index, "speaker"].astype(str)).all()
    assert (df["source_label"] == expected.loc[df.index, "source_label"].astype(str)).all()


def test_reader_skips_ravdess_calm_and_foreign_names(tmp_path):
    for name in ["03-01-02-01-01-01-01.wav", "03-01-05-01-01-01-01.wav", "README.wav", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    df = read_corpus(tmp_path, "ravdess")
    assert df["emotion"].tolist() == ["anger"]
    assert df["speaker"].tolist() == ["1"]


def test_savee_original_layout_takes_speaker_from_folder(tmp_path):
    (tmp_path / "KL").mkdir()
    (tmp_path / "KL" / "su07.wav").write_bytes(b"")
    df = read_corpus(tmp_path, "savee")
    assert df[["speaker", "emotion"]].values.tolist() == [["KL", "surprise"]]


def test_generic_manifest_resolves_relative_paths_and_keeps_labels_of_its_own(tmp_path):
    (tmp_path / "m.csv").write_text("path,emotion\na.wav,anger\nb.wav, boredom\nc.wav,\n")
    df = read_manifest(tmp_path / "m.csv")
    assert df["path"].iloc[0] == str(tmp_path / "a.wav")
    assert df["emotion"].tolist()[:2] == ["anger", "boredom"] and df["emotion"].isna().iloc[2]


def test_manifest_command_writes_a_manifest(shared, tmp_path):
    from conftest import run_cli

    out = tmp_path / "savee.csv"
    res = run_cli("manifest", str(shared / "savee"), "--format", "savee", "-o", str(out))
    assert res.returncode == 0, res.stderr
    df = pd.read_csv(out)
    assert len(df) == 480 and set(df["emotion"]) == set(EMOTIONS)
