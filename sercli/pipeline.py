"""The annotate pipeline: files -> windows -> probabilities -> one row per file.

Work is cut into chunks of paths. Each chunk runs in a worker process (joblib's loky
pool, or a Dask cluster) that loads the model once, decodes and windows every file,
classifies all windows in one batch and returns plain rows. The parent streams rows
into the output as chunks finish. A chunk whose worker dies is retried file by file,
so only the file that kills a worker becomes an error row.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import traceback
from collections import deque
from concurrent.futures import FIRST_COMPLETED, Executor, Future, wait
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Sequence

import numpy as np

from .adaptation import ADAPT_MODES
from .audio import ArrayAudio, DecodeError, open_audio
from . import EMOTIONS
from .discovery import discover, display_path
from .features import Windows, WindowStream, concat_windows
from .models import DEFAULT_MODEL, Model, ModelMismatch, load_model

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["COLUMNS", "SEGMENT_COLUMNS", "WINDOW_COLUMNS", "table_columns", "Annotation", "Options", "ChunkResult",
           "LocalExecutors", "RunAborted", "with_corpus_shift", "annotate", "iter_chunks", "aggregate"]



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

#: Files longer than this are refused: 4 hours.
MAX_DURATION_S = 4 * 3600.0
#: With ``vad="auto"``, files at least this long are split into speech regions.
VAD_MIN_S = 30.0
VAD_MODES = ("auto", "on", "off")
_BATCH_WINDOWS = 256


@dataclass(frozen=True)
class Options:
    """How files are classified (the same for every file of a run)."""

    model: str = DEFAULT_MODEL
    model_name: str = DEFAULT_MODEL
    #: the model's classes, in output order (one ``prob_<class>`` column each)
    classes: tuple[str, ...] = EMOTIONS
    #: "off-domain" or "in-domain" (:data:`~sercli.models.CALIBRATIONS`)
    calibration: str = "off-domain"
    hop_s: float | None = None
    #: return segment rows (speech regions of long files, the whole of short ones)
    segments: bool = False
    #: return window rows
    windows: bool = False
    #: split files into speech regions: "auto" (files of at least VAD_MIN_S), "on" or "off"
    vad: str = "auto"
    max_duration_s: float = MAX_DURATION_S
    #: "none" or "corpus" (:data:`~sercli.adaptation.ADAPT_MODES`), and with "corpus" the
    #: per-band log-mel shift ``(n_mels,)`` in dB measured on the input (:func:`~sercli.adaptation.corpus_shift`)
    adapt: str = "none"
    shift: tuple[float, ...] | None = None
    #: the model's :attr:`~sercli.models.Model.identity`: a worker that loads another refuses to run
    model_sha256: str = ""

    @classmethod
    def for_model(cls, ref: str | Path, model: Model, **kwargs) -> "Options":
        """Options for the loaded ``model`` that ``ref`` (a name or a directory) names."""
        return cls(model=str(ref), model_name=model.name, classes=model.classes, calibration=model.calibration,
                   model_sha256=model.identity, **kwargs)

    def __post_init__(self) -> None:
        if self.vad not in VAD_MODES:
            raise ValueError(f"vad must be {', '.join(VAD_MODES[:-1])} or {VAD_MODES[-1]}, not {self.vad!r}.")
        if self.adapt not in ADAPT_MODES:
            raise ValueError(f"adapt must be {' or '.join(ADAPT_MODES)}, not {self.adapt!r}.")
        if self.shift is not None and self.adapt != "corpus":
            raise ValueError("a shift goes with adapt='corpus'.")


@dataclass
class ChunkResult:
    """What a worker returns for a chunk of paths."""

    rows: list[dict]
    segments: list[dict] = field(default_factory=list)
    windows: list[dict] = field(default_factory=list)
    audio_s: float = 0.0
    stage_s: dict = field(default_factory=dict)


def aggregate(probs: np.ndarray, start_s: np.ndarray, end_s: np.ndarray, silent: np.ndarray) -> np.ndarray:
    """File-level probabilities ``(classes,)`` from window probabilities ``(n, classes)``.

    The duration-weighted mean over windows with speech energy (over all windows when
    none has any): what annotate computes, block by block, with :class:`_Sums`.
    """
    sums = _Sums()
    sums.add(probs, start_s, end_s, silent)
    return sums.probs()


_per_thread = threading.local()


def _model(options: Options) -> Model:
    """The model, loaded once per thread: a LiteRT interpreter must never be shared between
    threads (a Dask worker runs several tasks at once in threads)."""
    cache = getattr(_per_thread, "models", None)
    if cache is None:
        cache = _per_thread.models = {}
    key = (options.model, options.calibration, options.shift, options.model_sha256)
    if key not in cache:
        model = load_model(options.model, calibration=options.calibration)
        model.check_identity(options.model_sha256)
        if model.head is not None and options.shift is not None:  # an encoder model adapts its embeddings
            model = replace(model, corpus_stats=options.shift)
        cache[key] = model
    return cache[key]


def _mel_shift(options: Options, model: Model) -> tuple[float, ...] | None:
    """The log-mel shift of ``--adapt corpus`` for a network on log-mel input (an encoder model
    adapts its embeddings instead)."""
    return options.shift if model.head is None else None


def _base_row(path: str, options: Options) -> dict:
    row = dict.fromkeys(table_columns(options.classes)["files"])
    row.update(path=display_path(path), model=options.model_name, segments=0, windows=0, flags="")
    for c in [f"prob_{c}" for c in options.classes] + ["confidence", "duration_s"]:
        row[c] = float("nan")
    return row


@dataclass
class _Sums:
    """Running duration-weighted sums of window probabilities (see :func:`aggregate`)."""

    sums: np.ndarray | None = None  # (2, classes): windows with speech energy, all windows
    weights: np.ndarray = field(default_factory=lambda: np.zeros(2))
    n_windows: int = 0
    n_speech: int = 0

    def add(self, probs: np.ndarray, start_s: np.ndarray, end_s: np.ndarray, silent: np.ndarray) -> None:
        dur = np.maximum(end_s - start_s, 1e-9)
        speech = dur * ~silent
        if self.sums is None:
            self.sums = np.zeros((2, probs.shape[1]))
        self.sums[0] += (probs * speech[:, None]).sum(axis=0)
        self.sums[1] += (probs * dur[:, None]).sum(axis=0)
        self.weights += (speech.sum(), dur.sum())
        self.n_windows += len(probs)
        self.n_speech += int((~silent).sum())

    def probs(self) -> np.ndarray:
        k = 0 if self.weights[0] > 0 else 1
        return self.sums[k] / self.weights[k]


@dataclass
class _FileState:
    """One file while its blocks stream through: level statistics for the flags, windows not
    classified yet, the file's probability sums, and its segment and window rows."""

    row: dict
    stream: WindowStream
    n: int = 0
    n_clipped: int = 0
    total: float = 0.0
    windows: list = field(default_factory=list)
    sums: _Sums = field(default_factory=_Sums)
    span: list = field(default_factory=lambda: [np.inf, 0.0])  # first window start, last window end
    segment_rows: list = field(default_factory=list)
    window_rows: list = field(default_factory=list)
    n_regions: int = 0  # speech regions classified (0: the file is not split)

    def observe(self, y: np.ndarray) -> None:
        self.n += len(y)
        self.n_clipped += int(np.count_nonzero(np.abs(y) >= 0.999))
        self.total += float(y.sum(dtype=np.float64))

    def flags(self, params) -> str:
        flags = []
        if self.n and self.n_clipped / self.n > 1e-3:
            flags.append("clipped")
        if self.n and abs(self.total / self.n) > 0.05:
            flags.append("dc_offset")
        if self.n < params.window_s * params.sample_rate:
            flags.append("padded")
        return ",".join(flags)

    def add(self, probs: np.ndarray, w: Windows, options: Options) -> None:
        """Fold classified windows into the file's sums (and its window rows)."""
        self.sums.add(probs, w.start_s, w.end_s, w.silent)
        self.span = [min(self.span[0], float(w.start_s.min())), max(self.span[1], float(w.end_s.max()))]
        if options.windows:
            for k in range(len(w.x)):
                row = {"path": self.row["path"], "start_s": round(float(w.start_s[k]), 4),
                       "end_s": round(float(w.end_s[k]), 4), "silent": bool(w.silent[k]), "model": options.model_name}
                _fill(row, probs[k], options.classes)
                self.window_rows.append(row)

    def add_segment(self, sums: _Sums, start_s: float, end_s: float, options: Options) -> None:
        row = {"path": self.row["path"], "start_s": round(start_s, 4), "end_s": round(end_s, 4),
               "windows": sums.n_windows, "model": options.model_name}
        _fill(row, sums.probs(), options.classes)
        self.segment_rows.append(row)


