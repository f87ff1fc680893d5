"""Which clips are worth a person's time: the labelling queue of ``sercli label``.

:func:`queue` orders the rows of an emotion table (files, or segments of long files) for
labelling; :class:`LabelBook` keeps the labels given so far in a manifest CSV that
``sercli train --init`` reads, rewritten atomically after every key press.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .output import atomic_path, write_text_atomic
from .reports import classes_of, group_keys

__all__ = ["STRATEGIES", "DEFAULT_STRATEGY", "KEYS", "Clip", "LabelBook", "Taken", "annotation_cache", "choose",
           "corpus_table", "emotion_table", "is_table", "queue", "score_command", "train_command", "without_long_files"]

#: ``random``: a shuffle. ``groups``: round robin over groups (``by``), at random within them.
#: ``spread``: round robin over predicted classes and, within a class, groups, at random within
#: them. ``uncertain``: the same round robin, the least certain rows (smallest margin between the
#: two most probable classes) first.
STRATEGIES = ("random", "groups", "spread", "uncertain")
DEFAULT_STRATEGY = "groups"


@dataclass(frozen=True)
class Clip:
    """One row to label: a file, or a segment of one (``start_s``/``end_s`` set)."""

    id: int
    path: str
    start_s: float | None
    end_s: float | None
    predicted: str
    confidence: float
    group: str


@dataclass(frozen=True)
class Taken:
    """What a test set must not share with a label file: its clips' source recordings and their
    groups (the ``speaker`` column: ``--by`` groups, e.g. speakers)."""

    sources: frozenset[str]
    groups: frozenset[str]

    @classmethod
    def of(cls, paths: Iterable[str | Path]) -> "Taken":
        """Read label files of ``sercli label``. Raises ``ValueError`` (one sentence) for one that does
        not exist, is not a label file, or is being written by a running session (whose next labels
        this session could not leave out)."""
        from .output import OutputError, OutputLock

        sources, groups = set(), set()
        for path in map(Path, paths):
            if not path.is_file():
                raise ValueError(f"The label file {path} (--not-in) does not exist.")
            lock = OutputLock(path)
            try:
                lock.acquire()
            except OutputError:
                raise ValueError(f"A sercli label session is still adding to {path}; finish it (Finish on its page, "
                                 "or Ctrl-C) before choosing a test set that must leave its clips out.") from None
            lock.release()
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
            if "source" not in df:
                raise ValueError(f"{path} is not a label file of sercli label (no source column).")
            sources |= {os.path.abspath(p) for p in df["source"] if p}
            groups |= {g for g in df.get("speaker", pd.Series(dtype=str)) if g}
        return cls(frozenset(sources), frozenset(groups))

    def leaves_out(self, clip: Clip) -> bool:
        return os.path.abspath(clip.path) in self.sources or (clip.group != "" and clip.group in self.groups)


def queue(table: pd.DataFrame, *, strategy: str = DEFAULT_STRATEGY, by: str | None = None,
          exclude: Iterable[tuple] = (), seed: int = 0) -> list[Clip]:
    """The rows of ``table`` (``files`` or ``segments`` of :func:`sercli.annotate`) in the order
    they should be labelled (:data:`STRATEGIES`); failed files are left out.

    ``by`` groups rows as ``sercli summarize --by`` does (``folder``, ``depth:N``, a column or a
    regex), so the queue visits every group (speaker, recording, channel) early. ``exclude``:
    clips to leave out (:meth:`LabelBook.done` of another label file, e.g. the training labels
    when choosing a test set). Raises ``ValueError`` for an unknown strategy or ``by``.

    >>> t = pd.DataFrame({"path": ["a.wav", "b.wav", "c.wav", "d.wav"], "status": "ok",
    ...                   "emotion": ["anger", "anger", "anger", "sadness"],
    ...                   "prob_anger": [0.9, 0.5, 0.8, 0.2], "prob_sadness": [0.1, 0.5, 0.2, 0.8]})
    >>> [c.path for c in queue(t, strategy="uncertain")]
    ['b.wav', 'd.wav', 'c.wav', 'a.wav']
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"Unknown choice strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}.")
    rows = table[table["status"].eq("ok")] if "status" in table else table
    rows = rows[rows["emotion"].notna()].reset_index(drop=True)
    classes = classes_of(rows)
    probs = rows[[f"prob_{c}" for c in classes]].to_numpy(dtype=float)
    top2 = np.sort(probs, axis=1)[:, -2:] if len(classes) > 1 else np.c_[probs * 0, probs]
    margin = top2[:, 1] - top2[:, 0]
    groups = group_keys(rows["path"], by, rows).fillna("") if by else pd.Series("", index=rows.index)
    rng = np.random.default_rng(seed)
    if strategy == "random":
        order = rng.permutation(len(rows))
    elif strategy == "groups":
        order = _round_robin(np.full(len(rows), ""), groups.astype(str).to_numpy(), rng.permutation(len(rows)))
    else:
        tiebreak = rng.random(len(rows))
        key = margin if strategy == "uncertain" else tiebreak
        order = _round_robin(rows["emotion"].astype(str).to_numpy(), groups.astype(str).to_numpy(),
                             np.lexsort((tiebreak, key)))
    span = rows[["start_s", "end_s"]] if "start_s" in rows else pd.DataFrame(index=rows.index, columns=["start_s", "end_s"])
    span = span.astype(object).where(span.notna(), None)
    excluded = set(exclude)
    if excluded:
        order = [j for j in order if _key(rows.at[j, "path"], span.at[j, "start_s"], span.at[j, "end_s"]) not in excluded]
    return [Clip(id=i, path=str(rows.at[j, "path"]), start_s=span.at[j, "start_s"], end_s=span.at[j, "end_s"],
                 predicted=str(rows.at[j, "emotion"]), confidence=float(top2[j, 1]),
                 group=str(groups.iat[j])) for i, j in enumerate(order)]


