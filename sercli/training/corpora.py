"""Corpus readers: original layouts of CREMA-D, RAVDESS, TESS and SAVEE -> manifest DataFrames.

A manifest has one row per file with at least ``path`` and ``emotion``; the readers add
``corpus``, ``speaker`` and ``source_label``. Labels are parsed from the original file
names, so the readers work on the original corpora and on re-encoded copies that keep
the names (any audio extension).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from ..audio import AUDIO_EXTENSIONS
from ..discovery import walk
from ..reports import first_group

__all__ = ["EMOTIONS", "FORMATS", "LICENCES", "MIN_CLIPS_PER_CLASS", "build_manifest", "corpus_entries", "manifest_name", "parse_name", "read_class_folders", "read_corpus", "read_labels_csv", "read_manifest",
           "skewed", "speaker_split", "speakers_from_paths", "split_labels"]

#: The seven classes, in model output order.
from .. import EMOTIONS

_CREMA = {"ANG": "anger", "DIS": "disgust", "FEA": "fear", "HAP": "happiness", "NEU": "neutral", "SAD": "sadness"}
_RAVDESS = {"01": "neutral", "02": "calm", "03": "happiness", "04": "sadness", "05": "anger",
            "06": "fear", "07": "disgust", "08": "surprise"}
_TESS = {"angry": "anger", "disgust": "disgust", "fear": "fear", "happy": "happiness",
         "neutral": "neutral", "ps": "surprise", "sad": "sadness"}
_SAVEE = {"a": "anger", "d": "disgust", "f": "fear", "h": "happiness", "n": "neutral",
          "sa": "sadness", "su": "surprise"}


def _crema(stem: str) -> tuple[str, str, str] | None:
    m = re.fullmatch(r"(\d{4})_[A-Z]{3}_([A-Z]{3})_[A-Z]{2}", stem)
    return (m[1], m[2], _CREMA[m[2]]) if m and m[2] in _CREMA else None


def _ravdess(stem: str) -> tuple[str, str, str] | None:
    m = re.fullmatch(r"\d\d-(\d\d)-(\d\d)-\d\d-\d\d-\d\d-(\d\d)", stem)
    if not m or m[1] != "01" or m[2] not in _RAVDESS:  # modality 01 = speech
        return None
    return (str(int(m[3])), m[2], _RAVDESS[m[2]])


def _tess(stem: str) -> tuple[str, str, str] | None:
    # speaker OAF or YAF; one original file is misspelt "OA_bite_neutral"
    m = re.fullmatch(r"([OY]A)F?_\w+?_([a-z]+)", stem, flags=re.IGNORECASE)
    if not m:
        return None
    code = m[2].lower()
    return (m[1].upper() + "F", code, _TESS[code]) if code in _TESS else None


def _savee(stem: str) -> tuple[str, str, str] | None:
    m = re.fullmatch(r"(?:([A-Z]{2})_)?(sa|su|a|d|f|h|n)(\d\d)", stem)
    return (m[1] or "", m[2], _SAVEE[m[2]]) if m else None


#: ``--format`` name -> file-stem parser returning ``(speaker, source_label, emotion)``.
FORMATS: dict[str, Callable[[str], tuple[str, str, str] | None]] = {
    "crema-d": _crema,
    "ravdess": _ravdess,
    "tess": _tess,
    "savee": _savee,
}


def parse_name(path: str | Path, corpus: str) -> tuple[str, str, str] | None:
    """``(speaker, source_label, emotion)`` from a file name of ``corpus``, or None.

    >>> parse_name("1001_DFA_ANG_XX.wav", "crema-d")
    ('1001', 'ANG', 'anger')
    >>> parse_name("03-01-08-02-01-01-14.wav", "ravdess")
    ('14', '08', 'surprise')
    >>> parse_name("OAF_back_ps.wav", "tess")
    ('OAF', 'ps', 'surprise')
    >>> parse_name("DC/sa03.wav", "savee")
    ('DC', 'sa', 'sadness')
    """
    path = Path(path)
    parsed = FORMATS[corpus](path.stem)
    if parsed and corpus == "savee" and not parsed[0]:  # original layout: speaker is the folder
        parsed = (path.parent.name, parsed[1], parsed[2])
    return parsed


def read_corpus(root: str | Path, corpus: str, *, keep_unlabelled: bool = False) -> pd.DataFrame:
    """Manifest of every audio file under ``root`` in the layout of ``corpus``.

    Columns: ``path`` (absolute), ``corpus``, ``speaker``, ``source_label``, ``emotion``.
    Files whose names do not parse, and RAVDESS "calm", are left out unless
    ``keep_unlabelled``.
    """
    if corpus not in FORMATS:
        raise ValueError(f"Unknown corpus format {corpus!r}; choose one of {', '.join(FORMATS)}.")
    rows = []
    for name in walk(root):  # follows folder links, as annotate does
        path = Path(name)
        if path.suffix.lower() not in AUDIO_EXTENSIONS or not path.is_file():
            continue
        parsed = parse_name(path, corpus)
        if parsed is None or parsed[2] not in EMOTIONS:
            if not keep_unlabelled:
                continue
            parsed = parsed or ("", "", "")
        speaker, label, emotion = parsed
        rows.append({"path": os.path.abspath(path), "corpus": corpus, "speaker": speaker,
                     "source_label": label, "emotion": emotion or None})
    return pd.DataFrame(rows, columns=["path", "corpus", "speaker", "source_label", "emotion"])


def read_class_folders(root: str | Path) -> pd.DataFrame:
    """Manifest of a folder-per-class layout: every audio file under ``root/<class>/`` (at any
    depth) has the label ``<class>``. Columns: ``path`` (absolute), ``emotion``.

    Files directly in ``root`` have no class folder and are left out.
    """
    root = Path(root)
    rows = []
    for name in walk(root):
        path = Path(name)
        rel = path.relative_to(root)
        if path.suffix.lower() in AUDIO_EXTENSIONS and len(rel.parts) > 1 and path.is_file():
            rows.append({"path": os.path.abspath(path), "emotion": rel.parts[0]})
    return pd.DataFrame(rows, columns=["path", "emotion"]).sort_values("path", ignore_index=True)


def read_labels_csv(path: str | Path, *, label_column: str = "emotion") -> pd.DataFrame:
    """A CSV of the user's labels (``path`` and ``label_column``; other columns are kept) as a
    manifest: the label column becomes ``emotion``, relative paths resolve against the CSV's folder."""
    df = pd.read_csv(path, dtype=str)
    if label_column not in df.columns or "path" not in df.columns:
        raise ValueError(f"The CSV {path} needs a path and a {label_column} column (it has "
                         f"{', '.join(df.columns)}).")
    if label_column != "emotion":
        df = df.drop(columns=["emotion"], errors="ignore").rename(columns={label_column: "emotion"})
    base = Path(os.path.abspath(path)).parent
    df["path"] = [p if not isinstance(p, str) or Path(p).is_absolute() else str(base / p) for p in df["path"]]
    return df