def annotate_chunk(paths: list, options: Options) -> ChunkResult:
    """Classify ``paths`` (runs in a worker). Never raises for a bad file: it gets a row.

    Files are decoded and windowed block by block (:class:`~sercli.audio.AudioStream`,
    :class:`~sercli.features.WindowStream`). Short files' windows are classified together, in
    one batch at the end of the chunk; a long file's windows are classified as soon as a batch
    is full, so memory does not depend on file length.
    """
    model = _model(options)
    params = model.params
    stage = {"decode": 0.0, "features": 0.0, "inference": 0.0}
    rows, waiting, audio_s = [], [], 0.0
    for path in paths:  # file paths, or ArrayAudio (the library's in-memory input)
        row = _base_row(path.name if isinstance(path, ArrayAudio) else path, options)
        rows.append(row)
        state = _FileState(row, WindowStream(params, hop_s=options.hop_s, shift=_mel_shift(options, model)))
        row["_state"] = state
        try:
            _stream(path, state, options, model, stage)
        except DecodeError as exc:
            row.update(status=exc.status, error=exc.message)
            continue
        except Exception as exc:  # a bug or a resource error on one file must not end the run
            row.update(status="error", error=_unexpected("Reading or classifying the file", exc))
            continue
        duration = state.n / params.sample_rate
        row.update(duration_s=round(duration, 4))
        audio_s += duration
        if state.n < params.min_samples:
            row.update(status="too_short", error=f"The audio is {duration:.2f} s long; "
                       f"at least {params.min_samples / params.sample_rate:.2f} s is needed.")
            continue
        row["flags"] = state.flags(params)
        if state.windows:
            waiting.append(state)  # a short file: joins the chunk's batch
        else:
            _finish(state, options)
    t0 = time.perf_counter()
    for state, w, p in _classify(model, waiting):
        if p is None:
            state.row.update(status="error", error=_unexpected("Classification", w))
            continue
        state.add(p, w, options)
        _finish(state, options)
    stage["inference"] += time.perf_counter() - t0
    states = [r.pop("_state") for r in rows if "_state" in r]
    return ChunkResult(rows=rows, segments=[x for st in states for x in st.segment_rows],
                       windows=[x for st in states for x in st.window_rows], audio_s=audio_s, stage_s=stage)