def choose(table: pd.DataFrame, book: "LabelBook", *, strategy: str = DEFAULT_STRATEGY, by: str | None = None,
           limit: int = 1000, taken: Taken | None = None) -> tuple[list[Clip], int]:
    """The clips of a labelling session, numbered in :func:`queue` order: every clip ``book`` has
    a label for (so an undo can bring it back) and up to ``limit`` not labelled yet; and how many
    clips were left out because ``taken`` (the training labels of a test set) has their recording
    or their group."""
    from dataclasses import replace

    done = book.done()
    clips = queue(table, strategy=strategy, by=by)
    n = len(clips)
    if taken is not None:
        clips = [c for c in clips if not taken.leaves_out(c)]
    todo = [c for c in clips if book.key(c) not in done][:limit]
    keep = done | {book.key(c) for c in todo}
    return [replace(c, id=i) for i, c in enumerate(c for c in clips if book.key(c) in keep)], n - len(clips)


def without_long_files(table: pd.DataFrame, *, max_s: float = 30.0) -> tuple[pd.DataFrame, int]:
    """``table`` without whole-file rows of ``max_s`` seconds or more (a person labels a clip,
    not an hour: their segments table is the one to label), and how many were left out."""
    if "duration_s" not in table or "start_s" in table:
        return table, 0
    long = table["duration_s"].astype(float).ge(max_s)
    return table[~long], int(long.sum())


def _round_robin(classes: np.ndarray, groups: np.ndarray, ranked: np.ndarray) -> np.ndarray:
    """``ranked`` (row indices, best first) reordered so that each round takes one row per
    predicted class, and within a class one row per group in turn.

    >>> _round_robin(np.array(["a", "a", "a", "b"]), np.array(["x", "x", "y", "x"]), np.array([0, 1, 2, 3])).tolist()
    [0, 3, 2, 1]
    """
    per_class: dict[str, list[int]] = {}
    for c in dict.fromkeys(classes[ranked]):
        mine = ranked[classes[ranked] == c]
        per_class[c] = _interleave([mine[groups[mine] == g] for g in dict.fromkeys(groups[mine])])
    return np.array(_interleave(list(per_class.values())), dtype=int)


def _interleave(lists: list) -> list[int]:
    """One item of each list in turn, until all are used up."""
    out: list[int] = []
    for k in range(max((len(x) for x in lists), default=0)):
        out.extend(int(x[k]) for x in lists if k < len(x))
    return out


