"""Fine-tuning an encoder model's head on a few labelled clips, anchored to the head it replaces.

The base head was trained on thousands of clips; a user has a few dozen. So the new head starts
from the base head's weights for the classes the base has (matched by name, ``angry`` ->
``anger``; a new class starts from zero) and a pull back toward that start
(:func:`~sercli.heads.fit_anchored`) keeps it there unless the labels say otherwise. Inputs are
standardised with the statistics of the user's corpus, as ``--adapt auto`` standardises them at
annotate time, never with those of the few labelled clips.

:func:`cross_validate` estimates, on the labelled clips alone, whether the fine-tuned head beats
the base restricted to the user's classes: folds hold out whole speakers (or groups) when the
labels say who speaks.
"""

from __future__ import annotations

import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ..classes import match_class
from ..heads import HEAD_FILE, Head, fit_anchored
from ..models import Model, load_model
from ..reports import class_order

__all__ = ["PULL_PER_CLIP", "ClipEmbeddings", "Comparison", "Labelled", "anchored_head", "base_classes_of", "check_base",
           "clip_uar", "cross_validate", "fine_tune_head", "restricted_head", "restricted_logits", "user_corpus_stats"]

#: Strength of the pull toward the base head, times the number of labelled clips (the pull on the
#: class-balanced mean cross-entropy is this over the clips: a prior worth a fixed number of clips,
#: which more labels outweigh). Chosen by ``benchmarks/finetune_sim.py`` (every corpus of
#: ``../shared`` in turn plays the user's, 5 draws): of fixed pulls 0.03-1 and 1-60 per clip, 30
#: is the strongest-margin rule never below zero-shot on any corpus at k = 5, 10, 20 labels per
#: class (worst gain +0.006), within 0.002 of the best mean.
PULL_PER_CLIP = 30.0


@dataclass(frozen=True)
class ClipEmbeddings:
    """Window embeddings of labelled clips: ``x`` ``(windows, dim)``, the clip of each window
    (index into the labels), and each window's duration weight (0 for windows without speech)."""

    x: np.ndarray
    clip: np.ndarray
    weight: np.ndarray

    @classmethod
    def of(cls, paths: list[str], emb: dict) -> "ClipEmbeddings":
        """From ``{path: (emb, start_s, end_s, silent)}`` (:func:`~sercli.training.window_embeddings`)."""
        xs, clips, weights = [], [], []
        for k, path in enumerate(paths):
            e, start, end, silent = emb[path]
            dur = np.maximum(np.asarray(end) - np.asarray(start), 1e-9)
            w = dur * ~silent if (~silent).any() else dur  # annotate's rule: speech windows, else all
            xs.append(np.asarray(e, np.float64))
            clips.append(np.full(len(e), k))
            weights.append(w)
        return cls(np.concatenate(xs), np.concatenate(clips), np.concatenate(weights))

    def subset(self, clips: np.ndarray) -> tuple["ClipEmbeddings", np.ndarray]:
        """The windows of ``clips`` (renumbered 0..), and the original clip index of each new one."""
        keep = np.isin(self.clip, clips)
        old = np.unique(self.clip[keep])
        return ClipEmbeddings(self.x[keep], np.searchsorted(old, self.clip[keep]), self.weight[keep]), old


def base_classes_of(classes: list[str], base: tuple[str, ...]) -> dict[str, str]:
    """The base model's class behind each of the user's ``classes``: the same name, the same name in
    another case, or a common spelling (``angry`` -> ``anger``); classes the base lacks are left out.

    >>> base_classes_of(["Angry", "calm", "sad"], ("anger", "neutral", "sadness"))
    {'Angry': 'anger', 'sad': 'sadness'}
    """
    return {c: target for c in classes if (target := match_class(c, base)) is not None}