def _stream(path, state: _FileState, options: Options, model: Model, stage: dict) -> None:
    """Decode, window and (once a batch is full) classify one file, block by block."""
    params = model.params
    t0 = time.perf_counter()
    audio = path if isinstance(path, ArrayAudio) else open_audio(path, sample_rate=params.sample_rate,
                                                                  max_duration_s=options.max_duration_s)
    state.row.update(sample_rate=audio.source_rate, channels=audio.channels)
    split, blocks = _use_vad(audio, audio.blocks(), options)
    stage["decode"] += time.perf_counter() - t0
    if split:
        _stream_regions(blocks, state, options, model, stage)
        return
    for y in _read(blocks, state, stage):
        t1 = time.perf_counter()
        w = state.stream.finish() if y is None else state.stream.feed(y)
        if len(w.x):
            state.windows.append(w)
        stage["features"] += time.perf_counter() - t1
        if sum(len(x.x) for x in state.windows) >= _BATCH_WINDOWS or (y is None and state.sums.n_windows):
            t0 = time.perf_counter()
            batch = concat_windows(state.windows, params)
            state.windows = []
            state.add(_predict(model, batch.x), batch, options)
            stage["inference"] += time.perf_counter() - t0


def _read(blocks: Iterator[np.ndarray], state: _FileState, stage: dict) -> Iterator[np.ndarray | None]:
    """The file's blocks, each observed for the flags and timed as decoding, then ``None`` at the end."""
    while True:
        t0 = time.perf_counter()
        y = next(blocks, None)
        stage["decode"] += time.perf_counter() - t0
        if y is not None:
            state.observe(y)
        yield y
        if y is None:
            return