def speakers_from_paths(paths: pd.Series, regex: str) -> pd.Series:
    r"""The speaker of each path: the regex's first named group (or first group), searched
    anywhere in the path; ``<NA>`` where it does not match.

    >>> speakers_from_paths(pd.Series(["/d/anger/spk03_take1.wav", "/d/calm/x.wav"]), r"spk(\d+)").tolist()
    ['03', <NA>]
    """
    pattern = re.compile(regex)
    if pattern.groups == 0:
        raise ValueError(f"The speaker pattern {regex!r} needs a group, e.g. 'spk(\\d+)'.")
    return first_group(paths, pattern)


def read_manifest(path: "str | Path | Sequence[str | Path]") -> pd.DataFrame:
    """Read a manifest CSV (``path,emotion[,speaker,split,...]``), or several one after the other;
    relative paths are resolved against each manifest's folder. ``emotion`` may hold any labels (a
    model trained on them has those classes); rows without one are kept (``evaluate`` skips them)."""
    if not isinstance(path, (str, Path)):
        return pd.concat([read_manifest(p) for p in path], ignore_index=True)
    path = Path(path)
    df = pd.read_csv(path, dtype={"speaker": str})
    missing = {"path", "emotion"} - set(df.columns)
    if missing:
        raise ValueError(f"The manifest {path} has no {' or '.join(sorted(missing))} column.")
    base = Path(os.path.abspath(path)).parent
    df["path"] = [p if Path(p).is_absolute() else str(base / p) for p in df["path"]]
    labels = df["emotion"]
    df["emotion"] = labels.where(labels.isna(), labels.astype(str).str.strip())
    return df


def manifest_name(path: "str | Path | Sequence[str | Path]") -> str:
    """How a card names the manifest(s) it was made from: one path, or several joined by `` + ``.

    >>> manifest_name(["a.csv", "b.csv"])
    'a.csv + b.csv'
    """
    return str(path) if isinstance(path, (str, Path)) else " + ".join(map(str, path))


