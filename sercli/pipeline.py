"""The annotate pipeline's public face: :func:`annotate` (files, folders or an array in,
DataFrames out) and :class:`Job`, the settled plan of one annotate call that the CLI
(``sercli annotate`` writes its rows to a file as they come, :mod:`sercli.batch`) and the
library share, so both take the same path.

Where the work happens: :mod:`sercli.stream` classifies a chunk of files in a worker,
:mod:`sercli.scheduling` runs chunks over local processes (:mod:`sercli.workers`) or a Dask
cluster and isolates crashes, :mod:`sercli.results` holds the options and the rows, and
:mod:`sercli.tables` the columns.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import numpy as np

from .adaptation import MIN_FILES, TooFewFiles, check_reference, corpus_shift, resolve_mode
from .audio import ArrayAudio
from .discovery import discover
from .models import DEFAULT_MODEL, Model, load_model
from .results import ChunkResult, Options, run_metadata
from .scheduling import iter_chunks
from .stream import annotate_chunk
from .tables import table_columns
from .workers import LocalExecutors, resolve_jobs

if TYPE_CHECKING:
    from concurrent.futures import Executor

    import pandas as pd

__all__ = ["Annotation", "Job", "annotate", "with_corpus_shift"]


@dataclass
class Annotation:
    """What :func:`annotate` returns.

    Columns are :func:`~sercli.tables.table_columns` of the model's classes (:data:`~sercli.tables.COLUMNS`
    etc. for the shipped seven). ``files``: one row per input, sorted by path. ``segments``: one row
    per speech region of long files and one per short file (empty unless ``segments=True``).
    ``windows``: one row per classified window (empty unless ``windows=True``). ``info``: the
    run's provenance (:func:`~sercli.results.run_metadata`): model and its hash, feature
    parameters, ``hop_s``, ``vad``, ``adapt`` and the sercli version.
    """

    files: "pd.DataFrame"
    segments: "pd.DataFrame"
    windows: "pd.DataFrame"
    info: dict


@dataclass
class Job:
    """One annotate call, settled before any file is read: the model, the :class:`~sercli.results.Options`
    every worker gets, and (after :meth:`adapt_to`) how ``adapt`` was settled, in one line
    (``adapted``, empty when the model does not adapt)."""

    model: Model
    options: Options
    auto: bool
    adapted: str = ""

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

    def adapt_to(self, paths: Sequence[str], *, jobs: int, shift: Sequence[float] | None = None) -> None:
        """With ``adapt="corpus"``: adapt to the corpus of ``paths``, with ``shift`` (statistics measured
        before, e.g. by the run being resumed) or else measured now. Under ``auto``, fewer than
        :data:`~sercli.adaptation.MIN_FILES` files with speech mean no adaptation; asked for
        explicitly, they raise :class:`~sercli.adaptation.TooFewFiles`."""
        if self.options.adapt != "corpus":
            return
        t0 = time.perf_counter()
        try:
            self.options = with_corpus_shift(self.options, self.model, paths, jobs=jobs, shift=shift)
        except TooFewFiles:
            if not self.auto:
                raise
            self.options = replace(self.options, adapt="none")
            self.adapted = f"none: fewer than {MIN_FILES} files with speech to stand for a corpus"
            return
        self.adapted = ("corpus, the statistics of the resumed run" if shift is not None else
                        f"corpus, measured in {time.perf_counter() - t0:.1f} s (not in the wall time)")

    def metadata(self, *, tables: dict[str, Path] | None = None, include: Iterable[str] = (),
                 exclude: Iterable[str] = ()) -> dict:
        """The run's provenance, stored with its tables (:func:`~sercli.results.run_metadata`)."""
        return run_metadata(self.model, self.options, tables=tables, include=include, exclude=exclude)

    def chunks(self, paths: list[str], executor_factory: Callable[[], "Executor"]) -> Iterator[ChunkResult]:
        """The results of ``paths``, chunk by chunk as workers finish them (:func:`~sercli.scheduling.iter_chunks`)."""
        return iter_chunks(paths, self.options, executor_factory=executor_factory)


def with_corpus_shift(options: Options, model: Model, paths: Sequence[str], *, jobs: int,
                      shift: Sequence[float] | None = None) -> Options:
    """``options`` set to adapt to the corpus of ``paths``: with ``shift`` (one measured before,
    e.g. by the run being resumed), or else the shift measured on ``paths``
    (:func:`~sercli.adaptation.corpus_shift`)."""
    if shift is None:
        shift = corpus_shift(paths, model, jobs=jobs)
    elif len(shift) != model.adapt_size:
        raise ValueError(f"the shift has {len(shift)} values; the model {model.name!r} takes {model.adapt_size}.")
    return replace(options, adapt="corpus", shift=tuple(round(float(v), 4) for v in shift))


