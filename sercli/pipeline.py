"""The annotate run, one way for every caller.

:class:`Run` settles a run before any file is read (the model and options, the files, and for a
run into files the output plan: :func:`~sercli.batch.plan_output`), :meth:`Run.adapt` measures
the corpus it adapts to, and then :meth:`Run.results` yields typed per-file results
(:class:`FileResult`; :func:`annotate` collects them into DataFrames) or :meth:`Run.write` writes
them (journal, resume, atomic tables: ``sercli annotate`` and ``sercli label`` do this).

Where the work happens: :mod:`sercli.job` settles the options and measures the corpus,
:mod:`sercli.stream` classifies a chunk of files in a worker, :mod:`sercli.scheduling` runs
chunks over local processes (:mod:`sercli.workers`) or a Dask cluster and isolates crashes,
:mod:`sercli.results` holds the options and the rows, and :mod:`sercli.tables` the columns.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import numpy as np

from .audio import ArrayAudio
from .discovery import discover
from .job import Job
from .models import DEFAULT_MODEL, load_model
from .stream import annotate_chunk
from .tables import table_columns
from .workers import LocalExecutors, resolve_jobs

if TYPE_CHECKING:
    from concurrent.futures import Executor

    import pandas as pd

    from .batch import OutputPlan, RunStats
    from .results import ChunkResult

__all__ = ["Annotation", "FileResult", "Run", "RunInfo", "annotate"]


@dataclass(frozen=True)
class FileResult:
    """One file's results: its row of the files table (``row["status"]`` says whether it was
    classified), and its rows of the segments and windows tables (empty unless asked for)."""

    path: str
    row: dict
    segments: tuple[dict, ...] = ()
    windows: tuple[dict, ...] = ()

    @classmethod
    def of_chunk(cls, res: "ChunkResult") -> list["FileResult"]:
        """A worker's chunk of rows, file by file."""
        by_path: dict[str, tuple[list, list]] = {r["path"]: ([], []) for r in res.rows}
        for x in res.segments:
            by_path[x["path"]][0].append(x)
        for x in res.windows:
            by_path[x["path"]][1].append(x)
        return [cls(r["path"], r, tuple(by_path[r["path"]][0]), tuple(by_path[r["path"]][1])) for r in res.rows]


@dataclass(frozen=True)
class RunInfo:
    """A run's provenance, as stored with its tables (:func:`~sercli.results.run_metadata`): the
    model and its hash, classes, feature parameters, ``hop_s``, ``vad``, calibration and
    temperature, ``adapt`` and ``shift`` (the corpus statistics), the sercli version and time.
    Read as attributes or as a mapping (``info["model"]``)."""

    sercli_version: str
    model: str
    model_sha256: str
    classes: tuple[str, ...]
    feature_params: dict
    hop_s: float | None
    vad: str
    calibration: str
    temperature: float
    adapt: str
    shift: tuple[float, ...] | None
    created: str

    @classmethod
    def of(cls, meta: dict) -> "RunInfo":
        names = {f.name for f in fields(cls)}
        kept = {k: v for k, v in meta.items() if k in names}
        return cls(**{**kept, "classes": tuple(kept["classes"]),
                      "shift": None if kept.get("shift") is None else tuple(kept["shift"])})

    def __getitem__(self, key: str):
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key, default)

    def keys(self) -> list[str]:
        return [f.name for f in fields(self)]

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.keys()}


@dataclass
class Annotation:
    """What :func:`annotate` returns.

    Columns are :func:`~sercli.tables.table_columns` of the model's classes (:data:`~sercli.tables.COLUMNS`
    etc. for the shipped seven). ``files``: one row per input, sorted by path. ``segments``: one row
    per speech region of long files and one per short file (empty unless ``segments=True``).
    ``windows``: one row per classified window (empty unless ``windows=True``). ``info``: the
    run's provenance (:class:`RunInfo`).
    """

    files: "pd.DataFrame"
    segments: "pd.DataFrame"
    windows: "pd.DataFrame"
    info: RunInfo