def _use_vad(audio, blocks: Iterator[np.ndarray], options: Options) -> tuple[bool, Iterator[np.ndarray]]:
    """Whether to split the file into speech regions, and its blocks (unchanged). A file whose
    header gives no length (decoded through ffmpeg) is read until :data:`VAD_MIN_S` seconds or
    its end, so the decision is the same in every format."""
    if options.vad != "auto":
        return options.vad == "on", blocks
    if isinstance(audio, ArrayAudio):
        return len(audio.samples) >= VAD_MIN_S * audio.source_rate, blocks
    if audio.frames:
        return audio.frames >= VAD_MIN_S * audio.source_rate, blocks
    head, n = [], 0
    for block in blocks:
        head.append(block)
        n += len(block)
        if n >= VAD_MIN_S * audio.sample_rate:
            break
    return n >= VAD_MIN_S * audio.sample_rate, itertools.chain(head, blocks)


def _stream_regions(blocks, state: _FileState, options: Options, model: Model, stage: dict) -> None:
    """Split a file into speech regions as it streams; classify the windows within each region.

    Only the samples a future region may still need are kept (at most about a minute), and
    regions wait for classification only until a batch of windows is full."""
    from .vad import SpeechDetector

    params = model.params
    rate = params.sample_rate
    detector = SpeechDetector()
    buffer, buffer_start = np.zeros(0, np.float32), 0  # samples, and the index of buffer[0]
    waiting: list[tuple[float, float, Windows]] = []  # regions whose windows are not classified yet
    for y in _read(blocks, state, stage):
        t1 = time.perf_counter()
        if y is not None:
            buffer = np.concatenate([buffer, y])
            regions = detector.feed(y)
        else:
            regions = detector.finish(state.n / rate)
        for a, b in regions:
            piece = buffer[max(0, int(a * rate) - buffer_start):max(0, int(b * rate) - buffer_start)]
            if len(piece) >= params.min_samples:
                stream = WindowStream(params, hop_s=options.hop_s, offset_s=a,
                                      shift=_mel_shift(options, model))
                waiting.append((a, a + len(piece) / rate, concat_windows([stream.feed(piece), stream.finish()],
                                                                          params)))
        stage["features"] += time.perf_counter() - t1
        if waiting and (y is None or sum(len(w.x) for _, _, w in waiting) >= _BATCH_WINDOWS):
            t0 = time.perf_counter()
            _classify_regions(state, waiting, options, model)
            waiting = []
            stage["inference"] += time.perf_counter() - t0
        if y is None:
            return
        keep = max(0, int(detector.keep_from_s() * rate) - buffer_start)
        buffer, buffer_start = buffer[keep:], buffer_start + keep


def _classify_regions(state: _FileState, regions: list[tuple[float, float, Windows]], options: Options,
                      model: Model) -> None:
    """Classify the windows of several speech regions in one batch; fold them into the file."""
    probs = _predict(model, np.concatenate([w.x for _, _, w in regions]))
    i = 0
    for start_s, end_s, w in regions:
        p = probs[i:i + len(w.x)]
        i += len(w.x)
        state.add(p, w, options)
        state.n_regions += 1
        if options.segments:
            sums = _Sums()
            sums.add(p, w.start_s, w.end_s, w.silent)
            state.add_segment(sums, start_s, end_s, options)


def _finish(state: _FileState, options: Options) -> None:
    """Fill the file's row from its classified windows (and, for a file not split, its one segment row)."""
    row = state.row
    if state.sums.n_windows == 0:
        row.update(status="silent", segments=0, windows=0, error="No speech was found (voice activity detection).")
        return
    if state.sums.n_speech == 0:
        row.update(status="silent", segments=0, windows=state.sums.n_windows, error="The file has no speech energy "
                   f"(every frame is below {state.stream.params.silence_db:.0f} dBFS).")
        return
    _fill(row, state.sums.probs(), options.classes)
    row.update(status="ok", windows=state.sums.n_windows,
               segments=state.n_regions or 1)
    if options.segments and not state.n_regions:
        state.add_segment(state.sums, state.span[0], state.span[1], options)