def restricted_logits(head: Head, classes: list[str], base: tuple[str, ...], mapping: dict[str, str]) \
        -> tuple[np.ndarray, np.ndarray]:
    """The base head's first layer ``(W, b)`` in standardised space, one column per user class: the
    mapped base class's weights, or zeros for a class the base lacks."""
    w, b = head.layers[0]
    cols_w, cols_b = [], []
    for c in classes:
        if c in mapping:
            j = base.index(mapping[c])
            cols_w.append(w[:, j])
            cols_b.append(b[j])
        else:
            cols_w.append(np.zeros(w.shape[0]))
            cols_b.append(0.0)
    return np.stack(cols_w, axis=1), np.array(cols_b)


def restricted_head(base: Head, base_classes: tuple[str, ...], classes: list[str],
                    stats: tuple[np.ndarray, np.ndarray]) -> Head:
    """The base head answering among ``classes`` only, standardised with the user's corpus ``stats``:
    the zero-shot model fine-tuning must beat (a class the base lacks is never chosen)."""
    mapping = base_classes_of(classes, base_classes)
    w0, b0 = restricted_logits(_in_z(base), classes, base_classes, mapping)
    never = np.array([c not in mapping for c in classes])
    return Head(mean=np.asarray(stats[0], np.float64), scale=np.asarray(stats[1], np.float64),
                layers=[(w0, np.where(never, -1e4, b0))])


def anchored_head(base: Head, base_classes: tuple[str, ...], classes: list[str], data: ClipEmbeddings,
                  labels: np.ndarray, stats: tuple[np.ndarray, np.ndarray], *, pull: float | None = None) -> Head:
    """A linear head for ``classes`` fitted on the windows of labelled clips (``labels``: a class
    index per clip), standardised with the user's corpus ``stats`` (mean, scale), started from and
    pulled toward the base head (:func:`base_classes_of` matches the classes). ``pull``: default
    :data:`PULL_PER_CLIP` over the number of clips."""
    if len(base.layers) != 1:
        raise ValueError("Anchored fine-tuning needs a linear base head.")
    mapping = base_classes_of(classes, base_classes)
    w0, b0 = restricted_logits(_in_z(base), classes, base_classes, mapping)
    if pull is None:
        pull = PULL_PER_CLIP / (int(data.clip.max()) + 1)
    mean, scale = stats
    speech = data.weight > 0
    z = (data.x[speech] - mean) / scale
    w, b = fit_anchored(z, labels[data.clip[speech]], w0, b0, pull=pull)
    return Head(mean=np.asarray(mean, np.float64), scale=np.asarray(scale, np.float64), layers=[(w, b)],
                train_prior=np.full(len(classes), 1.0 / len(classes)))


def _in_z(head: Head) -> Head:
    """The head as a function of inputs already standardised by any corpus's statistics: its first
    layer with its own reference statistics taken out (what ``--adapt corpus`` applies)."""
    return Head(mean=np.zeros_like(head.mean), scale=np.ones_like(head.scale), layers=head.layers, C=head.C)


def clip_uar(logits: np.ndarray, data: ClipEmbeddings, labels: np.ndarray, temperature: float = 1.0) -> float:
    """UAR of clip decisions: each clip's duration-weighted mean of its windows' probabilities."""
    z = logits / temperature
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    n = data.clip.max() + 1
    sums = np.zeros((n, p.shape[1]))
    np.add.at(sums, data.clip, p * data.weight[:, None])
    pred = sums.argmax(axis=1)
    return float(np.mean([np.mean(pred[labels == c] == c) for c in np.unique(labels)]))