class LabelBook:
    """The labels given so far, kept in a manifest CSV (``path,emotion,...``; a skipped clip
    has an empty ``emotion``, which training ignores). Every change rewrites the file
    atomically, so closing the page or Ctrl-C loses nothing, and a new session continues.

    A segment of a long file is written out as its own WAV clip under ``clips/`` beside the
    CSV, so the manifest names one clip per row, as ``sercli train`` expects. ``speaker`` is
    the clip's group (``--by``), so fine-tuning validates on whole groups; columns a user adds
    are kept. Raises ``ValueError`` for a file that is not a
    label file and for a class name a CSV reader would take for a missing value.
    """

    REQUIRED = ["path", "emotion", "source", "start_s", "end_s", "predicted"]
    COLUMNS = [*REQUIRED, "speaker"]

    def __init__(self, path: str | Path, classes: Iterable[str]) -> None:
        self.path = Path(path)
        self.classes = list(classes)
        missing_like = [c for c in self.classes if c.strip().lower() in _NA_NAMES]
        if missing_like:
            raise ValueError(f"The class name {missing_like[0]!r} reads as a missing value in a CSV file; "
                             "choose another name.")
        if len(self.classes) > len(KEYS):
            raise ValueError(f"The page has a key for {len(KEYS)} classes, and {len(self.classes)} were given; "
                             "label in two sessions of fewer classes.")
        self.columns = list(self.COLUMNS)
        self.rows: list[dict] = []
        if self.path.exists():
            df = pd.read_csv(self.path, dtype=str, keep_default_na=False)
            missing = set(self.REQUIRED) - set(df.columns)
            if missing:
                raise ValueError(f"{self.path} is not a label file of sercli label (no {', '.join(sorted(missing))} "
                                 "column); choose another --labels path.")
            other = sorted({e for e in df["emotion"] if e} - set(self.classes))
            if other:
                raise ValueError(f"{self.path} holds labels of other classes ({', '.join(other)}) than "
                                 f"{', '.join(self.classes)}; continue it with the classes it was started with "
                                 "(--classes), or choose another --labels file.")
            self.columns += [c for c in df.columns if c not in self.COLUMNS]
            self.rows = df.to_dict("records")

    def key(self, clip: Clip) -> tuple:
        return _key(clip.path, clip.start_s, clip.end_s)

    def done(self) -> set[tuple]:
        """Keys of the clips labelled or skipped so far."""
        return {_row_key(r) for r in self.rows}

    def counts(self) -> dict[str, int]:
        """Clips labelled per class (the book's classes first, then any other label met)."""
        given = pd.Series([r["emotion"] for r in self.rows if r["emotion"]], dtype=str).value_counts()
        return {c: int(given.get(c, 0)) for c in [*self.classes, *(c for c in given.index if c not in self.classes)]}

    def add(self, clip: Clip, label: str | None) -> None:
        """Record ``label`` for ``clip`` (``None``: skipped), on disk first: when the file cannot be
        written (``OSError``) or the segment not cut out (:class:`~sercli.audio.DecodeError`),
        nothing is recorded."""
        if label is not None and label not in self.classes:
            raise ValueError(f"{label!r} is not one of the classes ({', '.join(self.classes)}).")
        if clip.start_s is not None and label is not None:  # a labelled segment: its own clip
            path = self._cut(clip).relative_to(self.path.parent).as_posix()
        else:
            path = os.path.abspath(clip.path)  # the manifest's own folder resolves relative paths
        row = dict.fromkeys(self.columns, "") | {
            "path": path, "emotion": label or "", "source": clip.path, "predicted": clip.predicted, "speaker": clip.group,
            "start_s": "" if clip.start_s is None else clip.start_s, "end_s": "" if clip.end_s is None else clip.end_s}
        self._save([*self.rows, row])
        self.rows.append(row)

    def undo(self, keys: Iterable[tuple] | None = None) -> dict | None:
        """Forget the last label given (of a clip among ``keys``, when given: the clips this session
        shows); returns its row, ``None`` when there is none."""
        wanted = None if keys is None else set(keys)
        for i in range(len(self.rows) - 1, -1, -1):
            row = self.rows[i]
            if wanted is None or _row_key(row) in wanted:
                self._save(self.rows[:i] + self.rows[i + 1:])
                del self.rows[i]
                return row
        return None

    def _cut(self, clip: Clip) -> Path:
        import hashlib

        import soundfile

        from .audio import read_span

        y, sr = read_span(clip.path, clip.start_s, clip.end_s)
        source = hashlib.sha256(os.path.abspath(clip.path).encode()).hexdigest()[:8]  # two files may share a name
        out = (self.path.parent / "clips"
               / f"{Path(clip.path).stem}_{source}_{clip.start_s:.2f}-{clip.end_s:.2f}.wav")
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            soundfile.write(tmp, y, sr, format="WAV")
        return out

    def _save(self, rows: list[dict]) -> None:
        write_text_atomic(self.path, pd.DataFrame(rows, columns=self.columns).to_csv(index=False))


#: The keys that label a clip on the page, one class each, in order.
KEYS = "1234567890"

#: Names that pandas' CSV reader takes for a missing value: a class cannot be called that.
_NA_NAMES = {"", "na", "n/a", "nan", "null", "none", "<na>", "-nan", "#n/a"}


def _key(path: str, start_s, end_s) -> tuple:
    """A clip's place in the tables' shared index, ``(path, start_s, end_s)`` (``None`` for a whole
    file): the same numbers the segments table holds, compared exactly."""
    def number(v):
        return None if v in ("", None) or pd.isna(v) else float(v)

    return str(path), number(start_s), number(end_s)


def _row_key(row: dict) -> tuple:
    """The :func:`_key` of a label file's row: its clip's source recording and span."""
    return _key(row["source"], row["start_s"], row["end_s"])


TABLE_SUFFIXES = (".parquet", ".csv", ".jsonl")


