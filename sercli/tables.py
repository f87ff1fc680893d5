"""The tables annotate writes: their columns, and the provenance stored with them."""

from __future__ import annotations

from typing import Iterable

from . import EMOTIONS

__all__ = ["COLUMNS", "PROB_COLUMNS", "SEGMENT_COLUMNS", "WINDOW_COLUMNS", "table_columns"]


def table_columns(classes: Iterable[str] = EMOTIONS) -> dict[str, list[str]]:
    """Output columns, in order, of the ``files``, ``segments`` and ``windows`` tables of a
    model with ``classes``: one ``prob_<class>`` column per class of the model.

    >>> table_columns(["calm", "tense"])["segments"]
    ['path', 'start_s', 'end_s', 'emotion', 'confidence', 'prob_calm', 'prob_tense', 'windows', 'model']
    """
    probs = [f"prob_{c}" for c in classes]
    return {
        "files": ["path", "status", "error", "emotion", "confidence", *probs,
                  "duration_s", "sample_rate", "channels", "segments", "windows", "flags", "model"],
        "segments": ["path", "start_s", "end_s", "emotion", "confidence", *probs, "windows", "model"],
        "windows": ["path", "start_s", "end_s", "silent", "emotion", "confidence", *probs, "model"],
    }


#: Columns of the tables of a model with the seven shipped classes: file rows; segment rows
#: (one per speech region of a long file, one per short file); window rows.
COLUMNS, SEGMENT_COLUMNS, WINDOW_COLUMNS = table_columns().values()


PROB_COLUMNS = [f"prob_{e}" for e in EMOTIONS]