@dataclass(frozen=True)
class Comparison:
    """Cross-validated UAR of the base model restricted to the user's classes and of the fine-tuned
    head, per fold, and how the folds were made."""

    base: list[float]
    tuned: list[float]
    folds: str

    @property
    def base_wins(self) -> bool:
        """Whether the base model did better than fine-tuning, cross-validated."""
        return float(np.mean(self.base)) > float(np.mean(self.tuned))

    def line(self) -> str:
        """One line: both means with their spread, and what to do when fine-tuning does not help."""
        b, t = np.mean(self.base), np.mean(self.tuned)
        text = (f"cross-validated UAR ({self.folds}): base model {b:.3f} ± {np.std(self.base):.3f}, "
                f"fine-tuned {t:.3f} ± {np.std(self.tuned):.3f}")
        if t <= b:
            text += ("; fine-tuning did not beat the base model on these labels (label more clips, from more "
                     "speakers): where your classes are all the base model's, the model written is the base "
                     "model answering among them, as annotate --classes does")
        return text

    def to_dict(self) -> dict:
        return {"folds": self.folds, "base_uar": [round(v, 4) for v in self.base],
                "tuned_uar": [round(v, 4) for v in self.tuned], "base_mean": round(float(np.mean(self.base)), 4),
                "tuned_mean": round(float(np.mean(self.tuned)), 4)}


