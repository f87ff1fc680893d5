"""What a run is asked to do (:class:`Options`, and the provenance stored with its tables) and
what it returns (:class:`ChunkResult`): one row per file, built from its windows' probabilities."""

from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

from . import EMOTIONS, __version__
from .adaptation import ADAPT_MODES
from .discovery import display_path
from .windowing import Windows, WindowStream
from .models import DEFAULT_MODEL, Model
from .tables import table_columns

__all__ = ["MAX_DURATION_S", "MEASURE_WINDOWS", "VAD_MIN_S", "VAD_MODES", "ChunkResult", "Measured", "Options", "Pending",
           "aggregate", "crash_row", "run_metadata"]


#: Files longer than this are refused: 4 hours.
MAX_DURATION_S = 4 * 3600.0


#: With ``vad="auto"``, files at least this long are split into speech regions.
VAD_MIN_S = 30.0


VAD_MODES = ("auto", "on", "off")


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
    #: an encoder model's first pass of ``adapt="corpus"``: keep the windows' embeddings (what the
    #: corpus statistics are measured on) and classify them once the statistics are known (:class:`Pending`)
    measure: bool = False

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
        if self.measure and (self.adapt != "corpus" or self.shift is not None):
            raise ValueError("measuring goes with adapt='corpus' before its statistics are known.")


@dataclass
class ChunkResult:
    """What a worker returns for a chunk of paths."""

    rows: list[dict]
    segments: list[dict] = field(default_factory=list)
    windows: list[dict] = field(default_factory=list)
    audio_s: float = 0.0
    stage_s: dict = field(default_factory=dict)
    #: with ``Options.measure``: the files whose windows wait for the corpus statistics
    pending: list["Pending"] = field(default_factory=list)


def aggregate(probs: np.ndarray, start_s: np.ndarray, end_s: np.ndarray, silent: np.ndarray) -> np.ndarray:
    """File-level probabilities ``(classes,)`` from window probabilities ``(n, classes)``.

    The duration-weighted mean over windows with speech energy (over all windows when
    none has any): what annotate computes, block by block, with :class:`Sums`.
    """
    sums = Sums()
    sums.add(probs, start_s, end_s, silent)
    return sums.probs()


def base_row(path: str, options: Options) -> dict:
    row = dict.fromkeys(table_columns(options.classes)["files"])
    row.update(path=display_path(path), model=options.model_name, segments=0, windows=0, flags="")
    for c in [f"prob_{c}" for c in options.classes] + ["confidence", "duration_s"]:
        row[c] = float("nan")
    return row


@dataclass
class Sums:
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
class FileState:
    """One file while its blocks stream through: level statistics for the flags, windows not
    classified yet, the file's probability sums, and its segment and window rows."""

    row: dict
    stream: WindowStream | None  # None: a measured file classified from its kept embeddings
    n: int = 0
    n_clipped: int = 0
    total: float = 0.0
    windows: list = field(default_factory=list)
    sums: Sums = field(default_factory=Sums)
    span: list = field(default_factory=lambda: [np.inf, 0.0])  # first window start, last window end
    segment_rows: list = field(default_factory=list)
    window_rows: list = field(default_factory=list)
    n_regions: int = 0  # speech regions classified (0: the file is not split)
    kept: list = field(default_factory=list)  # when measuring: (embeddings, windows, region), in order

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
                fill(row, probs[k], options.classes)
                self.window_rows.append(row)

    @property
    def n_taken(self) -> int:
        """Windows classified so far (kept, when measuring)."""
        return self.sums.n_windows + sum(len(o) for o, _, _ in self.kept)

    def take(self, out: np.ndarray, w: Windows, options: Options, region: tuple[float, float] | None = None) -> None:
        """Fold classified windows in (a speech ``region`` of a split file gets its segment row):
        ``out`` is their probabilities or, when measuring (``options.measure``), their embeddings,
        kept (without the model inputs) to classify once the corpus statistics are known; at
        :data:`MEASURE_WINDOWS` kept, :class:`Measured` stops the file."""
        if options.measure:
            self.kept.append((out, Windows(np.zeros((len(out), 0, 0), np.float32), w.start_s, w.end_s, w.silent),
                              region))
            if sum(len(o) for o, _, _ in self.kept) >= MEASURE_WINDOWS:
                raise Measured
            return
        self.add(out, w, options)
        if region is not None:
            self.n_regions += 1
            if options.segments:
                sums = Sums()
                sums.add(out, w.start_s, w.end_s, w.silent)
                self.add_segment(sums, *region, options)

    def add_segment(self, sums: Sums, start_s: float, end_s: float, options: Options) -> None:
        row = {"path": self.row["path"], "start_s": round(start_s, 4), "end_s": round(end_s, 4),
               "windows": sums.n_windows, "model": options.model_name}
        fill(row, sums.probs(), options.classes)
        self.segment_rows.append(row)


#: Windows of one file kept when measuring a corpus: a longer file adds the statistics of its first
#: this many windows and is classified in the main pass.
MEASURE_WINDOWS = 400


class Measured(Exception):
    """A file being measured reached :data:`MEASURE_WINDOWS`: enough of it for the statistics."""


@dataclass
class Pending:
    """A file measured for the corpus statistics: its row so far and its windows' embeddings, in the
    order they were classified. ``complete``: every window of the file (it can be classified from
    them); else only its first :data:`MEASURE_WINDOWS`, and it goes through the main pass."""

    row: dict
    kept: list
    complete: bool

    def speech(self) -> np.ndarray:
        """The embeddings of its windows with speech energy (what the statistics are measured on)."""
        parts = [e[~w.silent] for e, w, _ in self.kept]
        return np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)

    @property
    def segments(self) -> int:
        """Speech segments measured: its speech regions, or 1 for a file not split (0 without speech)."""
        if not any((~w.silent).any() for _, w, _ in self.kept):
            return 0
        return sum(1 for _, _, region in self.kept if region is not None) or 1


def fill(row: dict, probs: np.ndarray, classes: tuple[str, ...]) -> None:
    k = int(np.argmax(probs))
    row.update(emotion=classes[k], confidence=float(probs[k]))
    row.update({f"prob_{c}": float(v) for c, v in zip(classes, probs)})


def crash_row(path: str, options: Options, reason: str) -> dict:
    row = base_row(path, options)
    row.update(status="crashed", error=f"The file crashed the worker process that decoded it ({reason}).")
    return row


def run_metadata(model: Model, options: Options, *, tables: dict[str, Path] | None = None,
                 include: Iterable[str] = (), exclude: Iterable[str] = ()) -> dict:
    """Provenance stored with the table (Parquet schema metadata, the journal header).

    The :data:`~sercli.batch.RUN_KEY` fields define the rows; the rest (version, time) only describe them.
    """
    return {
        "sercli_version": __version__,
        "model": model.name,
        "model_sha256": model.identity,
        "classes": list(model.classes),
        "feature_params": model.params.to_dict(),
        "hop_s": options.hop_s,
        "vad": options.vad,
        "calibration": options.calibration,
        "temperature": model.temperature,
        "adapt": options.adapt,
        "shift": list(options.shift) if options.shift is not None else None,
        **{name: str(Path(path).resolve()) for name, path in (tables or {}).items()},
        "include": sorted(include),
        "exclude": sorted(exclude),
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
