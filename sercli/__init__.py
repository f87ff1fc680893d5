"""sercli: speech emotion recognition for folders of recorded speech.

>>> import sercli
>>> sercli.EMOTIONS
('anger', 'disgust', 'fear', 'happiness', 'neutral', 'sadness', 'surprise')

The library calls return pandas DataFrames with the same columns the CLI writes:
``annotate`` (one row per file), ``annotate_segments`` (one row per window),
``read_results`` and ``summarize``. Heavy modules load on first use, so
``import sercli`` is cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = [
    "EMOTIONS",
    "__version__",
    "annotate",
    "annotate_segments",
    "available_models",
    "evaluate",
    "load_model",
    "read_results",
    "summarize",
]

EMOTIONS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")

_LAZY = {
    "annotate": "pipeline",
    "annotate_segments": "pipeline",
    "available_models": "models",
    "load_model": "models",
    "evaluate": "evaluation",
    "read_results": "reports",
    "summarize": "reports",
}

if TYPE_CHECKING:
    from .evaluation import evaluate
    from .models import available_models, load_model
    from .pipeline import annotate, annotate_segments
    from .reports import read_results, summarize


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'sercli' has no attribute {name!r}")