@dataclass
class Run:
    """One annotate run, settled: the :class:`~sercli.job.Job`, the files, the executor factory and,
    for a run into files, the output plan. Make one with :meth:`prepare`."""

    job: Job
    paths: list[str]
    executors: Callable[[], "Executor"]
    plan: "OutputPlan | None" = None
    tables: dict[str, Path] = field(default_factory=dict)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    @classmethod
    def prepare(cls, inputs: Iterable[str | Path], *, model: str | Path = DEFAULT_MODEL,
                classes: Sequence[str] | None = None, calibration: str = "off-domain", adapt: str = "auto",
                hop_s: float | None = None, vad: str = "auto", segments: bool | str | Path = False,
                windows: bool | str | Path = False, include: Iterable[str] = (), exclude: Iterable[str] = (),
                output: str | Path | None = None, overwrite: bool = False, resume: bool = False,
                executors: Callable[[], "Executor"] | None = None, jobs: int = -1) -> "Run":
        """Settle a run on ``inputs`` (files, folders, ``-`` for paths on stdin). ``segments`` and
        ``windows``: ``True`` for those rows in :meth:`results`, or a path to write them to with
        ``output``. With ``output``, whether and how it may be written is decided here, reading
        only (:func:`~sercli.batch.plan_output`); ``resume`` keeps what the resumed run settled
        (``adapt``, ``classes``). Raises :class:`~sercli.models.ModelNotFound`,
        :class:`~sercli.output.OutputError` and ``ValueError`` (each one sentence)."""
        from .batch import plan_output, previous_run

        previous = previous_run(Path(output)) if resume and output is not None else {}
        if classes is None and previous.get("classes") is not None and \
                previous.get("model_sha256") == load_model(model).identity:  # the same model: its classes
            classes = previous["classes"]
        tables = {name: Path(p) for name, p in (("segments", segments), ("windows", windows))
                  if isinstance(p, (str, Path))}
        job = Job.create(model, calibration=calibration, adapt=adapt, hop_s=hop_s, vad=vad, classes=classes,
                         previous_adapt=previous.get("adapt") if adapt == "auto" else None,
                         segments=bool(segments), windows=bool(windows))
        include, exclude = tuple(include), tuple(exclude)
        plan = None
        if output is not None:
            plan = plan_output(Path(output), job.metadata(tables=tables, include=include, exclude=exclude),
                               tables=tables, overwrite=overwrite, resume=resume)
        return cls(job, discover(inputs, include=include, exclude=exclude),
                   executors or LocalExecutors(resolve_jobs(jobs)), plan, tables, include, exclude)

    def adapt(self) -> None:
        """Adapt to the corpus (``adapt="corpus"``): the resumed run's statistics, else measured now
        (:meth:`~sercli.job.Job.adapt_to`). Raises :class:`~sercli.adaptation.TooFewFiles`."""
        previous = self.plan.previous.get("shift") if self.plan is not None and self.plan.resume_from else None
        self.job.adapt_to(self.paths, self.executors, shift=previous)
        if self.plan is not None:
            self.plan = replace(self.plan, meta=self.metadata())

    def metadata(self) -> dict:
        """What the run's tables carry (:func:`~sercli.results.run_metadata`)."""
        return self.job.metadata(tables=self.tables, include=self.include, exclude=self.exclude)

    @property
    def info(self) -> RunInfo:
        return RunInfo.of(self.metadata())

    def results(self) -> Iterator[FileResult]:
        """Every file's results, as workers finish them (first those classified while measuring)."""
        for res in self.job.chunks(self.paths, self.executors):
            yield from FileResult.of_chunk(res)

    def write(self, on_chunk: Callable[["ChunkResult", "RunStats"], None] | None = None) -> "RunStats":
        """Write the results as the plan says (no plan: CSV rows on stdout), journaled as they come
        (:func:`~sercli.batch.annotate_to_file`); the time spent measuring the corpus is in the wall time."""
        from .batch import annotate_to_file

        stats = annotate_to_file(self.paths, self.job, plan=self.plan, executor_factory=self.executors,
                                 on_chunk=on_chunk)
        stats.wall_s += self.job.measure_s
        return stats


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
    ``adapt``: ``"corpus"`` first measures the inputs (:mod:`sercli.adaptation`): for an encoder
    model, the mean and spread of the embeddings of the windows it classifies (needs
    :data:`~sercli.adaptation.MIN_SEGMENTS` speech segments: files, or speech regions of long
    recordings), which its head standardises with; for a network on log-mel input, their mean
    spectral envelope, aligned with the training corpora's (needs :data:`~sercli.adaptation.MIN_FILES`
    files). ``"none"`` does not; ``"auto"`` (default) does what the model's card says suits it
    (``"corpus"`` for the shipped encoder models, when there is enough speech; ``"none"``
    otherwise; ``result.info["adapt"]`` says which).
    ``shift``: with ``adapt="corpus"``, statistics measured before (``result.info["shift"]``).
    ``classes``: answer among these of the model's classes only (``["anger", "sadness"]``; common
    spellings such as ``angry`` are read as the class they name): their probabilities are
    renormalised to sum to 1 and the tables have only their ``prob_<class>`` columns.

    Raises :class:`~sercli.models.ModelNotFound` for an unknown model, ``ValueError`` (one
    sentence) for an unusable option, and :class:`~sercli.adaptation.TooFewFiles` for
    ``adapt="corpus"`` on too little speech. A file that cannot be read or classified raises
    nothing: its row says why (``status``, ``error``). :class:`Run` gives the same results one
    file at a time.

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
    if isinstance(inputs, np.ndarray):
        results = _array_results(inputs, sample_rate, model=model, segments=segments, windows=windows, vad=vad,
                                 hop_s=hop_s, calibration=calibration, adapt=adapt, shift=shift, classes=classes)
    else:
        run = Run.prepare([inputs] if isinstance(inputs, (str, Path)) else inputs, model=model, classes=classes,
                          calibration=calibration, adapt="corpus" if shift is not None else adapt, hop_s=hop_s,
                          vad=vad, segments=segments, windows=windows, include=include or (),
                          exclude=exclude or (), jobs=jobs)
        run.job.adapt_to(run.paths, run.executors, shift=shift)
        results = (list(run.results()), run.info)

    def frame(rows: list[dict], columns: list[str]) -> "pd.DataFrame":
        df = typed_frame(rows, columns)
        return df.sort_values([c for c in ("path", "start_s") if c in columns], kind="stable").reset_index(drop=True)

    files, info = results
    columns = table_columns(info.classes)
    return Annotation(files=frame([f.row for f in files], columns["files"]),
                      segments=frame([x for f in files for x in f.segments], columns["segments"]),
                      windows=frame([x for f in files for x in f.windows], columns["windows"]), info=info)


def _array_results(y: np.ndarray, sample_rate: int | None, *, shift, adapt: str, **options) \
        -> tuple[list[FileResult], RunInfo]:
    """One in-memory signal, classified in this process (one array is no corpus to measure)."""
    if not sample_rate:
        raise ValueError("An array needs its sample_rate.")
    job = Job.create(options.pop("model"), adapt="corpus" if shift is not None else adapt, **options)
    if job.options.adapt == "corpus" and shift is None:
        if not job.auto:
            raise ValueError("adapt='corpus' measures a corpus of files; for one array, pass the shift "
                             "measured on its corpus.")
        job.options = replace(job.options, adapt="none")
    job.adapt_to([], LocalExecutors(1), shift=shift)
    source = ArrayAudio(y, int(sample_rate), job.model.params.sample_rate)
    return FileResult.of_chunk(annotate_chunk([source], job.options)), RunInfo.of(job.metadata())
