"""sercli: speech emotion recognition for folders of recorded speech.

>>> import sercli
>>> sercli.EMOTIONS
('anger', 'disgust', 'fear', 'happiness', 'neutral', 'sadness', 'surprise')

``annotate`` returns an :class:`~sercli.pipeline.Annotation`: pandas DataFrames with the
same columns the CLI writes (``files``, one row per file; ``segments``, one row per speech
region of long files; ``windows``, one row per window)
and the run's ``info``. ``read_results`` and ``summarize`` work on those tables. Heavy modules load on first use, so
``import sercli`` is cheap.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

__version__ = "0.1.0"

__all__ = [
    "EMOTIONS",
    "__version__",
    "Annotation",
    "FileResult",
    "Run",
    "RunInfo",
    "annotate",
    "available_models",
    "evaluate",
    "load_model",
    "moments",
    "read_results",
    "summarize",
]

EMOTIONS = ("anger", "disgust", "fear", "happiness", "neutral", "sadness", "surprise")
#: The model ``annotate`` uses unless told otherwise.
DEFAULT_MODEL = "whisper-base"

_LAZY = {
    "Annotation": "pipeline",
    "FileResult": "pipeline",
    "Run": "pipeline",
    "RunInfo": "pipeline",
    "annotate": "pipeline",
    "available_models": "models",
    "load_model": "models",
    "moments": "timeline",
    "evaluate": "evaluation",
    "read_results": "reports",
    "summarize": "reports",
}

if TYPE_CHECKING:
    from .evaluation import evaluate
    from .models import available_models, load_model
    from .pipeline import Annotation, FileResult, Run, RunInfo, annotate
    from .reports import read_results, summarize
    from .timeline import moments


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'sercli' has no attribute {name!r}")
