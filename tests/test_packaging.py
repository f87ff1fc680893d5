"""The wheel ships the models, so an installed sercli works from any directory."""

from __future__ import annotations

import subprocess
import sys
import zipfile

from conftest import ROOT


def test_wheel_contains_the_shipped_models(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(ROOT)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("sercli-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.parent.name for p in (ROOT / "models").glob("*/model.tflite"))
    assert shipped == ["mel-cnn", "mfcc-cnn", "mfcc-crnn"]
    for name in shipped:
        for f in ("model.tflite", "model.keras", "params.json", "card.json", "CARD.md"):
            assert f"sercli/_models/{name}/{f}" in names, f
    assert not any("checkpoint" in n for n in names)


def test_models_are_found_outside_the_checkout(tmp_path):
    res = subprocess.run([sys.executable, "-m", "sercli", "models"], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for name in ("mel-cnn", "mfcc-cnn", "mfcc-crnn"):
        assert name in res.stdout