def annotate(
    inputs: "str | Path | np.ndarray | Iterable[str | Path]",
    *,
    sample_rate: int | None = None,
    model: str = DEFAULT_MODEL,
    segments: bool = False,
    windows: bool = False,
    vad: str = "auto",
    jobs: int = -1,
    hop_s: float | None = None,
    calibration: str = "off-domain",
    adapt: str = "auto",
    shift: Sequence[float] | None = None,
    include: Iterable[str] | None = None,
    exclude: Iterable[str] | None = None,
    classes: Sequence[str] | None = None,
) -> Annotation:
    """Classify audio: one file, a list, folders (searched recursively), or an array.

    A NumPy array (``(n,)`` mono or ``(n, channels)``, at ``sample_rate``) is classified in
    this process, with ``path`` ``"<array>"``; paths go to ``jobs`` worker processes.
    ``vad``: ``"auto"`` splits files of :data:`~sercli.results.VAD_MIN_S` seconds or more into speech regions
    (windows are taken within speech, and the file's result covers speech only); ``"on"``
    does so for every file, ``"off"`` for none. ``calibration``: ``"off-domain"`` (confidence for
    recordings unlike the training corpora) or ``"in-domain"`` (:data:`~sercli.models.CALIBRATIONS`).
    ``adapt``: ``"corpus"`` first measures the inputs (:mod:`sercli.adaptation`; needs at least
    :data:`~sercli.adaptation.MIN_FILES` files): for a network on log-mel input, their mean spectral
    envelope, aligned with the training corpora's; for an encoder model, the mean and spread of
    their embeddings, which the head standardises with. ``"none"`` does not; ``"auto"`` (default)
    does what the model's card says suits it (``"corpus"`` for the shipped encoder models, when
    there are enough files; ``"none"`` otherwise; ``result.info["adapt"]`` says which).
    ``shift``: with ``adapt="corpus"``, statistics measured before (``result.info["shift"]``).
    ``classes``: answer among these of the model's classes only (``["anger", "sadness"]``; common
    spellings such as ``angry`` are read as the class they name): their probabilities are
    renormalised to sum to 1 and the tables have only their ``prob_<class>`` columns.

    Raises :class:`~sercli.models.ModelNotFound` for an unknown model, ``ValueError`` (one
    sentence) for an unusable option, and :class:`~sercli.adaptation.TooFewFiles` for
    ``adapt="corpus"`` on fewer than :data:`~sercli.adaptation.MIN_FILES` files with speech.
    A file that cannot be read or classified raises nothing: its row says why (``status``, ``error``).

    >>> import sercli
    >>> result = sercli.annotate("examples", model="mfcc-cnn", jobs=1)
    >>> len(result.files), bool(result.files["status"].eq("ok").all()), result.info["model"]
    (12, True, 'mfcc-cnn')
    >>> import soundfile
    >>> y, sr = soundfile.read("examples/1006_IEO_ANG_HI.wav")
    >>> one = sercli.annotate(y, sample_rate=sr, model="mfcc-cnn", windows=True)
    >>> bool(one.files.loc[0, "emotion"] == result.files.loc[0, "emotion"]), list(one.windows["start_s"])
    (True, [0.096])
    """
    from .output import typed_frame

    if shift is not None and adapt not in ("auto", "corpus"):
        raise ValueError("a shift is only used with adapt='corpus'.")
    job = Job.create(model, calibration=calibration, adapt=adapt, hop_s=hop_s, segments=segments, windows=windows,
                     vad=vad, previous_adapt="corpus" if shift is not None else None, classes=classes)
    if isinstance(inputs, np.ndarray):
        if not sample_rate:
            raise ValueError("An array needs its sample_rate.")
        if job.options.adapt == "corpus" and shift is None:
            if not job.auto:
                raise ValueError("adapt='corpus' measures a corpus of files; for one array, pass the shift "
                                 "measured on its corpus.")
            job.options = replace(job.options, adapt="none")  # one array is no corpus
        job.adapt_to([], jobs=1, shift=shift)
        source = ArrayAudio(inputs, int(sample_rate), job.model.params.sample_rate)
        results = [annotate_chunk([source], job.options)]
    else:
        paths = discover([inputs] if isinstance(inputs, (str, Path)) else inputs, include=include or (),
                         exclude=exclude or ())
        job.adapt_to(paths, jobs=resolve_jobs(jobs), shift=shift)
        results = list(job.chunks(paths, LocalExecutors(resolve_jobs(jobs))))

    def frame(rows: list[dict], columns: list[str]) -> "pd.DataFrame":
        df = typed_frame(rows, columns)
        return df.sort_values([c for c in ("path", "start_s") if c in columns], kind="stable").reset_index(drop=True)

    info = {k: v for k, v in job.metadata().items() if k not in ("include", "exclude")}
    columns = table_columns(job.model.classes)
    return Annotation(files=frame([r for res in results for r in res.rows], columns["files"]),
                      segments=frame([x for res in results for x in res.segments], columns["segments"]),
                      windows=frame([x for res in results for x in res.windows], columns["windows"]), info=info)