def _predict(model: Model, x: np.ndarray) -> np.ndarray:
    return np.concatenate([model.predict(x[i:i + _BATCH_WINDOWS]) for i in range(0, len(x), _BATCH_WINDOWS)])


def _classify(model: Model, states: list[_FileState]) -> Iterator[tuple]:
    """``(state, windows, probs)`` for each file whose windows wait: all files in one batch or,
    if that fails, file by file, so that only a file whose inference fails gets
    ``(state, exception, None)``."""
    if not states:
        return
    wins = [concat_windows(s.windows, model.params) for s in states]
    for s in states:
        s.windows = []
    try:
        probs = _predict(model, np.concatenate([w.x for w in wins]))
    except Exception:
        for s, w in zip(states, wins):
            try:
                yield s, w, _predict(model, w.x)
            except Exception as exc:
                yield s, exc, None
        return
    i = 0
    for s, w in zip(states, wins):
        yield s, w, probs[i:i + len(w.x)]
        i += len(w.x)


def _unexpected(stage: str, exc: BaseException) -> str:
    """One sentence for an unexpected error on one file."""
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{stage} failed unexpectedly ({type(exc).__name__}{': ' + detail if detail else ''})".rstrip(".") + "."


def _fill(row: dict, probs: np.ndarray, classes: tuple[str, ...]) -> None:
    k = int(np.argmax(probs))
    row.update(emotion=classes[k], confidence=float(probs[k]))
    row.update({f"prob_{c}": float(v) for c, v in zip(classes, probs)})


def _crash_row(path: str, options: Options, reason: str) -> dict:
    row = _base_row(path, options)
    row.update(status="crashed", error=f"The file crashed the worker process that decoded it ({reason}).")
    return row


# --------------------------------------------------------------------------- executors


def _worker_env() -> dict[str, str]:
    """One BLAS/OpenMP thread per worker: the processes share the cores instead."""
    return {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")}


def _init_worker() -> None:
    """Set up a local worker process.

    - Ctrl-C is left to the main process, which stops the run and keeps its rows.
    - The worker exits within a second of its parent's death (``kill -9`` of the main
      process), instead of idling on with the model in memory.
    - Decoder libraries' chatter on the C-level stderr (e.g. mpg123's "Xing stream size"
      notes) is dropped: every problem with a file is reported in its row.
    """
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    parent = os.getppid()

    def exit_with_parent() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=exit_with_parent, name="sercli-parent-watch", daemon=True).start()
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)


class LocalExecutors:
    """Executor factory for ``iter_chunks``: joblib's loky pool of ``jobs`` processes."""

    def __init__(self, jobs: int) -> None:
        self.jobs = jobs

    def __call__(self) -> Executor:
        return local_executor(self.jobs)

    def in_flight(self) -> int:
        """Chunks to keep queued: two per worker process, so none waits for work."""
        return 2 * self.jobs


def local_executor(jobs: int) -> Executor:
    """joblib's process pool (loky: spawned workers, reused across runs, shared with
    ``joblib.Parallel``)."""
    from joblib.executor import get_memmapping_executor

    return get_memmapping_executor(jobs, timeout=60, env=_worker_env(), initializer=_init_worker)


def resolve_jobs(jobs: int) -> int:
    """``-1`` (or 0) means every core."""
    return max(1, os.cpu_count() or 1) if jobs <= 0 else jobs


def _is_worker_crash(exc: BaseException) -> bool:
    names = {type(exc).__name__, *(type(c).__name__ for c in (exc.__cause__, exc.__context__) if c)}
    return bool(names & {"TerminatedWorkerError", "BrokenProcessPool", "KilledWorker", "ShutdownExecutorError"})