def split_labels(df: pd.DataFrame, column: str) -> pd.Series:
    """The split of every manifest row under ``column``: a manifest column, or ``loco:CORPUS``.

    ``loco:CORPUS`` is the leave-one-corpus-out protocol: every row of ``CORPUS`` is
    ``test``; the other corpora train on their ``split`` train and test rows and
    validate on their ``split`` val rows (whole speakers, so early stopping never sees
    a training voice). ``loco-skewed:CORPUS`` trains the same way and tests on the rows of
    :func:`skewed` (seed 0) of ``CORPUS`` only (its other rows are ``skip``).

    >>> m = pd.DataFrame({"corpus": ["a", "a", "b", "b", "b"],
    ...                   "split": ["train", "test", "train", "val", "test"]})
    >>> split_labels(m, "loco:b").tolist()
    ['train', 'train', 'test', 'test', 'test']
    """
    if column.startswith("loco-skewed:"):
        if "speaker" not in df.columns:
            raise ValueError("The speaker-skewed protocol needs a 'speaker' column.")
        out = split_labels(df, "loco:" + column.split(":", 1)[1])
        held = df[out.eq("test")]
        return out.where(out.ne("test") | df.index.isin(skewed(held).index), "skip")
    if column.startswith("loco:"):
        corpus = column.split(":", 1)[1]
        if "corpus" not in df.columns or "split" not in df.columns:
            raise ValueError("The leave-one-corpus-out protocol needs 'corpus' and 'split' columns.")
        if not df["corpus"].eq(corpus).any():
            known = ", ".join(sorted(df["corpus"].dropna().unique()))
            raise ValueError(f"The manifest has no corpus {corpus!r} to hold out (it has {known}).")
        out = df["split"].where(df["split"].eq("val"), "train")
        return out.where(df["corpus"].ne(corpus), "test")
    if column not in df.columns:
        raise ValueError(f"The manifest has no {column!r} column.")
    return df[column]


