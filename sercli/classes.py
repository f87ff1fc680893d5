"""Class names: the other spellings people use for the shipped classes, and matching a user's
labels to a model's classes (``angry`` -> ``anger``). Used by ``annotate --classes``,
``summarize --truth`` and fine-tuning, so all three read a label the same way."""

from __future__ import annotations

from typing import Iterable

__all__ = ["LABEL_ALIASES", "match_class", "restrict_classes"]

#: Common other spellings of the shipped classes (lower case).
LABEL_ALIASES = {"angry": "anger", "anger": "anger", "disgusted": "disgust", "disgust": "disgust",
                 "fearful": "fear", "afraid": "fear", "scared": "fear", "fear": "fear", "happy": "happiness",
                 "joy": "happiness", "happiness": "happiness", "neutral": "neutral", "sad": "sadness",
                 "sadness": "sadness", "surprised": "surprise", "surprise": "surprise"}


def match_class(label: str, classes: Iterable[str]) -> str | None:
    """The class of ``classes`` that ``label`` names: itself, itself in another case, or a common
    spelling (:data:`LABEL_ALIASES`); ``None`` when none does.

    >>> match_class("Angry", ("anger", "calm")), match_class("calm", ("anger",))
    ('anger', None)
    """
    classes = tuple(classes)
    if label in classes:
        return label
    key = label.strip().lower()
    by_lower = {c.lower(): c for c in classes}
    return by_lower.get(key) or (LABEL_ALIASES[key] if LABEL_ALIASES.get(key) in classes else None)


def restrict_classes(wanted: Iterable[str], classes: Iterable[str], *, model: str) -> tuple[str, ...]:
    """The model's classes that ``wanted`` names (each at most once, in the model's order). Raises
    ``ValueError`` (one sentence) for a name that is none of them, or for fewer than two.

    >>> restrict_classes(["sad", "Angry"], ("anger", "fear", "sadness"), model="m")
    ('anger', 'sadness')
    """
    classes = tuple(classes)
    wanted = [w.strip() for w in wanted if w.strip()]
    unknown = [w for w in wanted if match_class(w, classes) is None]
    if unknown:
        raise ValueError(f"the model {model!r} has no class {', '.join(map(repr, unknown))} (it has "
                         f"{', '.join(classes)}); to learn classes of your own, label clips with `sercli label` "
                         "and fine-tune with `sercli train --init`.")
    chosen = {match_class(w, classes) for w in wanted}
    if len(chosen) < 2:
        raise ValueError("--classes needs at least two of the model's classes.")
    return tuple(c for c in classes if c in chosen)