def iter_chunks(
    paths: list[str],
    options: Options,
    *,
    executor_factory: Callable[[], Executor],
    chunk_size: int = 32,
    in_flight: int | None = None,
) -> Iterator[ChunkResult]:
    """Run ``annotate_chunk`` over ``paths`` and yield results as chunks finish.

    At most ``in_flight`` chunks are queued at a time, so memory does not grow with the
    number of files. By default that is what the executor factory says it can run
    (``factory.in_flight()``: twice the worker processes, or twice a Dask cluster's threads,
    read again as chunks finish, so a cluster that grows is used), else 4. Infrastructure
    failures that are not a file's fault (a Dask scheduler gone) raise :class:`RunAborted`.
    When a worker dies, the files of every chunk that was in flight become suspects: each
    is then retried alone, with nothing else running, so a file that kills its worker
    again is known for sure and gets a ``crashed`` row.
    """
    if options.adapt == "corpus" and options.shift is None:
        raise ValueError("adapt='corpus' needs the corpus's shift (with_corpus_shift measures it).")
    chunks: deque[list[str]] = deque(_chunks(paths, chunk_size))
    suspects: deque[str] = deque()
    running: dict[Future, tuple[list[str], bool]] = {}  # future -> (paths, ran alone)
    executor = executor_factory()

    def submit(chunk: list[str], alone: bool) -> None:
        nonlocal executor
        try:
            fut = executor.submit(annotate_chunk, chunk, options)
        except Exception as exc:  # the pool broke between two results: start a fresh one
            if not _is_worker_crash(exc):
                raise
            executor = executor_factory()
            fut = executor.submit(annotate_chunk, chunk, options)
        running[fut] = (chunk, alone)

    while chunks or suspects or running:
        if suspects:
            if not running:
                submit([suspects.popleft()], alone=True)
        else:
            limit = in_flight or _capacity(executor_factory)
            while chunks and len(running) < limit:
                submit(chunks.popleft(), alone=False)
        done, _ = wait(running, return_when=FIRST_COMPLETED)
        for fut in done:
            chunk, alone = running.pop(fut)
            try:
                result = fut.result()
            except Exception as exc:
                if not _is_worker_crash(exc):
                    raise RunAborted(_abort_reason(exc)) from exc
                if alone:
                    yield ChunkResult(rows=[_crash_row(chunk[0], options, _crash_reason(exc))])
                else:
                    suspects.extend(chunk)
                executor = executor_factory()
                continue
            yield result


#: A chunk holds at most this many bytes of files, so long recordings get a worker each.
CHUNK_BYTES = 16 * 2**20


def _chunks(paths: list[str], size: int, max_bytes: int = CHUNK_BYTES) -> Iterator[list[str]]:
    """Consecutive chunks of at most ``size`` paths and (but for single files) ``max_bytes``.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for name, n in [("a", 10), ("b", 10), ("big", 100), ("c", 10)]:
    ...     _ = (d / name).write_bytes(b"x" * n)
    >>> [[pathlib.Path(p).name for p in c] for c in _chunks([str(d / n) for n in "a b big c".split()], 32, 50)]
    [['a', 'b'], ['big'], ['c']]
    """
    chunk: list[str] = []
    total = 0
    for path in paths:
        try:
            n = os.path.getsize(path)
        except OSError:
            n = 0
        if chunk and (len(chunk) >= size or total + n > max_bytes):
            yield chunk
            chunk, total = [], 0
        chunk.append(path)
        total += n
    if chunk:
        yield chunk


class RunAborted(Exception):
    """The run cannot go on for a reason that is not one file's fault; one sentence."""


def _abort_reason(exc: BaseException) -> str:
    if isinstance(exc, ModelMismatch):
        return str(exc)
    text = traceback.format_exception_only(exc)[-1].strip()
    names = {type(exc).__name__, *(type(c).__name__ for c in (exc.__cause__, exc.__context__) if c)}
    if names & {"CommClosedError", "CancelledError", "FutureCancelledError", "TimeoutError", "OSError"}:
        return "The connection to the Dask scheduler was lost."
    return f"A worker failed ({text})."


def _capacity(executor_factory) -> int:
    try:
        return max(1, int(executor_factory.in_flight()))
    except Exception:  # a factory without in_flight(), or a cluster that cannot say: the default
        return 4