def cross_validate(base: Head, base_classes: tuple[str, ...], classes: list[str], data: ClipEmbeddings,
                   labels: np.ndarray, stats: tuple[np.ndarray, np.ndarray], *, groups: pd.Series | None,
                   pull: float | None = None, folds: int = 5, seed: int = 0) -> Comparison:
    """UAR of the base (restricted to ``classes``) and of :func:`anchored_head` on held-out folds of the
    labelled clips: whole ``groups`` (speakers) held out when there are at least 3, else stratified folds."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    zero_shot = restricted_head(base, base_classes, classes, stats)
    idx = np.arange(len(labels))
    grouped = groups is not None and groups.notna().all() and groups.nunique() >= 3
    n_min = int(np.bincount(labels).min())
    if grouped:
        n = min(folds, groups.nunique())
        splitter = StratifiedGroupKFold(n_splits=n, shuffle=True, random_state=seed)
        split = splitter.split(idx, labels, groups=groups.astype(str).to_numpy())
        how = f"{n} folds of whole speakers"
    else:
        n = max(2, min(folds, n_min))
        split = StratifiedKFold(n_splits=n, shuffle=True, random_state=seed).split(idx, labels)
        how = f"{n} stratified folds (no speaker column: folds share voices)"
    base_scores, tuned_scores = [], []
    for train_idx, test_idx in split:
        test, _ = data.subset(test_idx)
        train, _ = data.subset(train_idx)
        y_test, y_train = labels[test_idx], labels[train_idx]
        if len(np.unique(y_test)) < 2:
            continue
        base_scores.append(clip_uar(zero_shot.logits(test.x), test, y_test))
        head = anchored_head(base, base_classes, classes, train, y_train, stats, pull=pull)
        tuned_scores.append(clip_uar(head.logits(test.x), test, y_test))
    return Comparison(base_scores, tuned_scores, how)


def user_corpus_stats(model: Model, *, corpus: str | Path | None, manifest_paths: list[str],
                      jobs: int) -> tuple[tuple[np.ndarray, np.ndarray], str]:
    """The statistics the fine-tuned head standardises with, and what they are (a noun phrase):
    an emotion table's (``corpus``: a table that ``annotate`` or ``sercli label`` wrote with this
    base model, adapted to its corpus), else the files of ``corpus`` (a folder), else every file
    the manifest lists (labelled or not) when they are enough to stand for a corpus, else the
    base model's training corpora's."""
    from ..adaptation import MIN_SEGMENTS, SAMPLE_FILES, TooFewFiles
    from ..discovery import discover
    from ..labeling import is_table
    from ..output import table_metadata
    from ..job import Job
    from ..workers import LocalExecutors, resolve_jobs

    if corpus is not None and is_table(corpus):
        meta = table_metadata(Path(corpus)) or {}
        if meta.get("model_sha256") != model.identity or meta.get("adapt") != "corpus" or not meta.get("shift"):
            raise ValueError(f"{corpus} was not annotated by {model.name!r} adapted to its corpus; pass the folder "
                             "of your recordings as --corpus instead.")
        mean, scale = np.split(np.asarray(meta["shift"], np.float64), 2)
        return (mean, scale), f"the corpus statistics stored in {corpus}"
    paths = discover([str(corpus)]) if corpus is not None else sorted(set(manifest_paths))
    job = Job.create(model.path, adapt="corpus")  # measured as annotate measures the corpus it adapts to
    try:
        job.adapt_to(paths, LocalExecutors(resolve_jobs(jobs)))
    except TooFewFiles:
        if corpus is not None:
            raise ValueError(f"{corpus} has under {MIN_SEGMENTS} speech segments, too few to stand for a corpus.") \
                from None
        return (model.head.mean, model.head.scale), (f"the base model's training statistics (the manifest's "
                                                     f"{len(paths)} files give under {MIN_SEGMENTS} speech segments: "
                                                     "pass --corpus)")
    mean, scale = np.split(np.asarray(job.options.shift, np.float64), 2)
    return (mean, scale), f"the statistics of {min(len(paths), SAMPLE_FILES)} files of {corpus or 'the manifest'}"


@dataclass
class Labelled:
    """A manifest's labelled clips, ready to fit: their rows (labels in the model's spelling), the
    classes, the window embeddings, the user's corpus statistics and the mapping of spellings."""

    rows: pd.DataFrame
    classes: list[str]
    labels: np.ndarray
    data: ClipEmbeddings
    stats: tuple[np.ndarray, np.ndarray]
    stats_from: str
    mapping: dict[str, str]
    manifest_sha256: str

    @classmethod
    def read(cls, model: Model, manifest: str | Path, *, corpus: str | Path | None = None, jobs: int = -1) -> "Labelled":
        """Read and embed the labelled clips of ``manifest`` with ``model``'s encoder. Raises ``ValueError``
        (one sentence) for a manifest that cannot train (fewer than 5 clips of a class, one class)."""
        from .corpora import read_manifest
        from .encoder_model import window_embeddings
        from .options import MIN_CLIPS_PER_CLASS, check_clips, manifest_hash

        df = read_manifest(manifest)
        rows = df[df["emotion"].notna() & df["emotion"].astype(str).ne("")].reset_index(drop=True)
        check_clips(rows)
        mapping = base_classes_of(sorted(set(rows["emotion"])), model.all_classes)
        rows["emotion"] = rows["emotion"].map(lambda c: mapping.get(c, c))
        few = rows["emotion"].value_counts().loc[lambda n: n < MIN_CLIPS_PER_CLASS]
        if len(few):
            raise ValueError(f"{', '.join(f'{c} has {n}' for c, n in few.items())} labelled clips; fine-tuning needs at "
                             f"least {MIN_CLIPS_PER_CLASS} per class: label more, or drop those classes.")
        emb = window_embeddings(list(rows["path"]), model.path, jobs=jobs)
        rows = rows[rows["path"].isin(emb)].reset_index(drop=True)
        classes = class_order(set(rows["emotion"]))
        stats, stats_from = user_corpus_stats(model, corpus=corpus, manifest_paths=list(df["path"]), jobs=jobs)
        return cls(rows, classes, rows["emotion"].map({c: i for i, c in enumerate(classes)}).to_numpy(),
                   ClipEmbeddings.of(list(rows["path"]), emb), stats, stats_from, mapping, manifest_hash(df))

    def compare(self, model: Model, *, pull: float | None = None, seed: int = 0) -> Comparison:
        """:func:`cross_validate` on these clips (whole speakers held out when the manifest names them)."""
        return cross_validate(model.head, model.all_classes, self.classes, self.data, self.labels, self.stats,
                              groups=self.rows["speaker"] if "speaker" in self.rows else None, pull=pull, seed=seed)


def check_base(model: Model) -> None:
    """Refuse, in one sentence, a base model that anchored fine-tuning cannot start from."""
    if model.head is None or len(model.head.layers) != 1:
        raise ValueError(f"{model.name!r} cannot be fine-tuned so that it never loses to itself (only an encoder "
                         "model's linear head can be anchored, and checked against its base in seconds); fine-tune "
                         "the default model instead: --init whisper-base.")