def is_table(source: str | Path) -> bool:
    """Whether ``source`` is an emotion table (a file ``sercli annotate`` writes), not audio."""
    return Path(source).suffix.lower() in TABLE_SUFFIXES and Path(source).is_file()


def annotation_cache(labels: Path, source: str | Path) -> Path:
    """Where ``sercli label`` keeps its annotation of the folder ``source``: next to the label
    file, named after the folder (``calls/`` → ``calls.emotions.parquet``, its segments in
    ``calls.segments.parquet``), so the training and the test-set sessions share it."""
    return labels.parent / f"{Path(source).resolve().name or 'audio'}.emotions.parquet"


def emotion_table(source: str | Path, *, model: str | None = None, jobs: int = -1,
                  cache: Path | None = None) -> pd.DataFrame:
    """The emotion table to choose from: ``source`` read, when it is a table ``sercli annotate``
    wrote (files or segments); else ``source`` (a folder or an audio file) annotated now: one
    row per short file, the segments of each long one (``start_s``/``end_s`` set).

    With ``cache``, the annotation of a folder is kept there (an annotate run into ``cache`` and
    its segments table, :class:`~sercli.pipeline.Run`) and the next call resumes it, as
    ``sercli annotate --resume`` does: only files it does not hold yet, or that failed, are
    classified, with the corpus statistics of the first run. Another model starts afresh. Rows of files gone from ``source`` are left out. Raises ``ValueError`` when
    ``source`` holds no audio file.
    """
    import tempfile

    from .models import DEFAULT_MODEL
    from .output import OutputError, read_table
    from .pipeline import Run
    from .reports import read_results

    if is_table(source):
        return read_results(source)
    model = str(model or DEFAULT_MODEL)
    with tempfile.TemporaryDirectory() as scratch:
        files = cache or Path(scratch) / "audio.emotions.parquet"
        segments = files.with_name(files.name.replace(".emotions.", ".segments."))
        options = dict(model=model, segments=segments, output=files, jobs=jobs)
        try:
            run = Run.prepare([str(source)], resume=True, **options)
        except OutputError:  # made with another model: start afresh
            run = Run.prepare([str(source)], overwrite=True, **options)
        if not run.paths:
            raise ValueError(f"{source} holds no audio files")
        run.adapt()
        run.write()
        return _one_row_per_clip(read_table(files), read_table(segments), run.paths)


def _one_row_per_clip(files: pd.DataFrame, segments: pd.DataFrame, paths: list[str]) -> pd.DataFrame:
    """The files table's rows of ``paths``, a long file's replaced by its segments' (a short file
    is one clip; a long one, its speech regions)."""
    from .discovery import display_path

    wanted = {display_path(p) for p in paths}
    files, segments = files[files["path"].isin(wanted)], segments[segments["path"].isin(wanted)]
    long = set(segments.groupby("path").size().loc[lambda n: n > 1].index)
    if not long:
        return files.reset_index(drop=True)
    whole = files[~files["path"].isin(long)]
    split = segments[segments["path"].isin(long)]
    split = split.assign(status="ok", duration_s=split["end_s"] - split["start_s"])  # what summarize counts
    return pd.concat([whole, split], ignore_index=True)


def score_command(source: str | Path, labels: str | Path, *, table: Path | None = None) -> str:
    """The ``sercli summarize --truth`` command that scores an emotion table (``source``, or
    the ``table`` a folder was annotated into) against a test set."""
    import shlex

    scored = str(source) if is_table(source) else str(table or "emotions.parquet")
    return shlex.join(["sercli", "summarize", scored, "--truth", str(labels)])


def train_command(table: pd.DataFrame, labels: str | Path, *, out: str = "my-model", corpus: Path | None = None) -> str:
    """The ``sercli train --init`` command that fine-tunes the table's model on the labels (with
    ``corpus``: standardised by the statistics that emotion table of the user's corpus holds)."""
    import shlex

    from .models import DEFAULT_MODEL

    base = str(table["model"].dropna().iloc[0]) if "model" in table and table["model"].notna().any() else DEFAULT_MODEL
    return shlex.join(["sercli", "train", "--init", base, "--manifest", str(labels),
                       *(["--corpus", str(corpus)] if corpus is not None else []), "--out", out])


def corpus_table(source: str | Path, cache: Path) -> Path | None:
    """The emotion table of a labelling session (``source`` itself, or the kept annotation of a folder)
    when it holds the statistics of the corpus it was adapted to, for fine-tuning to standardise by."""
    from .output import OutputError, table_metadata

    table = Path(source) if is_table(source) else cache
    try:
        meta = table_metadata(table) if table.is_file() else None
    except OutputError:
        return None
    return table if meta and meta.get("adapt") == "corpus" and meta.get("shift") else None
