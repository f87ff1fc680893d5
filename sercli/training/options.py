"""What defines a training run (:class:`TrainOptions`, recorded in the card), and which
manifest rows train and validate."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from .corpora import MIN_CLIPS_PER_CLASS, speaker_split, split_labels

log = logging.getLogger("sercli.train")

__all__ = ["FINE_TUNING", "MIN_CLIPS_PER_CLASS", "SPEEDS", "TrainOptions", "check_clips", "manifest_hash", "split_rows"]


#: Speed-perturbation factors cached for training (1.0 = the original signal).
SPEEDS = (1.0, 0.9, 1.1)


@dataclass(frozen=True)
class TrainOptions:
    """Everything that defines a training run (recorded in the model card)."""

    arch: str = "mfcc-cnn"
    split_column: str = "split"
    epochs: int = 25
    batch_size: int = 32
    learning_rate: float = 1e-3
    #: epochs without a better val macro-F1 before stopping early
    patience: int = 10
    seed: int = 0
    val_fraction: float = 0.1
    mixup_alpha: float = 0.2
    noise_prob: float = 0.5
    spec_augment: bool = True
    speed_perturb: bool = True
    window_s: float = 3.0
    #: weight training files so that every corpus counts as much as every other
    corpus_balance: bool = False
    #: share of training windows given a random channel: band limits, EQ tilt, reverberation
    channel_prob: float = 0.0
    #: largest vocal-tract-length warp of the frequency axis (0.1: factors 0.9-1.1); 0 = off
    vtlp: float = 0.0
    #: feature parameters: trim leading/trailing non-speech, floor each window's dynamic range
    trim_db: float | None = None
    floor_db: float | None = None
    #: fine-tune this model (a name or directory) instead of starting from random weights
    init: str | None = None
    #: with ``init``: epochs that train only the classifier head before the rest is unfrozen
    freeze_epochs: int = 0
    #: with ``init``: the learning rate is scaled by this once the network is unfrozen
    unfrozen_lr_scale: float = 1.0
    #: draw at least this many windows per epoch (small manifests see each file several times)
    min_epoch_windows: int = 0
    #: what picks the best epoch on validation: "macro_f1", or "nll" (smoother on a few clips)
    select_by: str = "macro_f1"


#: Defaults of ``sercli train --init``: a short schedule for a few labelled clips per class.
FINE_TUNING = {"epochs": 30, "freeze_epochs": 0, "unfrozen_lr_scale": 0.1, "val_fraction": 0.2,
               "min_epoch_windows": 1024, "select_by": "nll"}




def manifest_hash(df: pd.DataFrame) -> str:
    """SHA-256 of the manifest rows that matter (file name, label, split), order-independent."""
    cols = [c for c in df.columns if c not in ("path",)]
    names = df["path"].map(lambda p: Path(p).name)
    cells = df[cols].astype(object).where(df[cols].notna(), "nan").astype(str)  # as pandas 2 wrote missing cells
    text = "\n".join(sorted(names + "," + cells.agg(",".join, axis=1)))
    return hashlib.sha256(text.encode()).hexdigest()


def validation_slice(train: pd.DataFrame, opts: TrainOptions) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Carve about ``opts.val_fraction`` of ``train`` out for validation (:func:`speaker_split`):
    whole speakers when a ``speaker`` column exists, else a stratified slice (and a warning).

    When whole speakers cannot give every class a clip on both sides (a few labelled clips
    from a few voices), the slice is stratified instead, and a warning says so.
    """
    parts = speaker_split(train, val=opts.val_fraction, seed=opts.seed)
    labels = set(train["emotion"])
    if "speaker" not in train or train["speaker"].nunique() < 3:
        log.warning("no speaker column with 3 or more speakers: the validation slice shares voices with "
                    "training, so early stopping and calibration are fitted on voices it has heard")
    elif any(set(train.loc[parts.eq(p), "emotion"]) != labels for p in ("train", "val")):
        log.warning("whole speakers cannot give every class clips in both training and validation: the "
                    "validation slice shares voices with training")
        parts = speaker_split(train, val=opts.val_fraction, seed=opts.seed, by_speaker=False)
    return train[parts.eq("train")], train[parts.eq("val")]


def split_rows(df: pd.DataFrame, opts: TrainOptions) -> tuple[pd.DataFrame, pd.DataFrame]:
    if opts.split_column == "split" and "split" not in df:  # a manifest of labelled clips only
        split = pd.Series("train", index=df.index)
    else:
        split = split_labels(df, opts.split_column)
    labelled = df["emotion"].notna()
    train = df[labelled & (split == "train")]
    val = df[labelled & (split == "val")]
    check_clips(pd.concat([train, val]))
    if val.empty:
        train, val = validation_slice(train, opts)
    return train.reset_index(drop=True), val.reset_index(drop=True)


def check_clips(rows: pd.DataFrame) -> None:
    """Refuse, in one sentence, a class with fewer than :data:`MIN_CLIPS_PER_CLASS` clips."""
    counts = rows["emotion"].value_counts()
    if counts.empty:
        raise ValueError("The manifest has no labelled training rows.")
    if len(counts) < 2:
        raise ValueError(f"The manifest has one class only ({counts.index[0]}); a classifier needs at least two.")
    few = counts[counts < MIN_CLIPS_PER_CLASS].sort_index()
    if len(few):
        listed = ", ".join(f"{c} has only {n}" for c, n in few.items())
        raise ValueError(f"Too few labelled clips to train and validate: every class needs at least "
                         f"{MIN_CLIPS_PER_CLASS} (at least one is kept for validation), and {listed}.")

