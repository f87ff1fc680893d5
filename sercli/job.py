"""One annotate call, settled before any file is read (:class:`Job`): the model, the options every
worker gets, and the corpus statistics it adapts to, measured on the windows it classifies."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import numpy as np

from .adaptation import MIN_SEGMENTS, TooFewFiles, check_reference, corpus_shift, resolve_mode, sample_paths
from .discovery import display_path
from .models import DEFAULT_MODEL, Model, load_model
from .results import ChunkResult, Options, run_metadata
from .scheduling import iter_chunks
from .stream import replay

if TYPE_CHECKING:
    from concurrent.futures import Executor

__all__ = ["Job"]


@dataclass
class Job:
    """One annotate call, settled before any file is read: the model, the :class:`~sercli.results.Options`
    every worker gets, and (after :meth:`adapt_to`) how ``adapt`` was settled, in one line
    (``adapted``, empty when the model does not adapt)."""

    model: Model
    options: Options
    auto: bool
    adapted: str = ""
    #: seconds spent measuring the corpus (files classified meanwhile are counted in its results)
    measure_s: float = 0.0
    #: results of files classified while measuring the corpus, not yielded yet
    _ready: list = field(default_factory=list, repr=False)
    _pending: list = field(default_factory=list, repr=False)

    @classmethod
    def create(cls, model: str | Path = DEFAULT_MODEL, *, calibration: str = "off-domain", adapt: str = "auto",
               previous_adapt: str | None = None, hop_s: float | None = None, segments: bool = False,
               windows: bool = False, vad: str = "auto", classes: Sequence[str] | None = None) -> "Job":
        """Load ``model`` and settle the options. ``adapt="auto"`` takes ``previous_adapt`` (a run
        being resumed) or what the model's card says suits it. ``classes``: answer among these of
        the model's classes only (:meth:`~sercli.models.Model.restricted`).

        Raises :class:`~sercli.models.ModelNotFound` for an unknown model and ``ValueError``
        (one sentence) for an unusable option, a class the model does not have, or ``adapt="corpus"``
        with a model that cannot adapt.
        """
        mdl = load_model(model, calibration=calibration).restricted(classes)
        mode = resolve_mode(adapt, mdl.card, previous=previous_adapt)
        if mode == "corpus" and mdl.head is None:  # an encoder model adapts its embeddings: no reference needed
            check_reference(mdl.card, mdl.params.n_mels)
        options = Options.for_model(model, mdl, hop_s=hop_s, segments=segments, windows=windows, vad=vad,
                                    adapt=mode)
        return cls(mdl, options, auto=adapt == "auto")

    def adapt_to(self, paths: Sequence[str], executor_factory: Callable[[], "Executor"], *,
                 shift: Sequence[float] | None = None) -> None:
        """With ``adapt="corpus"``: adapt to the corpus of ``paths``, with ``shift`` (statistics measured
        before, e.g. by the run being resumed) or else measured now on a sample of them
        (:data:`~sercli.adaptation.SAMPLE_FILES`), through the run's executor. An encoder model
        measures the embeddings of exactly the windows it classifies (speech regions of long
        recordings included) and keeps them: :meth:`chunks` classifies those files without
        encoding them again. Under ``auto``, fewer than :data:`~sercli.adaptation.MIN_SEGMENTS`
        speech segments (files, or speech regions of long recordings) mean no adaptation; asked
        for explicitly, they raise :class:`~sercli.adaptation.TooFewFiles`."""
        if self.options.adapt != "corpus":
            return
        t0 = time.perf_counter()
        if shift is not None:
            if len(shift) != self.model.adapt_size:
                raise ValueError(f"the shift has {len(shift)} values; the model {self.model.name!r} takes "
                                 f"{self.model.adapt_size}.")
            self._set_shift(shift)
            self.adapted = "corpus, the statistics of the resumed run"
            return
        try:
            if self.model.head is None:  # a network on log-mel input: the corpus's mean spectral envelope
                self._set_shift(corpus_shift(paths, self.model, executor_factory))
            else:
                self._measure(paths, executor_factory)
        except TooFewFiles:
            self.measure_s = time.perf_counter() - t0
            if not self.auto:
                raise
            self.options = replace(self.options, adapt="none")
            self.adapted = f"none: fewer than {MIN_SEGMENTS} speech segments to stand for a corpus"
            self._ready += [replay(p, self.model, self.options) for p in self._pending if p.complete]
            return
        finally:
            self._pending = []
        self.measure_s = time.perf_counter() - t0
        self.adapted = f"corpus, measured in {self.measure_s:.1f} s"

    def _set_shift(self, shift: Sequence[float]) -> None:
        self.options = replace(self.options, shift=tuple(round(float(v), 5) for v in shift))

    def _measure(self, paths: Sequence[str], executor_factory: Callable[[], "Executor"]) -> None:
        """The corpus statistics of an encoder model: the mean and spread of the embeddings of the
        windows with speech of a sample of ``paths``, as the main pass classifies them; the sample's
        rows are kept (:attr:`_ready`), classified with the statistics."""
        sample = sample_paths(paths)
        for res in iter_chunks(sample, replace(self.options, measure=True), executor_factory=executor_factory):
            self._ready.append(ChunkResult(rows=res.rows, stage_s=res.stage_s,  # files that failed: final rows
                                           audio_s=float(np.nansum([r["duration_s"] for r in res.rows]))))
            self._pending += res.pending
        segments = sum(p.segments for p in self._pending)
        if segments < MIN_SEGMENTS:
            raise TooFewFiles(f"adapting to a corpus needs at least {MIN_SEGMENTS} speech segments (files, or speech "
                              f"regions of long recordings), and {len(sample)} files gave {segments}: add files "
                              "recorded the same way, or run without --adapt.")
        emb = np.concatenate([p.speech() for p in self._pending]).astype(np.float64)
        mean = emb.mean(axis=0)
        self._set_shift(np.concatenate([mean, np.sqrt(np.maximum((emb ** 2).mean(axis=0) - mean ** 2, 0)) + 1e-5]))
        self._ready += [replay(p, self.model, self.options) for p in self._pending if p.complete]

    def metadata(self, *, tables: dict[str, Path] | None = None, include: Iterable[str] = (),
                 exclude: Iterable[str] = ()) -> dict:
        """The run's provenance, stored with its tables (:func:`~sercli.results.run_metadata`)."""
        return run_metadata(self.model, self.options, tables=tables, include=include, exclude=exclude)

    def chunks(self, paths: list[str], executor_factory: Callable[[], "Executor"]) -> Iterator[ChunkResult]:
        """The results of ``paths``, chunk by chunk as workers finish them (:func:`~sercli.scheduling.iter_chunks`);
        first those of the files classified while measuring the corpus (:meth:`adapt_to`)."""
        wanted = {display_path(p) for p in paths}
        ready, self._ready = self._ready, []
        done = set()
        for res in ready:
            rows = [r for r in res.rows if r["path"] in wanted]
            done |= {r["path"] for r in rows}
            if rows:
                yield replace(res, rows=rows, segments=[x for x in res.segments if x["path"] in wanted],
                              windows=[x for x in res.windows if x["path"] in wanted])
        yield from iter_chunks([p for p in paths if display_path(p) not in done], self.options,
                               executor_factory=executor_factory)
