"""Unlabelled corpus adaptation (``--adapt corpus``). An encoder model standardises its window
embeddings with the corpus's own mean and spread, measured on the windows it classifies
(:meth:`sercli.job.Job.adapt_to`). A network on log-mel input instead measures, before
annotating, the mean spectral envelope of the user's corpus and shifts every log-mel frame so
that it matches the envelope of the corpora the model was trained on (this module).

The envelope is the mean over speech frames (within :data:`SPEECH_MARGIN_DB` of the file's
loudest frame) of the log-mel spectrum with each frame's level removed, so loudness does not
count, only the shape of the spectrum: microphone, channel, room, language and voices. The
model's envelope (its *reference*) is stored in its card at training time. The corpus's is
measured on up to :data:`SAMPLE_FILES` files (the first :data:`SAMPLE_SECONDS` of each), so
the first pass costs seconds, not a second annotation.

Statistics are taken over the whole corpus, never per speaker or folder: a speaker's mean
removes their emotion when they are angry in most of their clips (``docs/generalisation.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import numpy as np

from .features import FeatureParams, frame_db, log_mel
from .models import ADAPTATION_KEY as CARD_KEY
from .workers import local_executor

if TYPE_CHECKING:
    from concurrent.futures import Executor

    from .models import Model

__all__ = ["ADAPT_CHOICES", "ADAPT_MODES", "CARD_KEY", "MAX_SHIFT_DB", "MIN_FILES", "MIN_SEGMENTS", "SAMPLE_FILES",
           "SAMPLE_SECONDS", "Envelope", "TooFewFiles", "check_reference", "corpus_shift", "measure_envelope",
           "reference_entry", "reference_envelope", "resolve_mode", "sample_paths"]

#: ``--adapt`` choices: no adaptation, or one shift for the whole input ("auto": what the model's
#: card says suits it, :func:`resolve_mode`, falling back to "none" for fewer than MIN_FILES files).
ADAPT_MODES = ("none", "corpus")
ADAPT_CHOICES = ("auto", *ADAPT_MODES)
#: Frames within this many dB of a file's loudest frame count as speech.
SPEECH_MARGIN_DB = 35.0
#: Files measured in the first pass (a fixed random sample of larger inputs) ...
SAMPLE_FILES = 300
#: ... and seconds read from each.
SAMPLE_SECONDS = 60.0
#: Fewer readable files than this are too few to stand for a corpus (a network on log-mel input) ...
MIN_FILES = 20
#: ... and fewer speech segments than this (files, or speech regions of long recordings: an
#: encoder model measures the windows it classifies, so one long interview can be a corpus).
MIN_SEGMENTS = 20
#: The shift is kept within ± this many dB: the held-out corpora of the leave-one-corpus-out
#: protocol needed up to 15 dB; a band the corpus's channel cuts off (a telephone line above
#: 3.4 kHz) asks for 35 dB, which would lift noise, not speech.
MAX_SHIFT_DB = 20.0


@dataclass
class Envelope:
    """Running sum of level-removed log-mel speech frames: ``total`` ``(n_mels,)``, ``frames``, ``files``."""

    total: np.ndarray
    frames: int = 0
    files: int = 0

    @classmethod
    def empty(cls, n_mels: int) -> "Envelope":
        """An envelope of no frames, of ``n_mels`` bands."""
        return cls(np.zeros(n_mels, np.float64))

    def add(self, mel_db: np.ndarray, level_db: np.ndarray) -> None:
        """Add one file's log-mel ``(n_mels, t)`` and frame levels ``(t,)`` (dB)."""
        if not len(level_db):
            return
        speech = level_db >= level_db.max() - SPEECH_MARGIN_DB
        frames = mel_db[:, speech].astype(np.float64)
        self.total += (frames - frames.mean(axis=0)).sum(axis=1)
        self.frames += int(speech.sum())
        self.files += 1

    def merge(self, other: "Envelope") -> "Envelope":
        """The envelope of both sets of frames."""
        return Envelope(self.total + other.total, self.frames + other.frames, self.files + other.files)

    @property
    def mean(self) -> np.ndarray:
        """The mean envelope ``(n_mels,)`` in dB."""
        return self.total / max(self.frames, 1)


def resolve_mode(adapt: str, card: dict, *, previous: str | None = None) -> str:
    """The :data:`ADAPT_MODES` entry an ``--adapt`` choice means for a model: ``auto`` is the run
    being resumed's mode (``previous``) or else the card's ``adapt_default`` ("corpus" for an
    encoder model whose head was trained on per-corpus standardised embeddings, else "none").
    Raises ``ValueError`` (one sentence) for an unknown choice."""
    if adapt not in ADAPT_CHOICES:
        raise ValueError(f"adapt must be {', '.join(ADAPT_CHOICES)}, not {adapt!r}.")
    return adapt if adapt != "auto" else previous or card.get("adapt_default", "none")


