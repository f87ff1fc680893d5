"""Decoding: a span of a long file read by seeking is that span of the whole file."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest

from conftest import speech, write
from sercli.audio import read_span

LOSSY = {"opus": ["-c:a", "libopus", "-ar", "48000"], "ogg": ["-c:a", "libvorbis"], "m4a": ["-c:a", "aac"],
         "mp3": [], "vbr.mp3": ["-q:a", "4"]}


@pytest.mark.parametrize("fmt", ["wav", "flac", *LOSSY])
def test_a_span_read_by_seeking_is_that_span_of_the_whole_file(fmt, tmp_path):
    """``read_span`` seeks to its start (a labelled minute near the end of a long file must not
    decode the hours before it); the samples must be the ones a decode from the start gives."""
    if fmt in LOSSY and shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    path = write(tmp_path / "long.wav", speech(40.0, sr=44100), 44100)
    if fmt == "flac":
        path = write(tmp_path / "long.flac", speech(40.0, sr=44100), 44100)
    elif fmt in LOSSY:
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), *LOSSY[fmt], str(tmp_path / f"long.{fmt}")],
                       check=True)
        path = tmp_path / f"long.{fmt}"
    whole, sr = read_span(path)
    for start_s, end_s in [(0.0, 2.0), (12.3456, 15.0), (23.5, 26.5), (37.0, None)]:
        span, _ = read_span(path, start_s, end_s)
        want = whole[round(start_s * sr): None if end_s is None else round(end_s * sr)]
        assert len(span) == len(want)
        # the resampler starts afresh at the seek: its first and last milliseconds may differ
        inner = slice(160, len(want) - 160)
        tolerance = 0.02 if fmt == "m4a" else 0.005 if fmt == "vbr.mp3" else 1e-6  # measured: 0.016, 0.0023
        np.testing.assert_allclose(span[inner], want[inner], atol=tolerance)


@pytest.mark.parametrize("fmt", ["wav", "m4a"])
def test_a_span_past_the_end_is_empty(fmt, tmp_path):
    if fmt == "m4a" and shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    path = write(tmp_path / "short.wav", speech(4.0), 16000)
    if fmt == "m4a":
        subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-c:a", "aac", str(tmp_path / "short.m4a")], check=True)
        path = tmp_path / "short.m4a"
    span, _ = read_span(path, 10.0, 12.0)
    assert len(span) == 0