def _crash_reason(exc: BaseException) -> str:
    text = str(exc)
    for sig in ("SIGSEGV", "SIGKILL", "SIGABRT", "SIGBUS"):
        if sig in text:
            return f"killed by {sig}"
    return "the worker died"


# --------------------------------------------------------------------------- library API


@dataclass
class Annotation:
    """What :func:`annotate` returns.

    Columns are :func:`table_columns` of the model's classes (:data:`COLUMNS` etc. for the
    shipped seven). ``files``: one row per input, sorted by path. ``segments``: one row
    per speech region of long files and one per short file, with :data:`SEGMENT_COLUMNS`
    (empty unless ``segments=True``). ``windows``: one row per classified window, with
    :data:`WINDOW_COLUMNS` (empty unless ``windows=True``). ``info``: the model, its card
    hash, the feature parameters, ``hop_s``, ``vad`` and the sercli version.
    """

    files: "pd.DataFrame"
    segments: "pd.DataFrame"
    windows: "pd.DataFrame"
    info: dict


def with_corpus_shift(options: Options, model: Model, paths: Sequence[str], *, jobs: int,
                      shift: Sequence[float] | None = None) -> Options:
    """``options`` set to adapt to the corpus of ``paths``: with ``shift`` (one measured before,
    e.g. by the run being resumed), or else the shift measured on ``paths``
    (:func:`~sercli.adaptation.corpus_shift`)."""
    from .adaptation import corpus_shift

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
) -> Annotation:
    """Classify audio: one file, a list, folders (searched recursively), or an array.

    A NumPy array (``(n,)`` mono or ``(n, channels)``, at ``sample_rate``) is classified in
    this process, with ``path`` ``"<array>"``; paths go to ``jobs`` worker processes.
    ``vad``: ``"auto"`` splits files of :data:`VAD_MIN_S` seconds or more into speech regions
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
    from .batch import run_metadata
    from .output import typed_frame

    from .adaptation import TooFewFiles, resolve_mode

    mdl = load_model(model, calibration=calibration)  # fails here, not in a worker, for an unknown model
    auto = adapt == "auto"
    adapt = resolve_mode(adapt, mdl.card, previous="corpus" if shift is not None else None)
    if shift is not None and adapt != "corpus":
        raise ValueError("a shift is only used with adapt='corpus'.")
    options = Options.for_model(model, mdl, hop_s=hop_s, segments=segments, windows=windows, vad=vad, adapt=adapt)
    if isinstance(inputs, np.ndarray):
        if not sample_rate:
            raise ValueError("An array needs its sample_rate.")
        if adapt == "corpus" and shift is None and auto:  # one array is no corpus
            options = replace(options, adapt="none")
        elif adapt == "corpus":
            if shift is None:
                raise ValueError("adapt='corpus' measures a corpus of files; for one array, pass the shift "
                                 "measured on its corpus.")
            options = with_corpus_shift(options, mdl, [], jobs=1, shift=shift)
        results = [annotate_chunk([ArrayAudio(inputs, int(sample_rate), mdl.params.sample_rate)], options)]
    else:
        if isinstance(inputs, (str, Path)):
            inputs = [inputs]
        paths = discover(inputs, include=include or (), exclude=exclude or ())
        if adapt == "corpus":
            try:
                options = with_corpus_shift(options, mdl, paths, jobs=resolve_jobs(jobs), shift=shift)
            except TooFewFiles:
                if not auto:
                    raise
                options = replace(options, adapt="none")  # too few files to stand for a corpus
        results = list(iter_chunks(paths, options, executor_factory=LocalExecutors(resolve_jobs(jobs))))

    def frame(rows: list[dict], columns: list[str]) -> "pd.DataFrame":
        df = typed_frame(rows, columns)
        return df.sort_values([c for c in ("path", "start_s") if c in columns], kind="stable").reset_index(drop=True)

    info = {k: v for k, v in run_metadata(mdl, options).items() if k not in ("include", "exclude")}
    columns = table_columns(mdl.classes)
    return Annotation(files=frame([r for res in results for r in res.rows], columns["files"]),
                      segments=frame([x for res in results for x in res.segments], columns["segments"]),
                      windows=frame([x for res in results for x in res.windows], columns["windows"]), info=info)
