"""The wheel ships the models, so an installed sercli works from any directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile

from conftest import ROOT


def test_wheel_contains_the_shipped_models(tmp_path):
    # built from a copy without build artefacts, as from a fresh clone: a checkout's build/ folder
    # keeps files of earlier builds and would hide a package missing from pyproject.toml
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns("build", "*.egg-info", ".git", ".venv", "runs",
                                                             "__pycache__", "checkpoint"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w",
                    str(tmp_path), str(src)], check=True, capture_output=True)
    wheel = next(tmp_path.glob("sercli-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = sorted(p.parent.name for p in (ROOT / "models").glob("*/model.tflite"))
    assert shipped == ["mel-cnn", "mfcc-cnn", "mfcc-crnn", "whisper-base"]
    for name in shipped:
        source = ("head.npz", "LICENSE.whisper") if name.startswith("whisper") else ("model.keras",)
        for f in ("model.tflite", "params.json", "card.json", "CARD.md", *source):
            assert f"sercli/_models/{name}/{f}" in names, f
    assert not any("checkpoint" in n for n in names)
    code = [f"sercli/{p.relative_to(ROOT / 'sercli').as_posix()}" for p in (ROOT / "sercli").rglob("*")
            if p.suffix in (".py", ".html") and "__pycache__" not in p.parts]
    assert [f for f in code if f not in names] == []  # every module and the label page, subpackages too
    assert wheel.stat().st_size < 90 * 2**20  # PyPI's file limit is 100 MB


def test_models_are_found_outside_the_checkout(tmp_path):
    res = subprocess.run([sys.executable, "-m", "sercli", "models"], cwd=tmp_path, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    for name in ("mel-cnn", "mfcc-cnn", "mfcc-crnn", "whisper-base"):
        assert name in res.stdout