def fine_tune_head(base: str | Path, manifest: str | Path, out: str | Path, *, corpus: str | Path | None = None,
                   pull: float | None = None, seed: int = 0, jobs: int = -1, command: str = "") -> dict:
    """Fine-tune the encoder model ``base`` on the labelled clips of ``manifest`` (any classes; a
    class the base has, by name or common spelling, starts from the base head's weights), write
    the model to ``out`` (the encoder copied unchanged) and return its card.

    The head is :func:`anchored_head`, standardised with :func:`user_corpus_stats` (``corpus``: a
    folder of the user's recordings, or the emotion table of one). The card holds
    :func:`cross_validate`'s comparison with the base restricted to the same classes
    (``card["training"]["comparison_line"]``); where the base wins it and the user's classes are
    all the base's, the head written is the base's, restricted (:func:`restricted_head`): never
    worse on the user's own labels.
    Raises ``ValueError`` (one sentence) for an ``out`` that holds a model already, a base
    without a linear head, and a manifest that cannot train (too few clips, one class).
    """
    from .corpora import manifest_name
    from ..models import MODEL_FILE, PARAMS_FILE
    from .encoder_model import ENCODER_PACKAGES, LICENCE_FILE, _cores, _write_card
    from .export import runtime_versions

    t0 = time.time()
    model = load_model(base)
    out = Path(out)
    if (out / "card.json").exists():  # a fine-tuning takes seconds: nothing to resume, a model to keep
        raise ValueError(f"{out} holds a model already; choose another --out, or delete it first.")
    check_base(model)
    clips = Labelled.read(model, manifest, corpus=corpus, jobs=jobs)
    comparison = clips.compare(model, pull=pull, seed=seed)
    kept_base = comparison.base_wins and all(c in model.all_classes for c in clips.classes)
    if kept_base:  # never worse on the user's own labels: the base, answering among their classes
        head = restricted_head(model.head, model.all_classes, clips.classes, clips.stats)
    else:
        head = anchored_head(model.head, model.all_classes, clips.classes, clips.data, clips.labels, clips.stats,
                             pull=pull)
    out.mkdir(parents=True, exist_ok=True)
    for name in (MODEL_FILE, PARAMS_FILE, LICENCE_FILE):
        if model.path != out.resolve() and (model.path / name).exists():
            shutil.copyfile(model.path / name, out / name)
    head.save(out / HEAD_FILE)
    counts = clips.rows["emotion"].value_counts()
    card = {"name": out.name, "arch": model.card.get("arch", ""), "classes": clips.classes,
            "temperature": model.temperature, "params": model.card.get("params"),
            "encoder": model.card.get("encoder", {}), "adapt_default": "corpus",
            "training": {"command": command, "manifest": manifest_name(manifest), "manifest_sha256": clips.manifest_sha256,
                         "base_model": {"name": model.name, "sha256": model.identity, "classes": list(model.all_classes)},
                         "class_mapping": clips.mapping,
                         "new_classes": [c for c in clips.classes if c not in model.all_classes],
                         "clips_per_class": {c: int(counts.get(c, 0)) for c in clips.classes},
                         "n_train": len(clips.rows),
                         "method": ("the base model's head restricted to these classes: on these labels, "
                                    "fine-tuning did not beat it (cross-validated)") if kept_base else
                                   ("anchored: started from the base head and pulled toward it (pull "
                                    + (f"{pull:g}" if pull is not None else f"{PULL_PER_CLIP:g} / "
                                       f"{len(clips.rows)} clips") + ")"),
                         "standardised_by": clips.stats_from, "comparison": comparison.to_dict(),
                         "comparison_line": comparison.line(), "options": {"pull": pull, "seed": seed},
                         "train_seconds": round(time.time() - t0, 1),
                         "machine": f"{platform.machine()}, {_cores()} cores",
                         "versions": runtime_versions(ENCODER_PACKAGES)}}
    _write_card(out, card)
    return card