def skewed(rows: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """The rows of every speaker's clips of two of their emotions, drawn at random (``seed``).

    Acted corpora are balanced per speaker; natural recordings are not (a speaker may be angry
    in most of their clips), which is what per-speaker or per-corpus statistics must survive.
    ``loco-skewed:CORPUS`` tests on this subset of the held-out corpus.
    """
    rng = np.random.default_rng(seed)
    keep = []
    for _, g in rows.groupby("speaker"):
        emotions = rng.choice(sorted(g["emotion"].unique()), size=min(2, g["emotion"].nunique()), replace=False)
        keep.append(g[g["emotion"].isin(emotions)])
    return pd.concat(keep) if keep else rows.iloc[:0]


def speaker_split(df: pd.DataFrame, *, val: float = 0.1, test: float = 0.0, seed: int = 0,
                  by_speaker: bool = True) -> pd.Series:
    """A ``train``/``val``/``test`` label per row, holding out about ``val`` and ``test`` of the rows.

    With a ``speaker`` column of at least three speakers, each part holds whole speakers
    (scikit-learn's ``StratifiedGroupKFold``, stratified by emotion as far as speakers
    allow), so validation and test voices are never heard in training. Without one, the
    parts are stratified random slices and share voices with training (as they do with
    ``by_speaker=False``).

    >>> m = pd.DataFrame({"speaker": [s for s in "abcdefghij" for _ in range(4)],
    ...                   "emotion": ["anger", "neutral"] * 20})
    >>> parts = speaker_split(m, val=0.2, test=0.2)
    >>> parts.value_counts().sort_index().to_dict()
    {'test': 8, 'train': 24, 'val': 8}
    >>> int(parts.groupby(m["speaker"]).nunique().max())  # every speaker in one part
    1
    """
    out = pd.Series("train", index=df.index, dtype=object)
    grouped = by_speaker and "speaker" in df and df["speaker"].notna().all() and df["speaker"].nunique() >= 3
    for part, frac in (("test", test), ("val", val)):
        rest = out.index[out.eq("train")]
        share = frac / max(1e-9, len(rest) / len(df))  # of what is still train
        if frac <= 0 or len(rest) < 2:
            continue
        held = _holdout(df.loc[rest], min(share, 0.5), seed, grouped)
        out.loc[held] = part
    return out


def _holdout(df: pd.DataFrame, share: float, seed: int, grouped: bool) -> pd.Index:
    from sklearn.model_selection import StratifiedGroupKFold, train_test_split

    n_folds = max(2, int(round(1 / share)))
    if grouped:
        n_folds = min(n_folds, df["speaker"].nunique())
        folds = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        _, held = next(folds.split(df, df["emotion"], groups=df["speaker"].astype(str)))
        return df.index[held]
    counts = df["emotion"].value_counts()
    stratify = df["emotion"] if counts.min() >= 2 else None
    _, held = train_test_split(df.index, test_size=share, random_state=seed, stratify=stratify)
    return pd.Index(held)


#: The licence of each corpus of ``../shared`` (its README), as a model card lists them.
LICENCES = {"crema-d": "ODbL 1.0, contents DbCL 1.0", "ravdess": "CC BY-NC-SA 4.0", "tess": "CC BY-NC-ND 4.0",
            "savee": "research use", "nemo": "CC BY-NC-SA 4.0", "emotiontts-ko": "CC BY-NC-SA 4.0"}


def corpus_entries(rows: pd.DataFrame) -> list[dict]:
    """What a model card says of its training corpora: each one's clips, speakers and licence.

    >>> corpus_entries(pd.DataFrame({"corpus": ["nemo", "nemo"], "speaker": ["a", "b"]}))
    [{'corpus': 'nemo', 'clips': 2, 'speakers': 2, 'licence': 'CC BY-NC-SA 4.0'}]
    """
    if "corpus" not in rows:
        return []
    return [{"corpus": c, "clips": int(len(g)), "speakers": int(g["speaker"].nunique()) if "speaker" in g else None,
             "licence": LICENCES.get(c, "see the corpus")} for c, g in rows.groupby("corpus", sort=True)]


#: Fewest labelled clips of a class (training and validation together) that training accepts.
MIN_CLIPS_PER_CLASS = 5


def build_manifest(source: str | Path, *, corpus_format: str = "folders", speaker: str | None = None,
                   label_column: str = "emotion", val: float = 0.0, test: float = 0.0,
                   seed: int = 0) -> tuple[pd.DataFrame, list[str]]:
    """A manifest (``path, emotion[, speaker, split]``) of ``source``: a folder per class
    (``corpus_format="folders"``), a corpus in its own layout (:data:`FORMATS`) or a CSV of labels;
    ``speaker``: a regex with a group taking the speaker from each path; ``val``/``test``: shares
    of whole speakers for a split column (:func:`speaker_split`). Returns it with warnings (one
    sentence each); raises ``ValueError`` (one sentence) when nothing can be made of ``source``."""
    source = Path(source)
    if not (0 <= val < 1 and 0 <= test < 1 and val + test < 1):
        raise ValueError("--val and --test are shares between 0 and 1 that sum to less than 1.")
    if source.is_file() and source.suffix.lower() == ".csv":
        df = read_labels_csv(source, label_column=label_column)
    elif not source.is_dir():
        raise ValueError(f"{source} is neither a folder nor a CSV file.")
    elif corpus_format == "folders":
        df = read_class_folders(source)
    elif corpus_format in FORMATS:
        df = read_corpus(source, corpus_format)
    else:
        raise ValueError(f"unknown format {corpus_format!r}; choose folders or one of {', '.join(FORMATS)}.")
    if df.empty:
        layout = "audio files in class folders" if corpus_format == "folders" else f"{corpus_format} files"
        raise ValueError(f"no {layout} with a label were found under {source}; nothing written." if source.is_dir()
                         else f"the CSV {source} has no rows; nothing written.")
    warnings = []
    if speaker:
        df["speaker"] = speakers_from_paths(df["path"], speaker)
        if df["speaker"].isna().any():
            n = int(df["speaker"].isna().sum())
            warnings.append(f"--speaker found no speaker in {n} of {len(df)} paths, e.g. "
                            f"{df.loc[df['speaker'].isna(), 'path'].iloc[0]}")
    if val or test:
        df["split"] = speaker_split(df, val=val, test=test, seed=seed)
    few = df["emotion"].value_counts().loc[lambda n: n < MIN_CLIPS_PER_CLASS]
    if len(few):
        warnings.append(f"{', '.join(f'{c} has {n}' for c, n in few.items())} clips; fine-tuning needs at least "
                        f"{MIN_CLIPS_PER_CLASS} per class (10 or more is where it pays): label more, or drop those "
                        "classes.")
    return df, warnings
