"""Finding audio files: paths, folders (recursive), ``-`` for a path list on stdin, globs."""

from __future__ import annotations

import fnmatch
import os
import sys
from pathlib import Path
from typing import Iterable, TextIO

from .audio import AUDIO_EXTENSIONS

__all__ = ["discover", "display_path", "is_audio", "walk"]


def is_audio(path: str) -> bool:
    """True if the extension (any case) is one ``sercli`` reads."""
    return os.path.splitext(path)[1].lower() in AUDIO_EXTENSIONS


def display_path(path: str) -> str:
    """``path`` as valid UTF-8 text: undecodable bytes become ``\\xNN`` escapes.

    >>> display_path("caf\\udce9.wav")
    'caf\\\\xe9.wav'
    """
    return os.fsencode(path).decode("utf-8", errors="backslashreplace")


def _matches(path: str, patterns: Iterable[str]) -> bool:
    name = os.path.basename(path)
    return any(fnmatch.fnmatch(path, p) or fnmatch.fnmatch(name, p) for p in patterns)


def walk(root: str | Path) -> Iterable[str]:
    """Files under ``root``, following directory links, each real directory once (no loops)."""
    seen: set[tuple[int, int]] = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        if (st.st_dev, st.st_ino) in seen:
            dirnames[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        dirnames.sort()
        for name in sorted(filenames):
            yield os.path.join(dirpath, name)


def discover(
    inputs: Iterable[str | Path],
    *,
    include: Iterable[str] = (),
    exclude: Iterable[str] = (),
    stdin: TextIO | None = None,
) -> list[str]:
    """Audio files named by ``inputs`` (files, folders searched recursively, ``-`` = stdin).

    Every file appears once (by normalised absolute path), in the order found; folders
    are walked in sorted order. A file named explicitly is kept whatever its extension
    or existence (it gets a row saying what is wrong); files found in folders must have
    an audio extension. ``include``/``exclude`` are glob patterns on the path or name.
    """
    include, exclude = list(include), list(exclude)
    seen: set[str] = set()
    out: list[str] = []

    def add(path: str, explicit: bool) -> None:
        key = os.path.abspath(path)
        if key in seen:
            return
        if not explicit and not is_audio(path):
            return
        if include and not _matches(path, include):
            return
        if exclude and _matches(path, exclude):
            return
        seen.add(key)
        out.append(key)

    for item in inputs:
        item = str(item)
        if item == "-":
            stream = stdin or sys.stdin
            for line in stream:
                line = line.rstrip("\r\n")
                if line:
                    _add_named(line, add)
        else:
            _add_named(item, add)
    return out


def _add_named(item: str, add) -> None:
    if os.path.isdir(item):
        for path in walk(item):
            add(path, False)
    else:
        add(item, True)