def reference_envelope(card: dict) -> np.ndarray | None:
    """The training corpora's envelope stored in a model card, or ``None``."""
    ref = (card.get(CARD_KEY) or {}).get("reference_envelope")
    return None if ref is None else np.asarray(ref, np.float64)


def check_reference(card: dict, n_mels: int) -> np.ndarray:
    """The card's reference envelope; raises ``ValueError`` (one sentence) when it has none."""
    ref = reference_envelope(card)
    if ref is None or ref.shape != (n_mels,):
        raise ValueError(f"the model {card.get('name', '')!r} has no reference spectrum to adapt to (models "
                         "trained by this version of sercli have one), so it cannot adapt to a corpus.")
    return ref


def _file_envelope(path: str, params: FeatureParams) -> Envelope | None:
    """The envelope of a file's first :data:`SAMPLE_SECONDS`; ``None`` when it cannot be read or is silent."""
    y = _first_block(path, params)
    if y is None:
        return None
    env = Envelope.empty(params.n_mels)
    env.add(log_mel(y, params), frame_db(y, params))
    return env


def measure_envelope(paths: Sequence[str | Path], params: FeatureParams,
                     executor_factory: Callable[[], Executor] | None = None) -> Envelope:
    """The envelope of up to :data:`SAMPLE_FILES` of ``paths`` (a fixed random sample of more),
    measured by the run's executor (default: one local process); unreadable and silent files
    are left out."""
    paths = sample_paths(paths)
    total = Envelope.empty(params.n_mels)
    executor = executor_factory() if executor_factory is not None else local_executor(1)
    for part in executor.map(_file_envelope, paths, [params] * len(paths)):
        if part is not None:
            total = total.merge(part)
    return total


class TooFewFiles(ValueError):
    """Fewer than :data:`MIN_FILES` readable files with speech: too few to stand for a corpus."""


def corpus_shift(paths: Sequence[str | Path], model: "Model",
                 executor_factory: Callable[[], Executor] | None = None) -> np.ndarray:
    """What ``--adapt corpus`` applies for a network on log-mel input, measured on ``paths``: the
    per-band shift ``(n_mels,)`` in dB that moves their envelope onto the model's reference,
    within ±:data:`MAX_SHIFT_DB`. (An encoder model measures its embeddings instead, as it
    classifies: :meth:`sercli.job.Job.adapt_to`.) Raises :class:`TooFewFiles` (one sentence)."""
    reference = check_reference(model.card, model.params.n_mels)
    env = measure_envelope(paths, model.params, executor_factory) if len(paths) >= MIN_FILES else \
        Envelope.empty(model.params.n_mels)
    if env.files < MIN_FILES:
        raise TooFewFiles(f"adapting to a corpus needs at least {MIN_FILES} readable audio files with speech, and "
                         f"{env.files} of the {len(paths)} files found have it: add files recorded the same way, "
                         "or run without --adapt.")
    return np.clip(reference - env.mean, -MAX_SHIFT_DB, MAX_SHIFT_DB)


def sample_paths(paths: Sequence[str | Path], seed: int = 0) -> list[str]:
    """Up to :data:`SAMPLE_FILES` of ``paths``: all of them, or a fixed random sample."""
    paths = sorted(map(str, paths))
    if len(paths) > SAMPLE_FILES:
        paths = sorted(np.random.default_rng(seed).choice(paths, SAMPLE_FILES, replace=False))
    return paths


def _first_block(path: str, params: FeatureParams) -> np.ndarray | None:
    """The first :data:`SAMPLE_SECONDS` of a file; ``None`` when it cannot be read or is silent."""
    from .audio import open_audio

    try:
        blocks = open_audio(path, sample_rate=params.sample_rate, block_s=SAMPLE_SECONDS).blocks()
        try:
            y = next(blocks, np.zeros(0, np.float32))
        finally:
            blocks.close()  # stops a decoder process
    except Exception:  # an unreadable file is the annotate pass's to report; here it is only not measured
        return None
    if len(y) < params.n_fft or frame_db(y, params).max() < params.silence_db:
        return None
    return y


def reference_entry(features: Iterable[tuple[np.ndarray, np.ndarray]], n_mels: int) -> dict:
    """The card entry (:data:`CARD_KEY`) of the training files' envelope, from each file's
    ``(log_mel, frame_db)``."""
    env = Envelope.empty(n_mels)
    for mel, level in features:
        env.add(np.asarray(mel, np.float32), np.asarray(level, np.float32))
    return {"reference_envelope": [round(float(v), 4) for v in env.mean], "files": env.files,
            "speech_frames": env.frames, "speech_margin_db": SPEECH_MARGIN_DB}
