"""Training: feature cache, augmentation, checkpointed training loop, calibration, export.

``train()`` trains on the manifest's ``train`` rows, early-stops on ``val`` (or on a
stratified slice of ``train`` when there is no ``val``), never reads ``test``, and
writes a model directory that :mod:`sercli.models` loads. Imports Keras/TensorFlow.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from . import features as F
from .adaptation import CARD_KEY, reference_entry
from .architectures import ARCHITECTURES, build
from .audio import decode
from .corpora import read_manifest, speaker_split, split_labels
from .models import KERAS_FILE, MODEL_FILE, PARAMS_FILE, load_model, softmax, write_card
from .pipeline import aggregate
from .reports import class_order

__all__ = ["FINE_TUNING", "MIN_CLIPS_PER_CLASS", "TrainOptions", "manifest_hash", "train"]

log = logging.getLogger("sercli.train")

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
#: Fewest labelled clips of a class (training and validation together) that training accepts.
MIN_CLIPS_PER_CLASS = 5


def manifest_hash(df: pd.DataFrame) -> str:
    """SHA-256 of the manifest rows that matter (file name, label, split), order-independent."""
    cols = [c for c in df.columns if c not in ("path",)]
    names = df["path"].map(lambda p: Path(p).name)
    cells = df[cols].astype(object).where(df[cols].notna(), "nan").astype(str)  # as pandas 2 wrote missing cells
    text = "\n".join(sorted(names + "," + cells.agg(",".join, axis=1)))
    return hashlib.sha256(text.encode()).hexdigest()


# --------------------------------------------------------------------------- cache


def _extract_one(path: str, params: F.FeatureParams, speeds: tuple[float, ...]):
    import soxr

    try:
        audio = decode(path, sample_rate=params.sample_rate)
    except Exception as exc:  # reported, the file is then left out of training
        return str(exc)
    out = []
    for speed in speeds:
        y = audio.samples
        if speed != 1.0:
            y = soxr.resample(y, params.sample_rate, int(round(params.sample_rate / speed)))
        out.append((F.log_mel(y, params).astype(np.float16), F.frame_db(y, params).astype(np.float16)))
    return out


def default_cache_dir() -> Path:
    """Where features are cached unless a command says otherwise: ``~/.cache/sercli``."""
    return Path.home() / ".cache" / "sercli"


def load_features(paths: list[str], params: F.FeatureParams, *, cache_dir: Path, jobs: int,
                  speeds: tuple[float, ...] = SPEEDS) -> dict[str, list]:
    """``{path: [(log_mel, frame_db) per speed]}``, computed once and cached on disk."""
    from joblib import Parallel, delayed

    key_params = {k: v for k, v in params.to_dict().items()
                  if k in ("sample_rate", "n_fft", "hop_length", "n_mels", "fmin", "fmax")}
    key = hashlib.sha256(json.dumps([key_params, speeds]).encode()).hexdigest()[:16]
    cache_file = cache_dir / f"features-{key}.npz"
    cached: dict[str, list] = {}
    if cache_file.exists():
        with np.load(cache_file, allow_pickle=False) as z:
            names = list(z["names"])
            offsets, mel, level = z["offsets"], z["mel"], z["level"]
            lo = z["level_offsets"]
            for i, name in enumerate(names):
                entries = []
                for s in range(len(speeds)):
                    j = i * len(speeds) + s
                    entries.append((mel[:, offsets[j]:offsets[j + 1]], level[lo[j]:lo[j + 1]]))
                cached[name] = entries
    todo = [p for p in paths if p not in cached]
    if todo:
        log.info("extracting features of %d files (%d cached)", len(todo), len(cached))
        results = Parallel(n_jobs=jobs, batch_size=32)(delayed(_extract_one)(p, params, speeds) for p in todo)
        for p, r in zip(todo, results):
            if isinstance(r, str):
                log.warning("skipped %s: %s", p, r)
            else:
                cached[p] = r
        _save_cache(cache_file, cached, params.n_mels)
    return {p: cached[p] for p in paths if p in cached}


def _save_cache(cache_file: Path, cached: dict[str, list], n_mels: int) -> None:
    names = list(cached)
    mels = [m for n in names for m, _ in cached[n]]
    levels = [lv for n in names for _, lv in cached[n]]
    offsets = np.concatenate([[0], np.cumsum([m.shape[1] for m in mels])])
    level_offsets = np.concatenate([[0], np.cumsum([len(lv) for lv in levels])])
    cache_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp.npz")
    np.savez(tmp, names=np.array(names), offsets=offsets, level_offsets=level_offsets,
             mel=np.concatenate(mels, axis=1) if mels else np.zeros((n_mels, 0), np.float16),
             level=np.concatenate(levels) if levels else np.zeros(0, np.float16))
    os.replace(tmp, cache_file)


# --------------------------------------------------------------------------- augmentation


@functools.lru_cache(maxsize=4)
def _mel_hz(params: F.FeatureParams) -> np.ndarray:
    """Centre frequency (Hz) of each mel band."""
    return F.mel_frequencies(params)[1:-1]


@functools.lru_cache(maxsize=64)
def _warp_table(params: F.FeatureParams, alpha: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    hz = _mel_hz(params)
    pos = np.interp(hz / alpha, hz, np.arange(len(hz), dtype=np.float64))  # fractional source band
    lo = np.floor(pos).astype(int)
    return lo, np.minimum(lo + 1, len(hz) - 1), (pos - lo)[:, None].astype(np.float32)


def _warp(mel: np.ndarray, params: F.FeatureParams, alpha: float) -> np.ndarray:
    """Vocal-tract-length perturbation: the spectrum at ``f`` moves to ``alpha * f`` (alpha in steps of 0.01)."""
    lo, hi, w = _warp_table(params, round(alpha, 2))
    return mel[lo] * (1 - w) + mel[hi] * w


def _random_channel(mel: np.ndarray, params: F.FeatureParams, rng: np.random.Generator) -> np.ndarray:
    """A random recording channel on a log-mel window (dB): band limits, EQ tilt, room reverberation."""
    from scipy.signal import lfilter

    hz = _mel_hz(params)
    floor = float(np.percentile(mel, 5))
    if rng.random() < 0.5:  # band limit: telephone, narrow- or wide-band codecs, cheap microphones
        low = rng.choice([0.0, 100.0, 200.0, 300.0])
        high = rng.choice([3400.0, 4000.0, 5500.0, 7000.0, 8000.0])
        outside = (hz < low) | (hz > high)
        mel = mel.copy()
        mel[outside] = np.minimum(mel[outside], floor) - 10.0
    # smooth EQ: a tilt of up to +-6 dB over the band and two random cosine ripples of up to +-3 dB
    pos = np.linspace(0.0, 1.0, len(hz))
    eq = rng.uniform(-6.0, 6.0) * (pos - 0.5)
    for k in (1, 2):
        eq += rng.uniform(-3.0, 3.0) * np.cos(np.pi * k * pos + rng.uniform(0, np.pi))
    mel = mel + eq[:, None].astype(np.float32)
    if rng.random() < 0.5:  # reverberation: an exponential tail in the power domain, RT60 0.2-1.0 s
        rt60 = rng.uniform(0.2, 1.0)
        decay = np.exp(-6.9 * params.hop_length / params.sample_rate / rt60)
        power = 10.0 ** (mel / 10.0)
        tail = lfilter([0.0, 1.0], [1.0, -decay], power, axis=1)
        wet = 10.0 ** (-rng.uniform(0.0, 12.0) / 10.0)  # direct-to-reverberant ratio 0-12 dB
        mel = (10.0 * np.log10(power + wet * (1 - decay) * tail + 1e-10)).astype(np.float32)
    return mel


def _augmented_window(entries: list, params: F.FeatureParams, opts: TrainOptions,
                      rng: np.random.Generator) -> np.ndarray:
    """One random training window ``(n_features, window_frames)`` from a file's cached features."""
    idx = int(rng.integers(len(entries))) if opts.speed_perturb else 0
    first, end = F.trim_bounds(entries[idx][1].astype(np.float32), params)
    mel = entries[idx][0][:, first:end].astype(np.float32)
    wf = params.window_frames
    if mel.shape[1] > wf:
        start = int(rng.integers(mel.shape[1] - wf + 1))
        mel = mel[:, start:start + wf]
    if opts.vtlp > 0:
        mel = _warp(mel, params, float(rng.uniform(1.0 - opts.vtlp, 1.0 + opts.vtlp)))
    if rng.random() < opts.channel_prob:
        mel = _random_channel(mel, params, rng)
    if rng.random() < opts.noise_prob:  # additive noise in the power domain, SNR 5-40 dB
        power = 10.0 ** (mel / 10.0)
        snr_db = rng.uniform(5.0, 40.0)
        noise = power.mean() / 10.0 ** (snr_db / 10.0) * rng.exponential(1.0, size=power.shape)
        mel = 10.0 * np.log10(power + noise + 1e-10)
    if opts.spec_augment:  # two frequency masks on the log-mel, filled with its mean
        for _ in range(2):
            width = int(rng.integers(0, params.n_mels // 8 + 1))
            f0 = int(rng.integers(0, params.n_mels - width + 1))
            mel[f0:f0 + width] = mel.mean()
    x = F.normalize_window(mel, params)
    if opts.spec_augment:  # two time masks on the model input
        for _ in range(2):
            width = int(rng.integers(0, wf // 10 + 1))
            t0 = int(rng.integers(0, wf - width + 1))
            x[:, t0:t0 + width] = 0.0
    return x


def _epoch_data(items: list, labels: np.ndarray, n_classes: int, params: F.FeatureParams, opts: TrainOptions,
                rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    x = np.stack([_augmented_window(e, params, opts, rng) for e in items])
    y = np.eye(n_classes, dtype=np.float32)[labels]
    if opts.mixup_alpha > 0:
        lam = rng.beta(opts.mixup_alpha, opts.mixup_alpha, size=len(x)).astype(np.float32)
        lam = np.maximum(lam, 1 - lam)  # the first sample dominates
        perm = rng.permutation(len(x))
        x = lam[:, None, None] * x + (1 - lam[:, None, None]) * x[perm]
        y = lam[:, None] * y + (1 - lam[:, None]) * y[perm]
    return x, y


# --------------------------------------------------------------------------- evaluation on cache


def _file_logits(model, items: list, params: F.FeatureParams, durations: list[float]) -> np.ndarray:
    """Per-file window logits, as ``annotate`` sees them: ``list[(n_windows, classes)]`` + silence masks."""
    wins = [F.windows_from_log_mel(e[0][0].astype(np.float32), e[0][1].astype(np.float32), params,
                                   duration_s=d) for e, d in zip(items, durations)]
    x = np.concatenate([w.x for w in wins])
    logits = model.predict(x, batch_size=256, verbose=0)
    out, i = [], 0
    for w in wins:
        out.append((logits[i:i + len(w.x)], w))
        i += len(w.x)
    return out


def _file_probs(file_logits: list, temperature: float) -> np.ndarray:
    return np.stack([aggregate(softmax(lg / temperature), w.start_s, w.end_s, w.silent) for lg, w in file_logits])


def _nll(probs: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of the true labels under ``probs`` ``(n, classes)``."""
    return float(-np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-12)).mean())


def fit_temperature(file_logits: list, labels: np.ndarray) -> float:
    """Temperature minimising the file-level negative log-likelihood on validation data."""
    from scipy.optimize import minimize_scalar

    def nll(log_t: float) -> float:
        p = _file_probs(file_logits, float(np.exp(log_t)))
        return _nll(p, labels)

    res = minimize_scalar(nll, bounds=(np.log(0.2), np.log(10.0)), method="bounded")
    return float(np.exp(res.x))


# --------------------------------------------------------------------------- training loop


def cosine_lr(epoch: int, opts: TrainOptions) -> float:
    """Learning rate of ``epoch`` (0-based): cosine decay from ``learning_rate`` to 1 % of it.

    >>> opts = TrainOptions(epochs=11, learning_rate=1e-3)
    >>> [round(cosine_lr(e, opts) * 1e3, 3) for e in (0, 5, 10)]
    [1.0, 0.505, 0.01]
    """
    frac = epoch / max(opts.epochs - 1, 1)
    return float(opts.learning_rate * (0.01 + 0.99 * 0.5 * (1.0 + np.cos(np.pi * frac))))


def _validation_slice(train: pd.DataFrame, opts: TrainOptions) -> tuple[pd.DataFrame, pd.DataFrame]:
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


def _split(df: pd.DataFrame, opts: TrainOptions) -> tuple[pd.DataFrame, pd.DataFrame]:
    if opts.split_column == "split" and "split" not in df:  # a manifest of labelled clips only
        split = pd.Series("train", index=df.index)
    else:
        split = split_labels(df, opts.split_column)
    labelled = df["emotion"].notna()
    train = df[labelled & (split == "train")]
    val = df[labelled & (split == "val")]
    _check_clips(pd.concat([train, val]))
    if val.empty:
        train, val = _validation_slice(train, opts)
    return train.reset_index(drop=True), val.reset_index(drop=True)


def _check_clips(rows: pd.DataFrame) -> None:
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


def _initial_model(opts: TrainOptions, params: F.FeatureParams, classes: list[str], base):
    """A fresh network, or the ``base`` model with its head fitted to ``classes``: kept when the
    classes are the same, else replaced, with the weights of the classes both share copied."""
    import keras

    if base is None:
        return build(opts.arch, params, n_classes=len(classes))
    model = keras.saving.load_model(base.path / KERAS_FILE, safe_mode=True, compile=False)
    if list(base.classes) == classes:
        return model
    head = model.get_layer("logits")
    outputs = keras.layers.Dense(len(classes), name="logits")(head.input)
    new = keras.Model(model.input, outputs, name=model.name)
    kernel, bias = (w.copy() for w in new.get_layer("logits").get_weights())
    old_kernel, old_bias = head.get_weights()
    for j, c in enumerate(classes):
        if c in base.classes:
            i = base.classes.index(c)
            kernel[:, j], bias[j] = old_kernel[:, i], old_bias[i]
    new.get_layer("logits").set_weights([kernel, bias])
    return new


def _set_trainable(model, *, head_only: bool) -> None:
    """Freeze all but the head, or all but batch normalisation (whose statistics stay those of the
    base model: a few clips would only add noise to them)."""
    from keras import layers

    for layer in model.layers:
        if head_only:
            layer.trainable = layer.name == "logits"
        else:
            layer.trainable = not isinstance(layer, layers.BatchNormalization)


def _compile(model, lr: float) -> None:
    import keras

    model.compile(optimizer=keras.optimizers.Adam(lr),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True), metrics=["accuracy"])


def train(manifest: str | Path, out: str | Path, opts: TrainOptions, *, jobs: int = -1,
          cache_dir: str | Path | None = None, command: str = "",
          on_epoch: Callable[[dict], None] | None = None) -> dict:
    """Train ``opts.arch`` on ``manifest`` into the model directory ``out``; returns the card.

    The model's classes are the manifest's labels (the shipped seven first, in their order,
    then others alphabetically). With ``opts.init`` the base model's feature front end and
    weights are the start; its head is kept when the classes are its own, else replaced.
    Checkpoints after every epoch in ``out/checkpoint``; calling again with the same
    arguments resumes from the last checkpoint. ``on_epoch`` gets each epoch's history entry
    (and, on resuming, the last one before).
    """
    out = Path(out)
    ckpt = out / "checkpoint"
    cache_dir = Path(cache_dir or default_cache_dir())
    base = load_model(opts.init) if opts.init else None
    if base is not None:  # the base model's front end, whatever the options said
        opts = replace(opts, arch=base.card.get("arch", opts.arch), window_s=base.params.window_s,
                       trim_db=base.params.trim_db, floor_db=base.params.floor_db)
    df = read_manifest(manifest)
    train_df, val_df = _split(df, opts)  # an unusable manifest is refused before TensorFlow loads
    import keras
    import tensorflow as tf

    ckpt.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(opts.seed)
    tf.config.experimental.enable_op_determinism()
    params = base.params if base is not None else F.FeatureParams(
        kind=ARCHITECTURES[opts.arch], window_s=opts.window_s, trim_db=opts.trim_db, floor_db=opts.floor_db)
    t0 = time.time()
    feats = load_features(list(train_df["path"]) + list(val_df["path"]), params,
                          cache_dir=cache_dir, jobs=jobs)
    train_df = train_df[train_df["path"].isin(feats)].reset_index(drop=True)
    val_df = val_df[val_df["path"].isin(feats)].reset_index(drop=True)
    if train_df.empty or val_df.empty:
        raise ValueError(f"No readable {'training' if train_df.empty else 'validation'} files in {manifest}.")
    classes = class_order(set(train_df["emotion"]) | set(val_df["emotion"]))
    label_index = {e: i for i, e in enumerate(classes)}
    y_train = train_df["emotion"].map(label_index).to_numpy()
    y_val = val_df["emotion"].map(label_index).to_numpy()
    train_items = [feats[p] for p in train_df["path"]]
    val_items = [feats[p] for p in val_df["path"]]
    val_dur = [len(e[0][1]) * params.hop_length / params.sample_rate for e in val_items]
    log.info("train %d files, val %d files, %d classes, features in %.0f s", len(train_items), len(val_items),
             len(classes), time.time() - t0)

    # balanced class weights, as one weight per training file
    counts = np.bincount(y_train, minlength=len(classes))
    sample_weight = (len(y_train) / (len(classes) * np.maximum(counts, 1)))[y_train].astype(np.float32)
    if opts.corpus_balance and "corpus" in train_df:
        share = train_df["corpus"].map(train_df["corpus"].value_counts(normalize=True)).to_numpy()
        sample_weight = sample_weight / (share * train_df["corpus"].nunique()).astype(np.float32)
        sample_weight = sample_weight / sample_weight.mean()
    repeats = max(1, -(-opts.min_epoch_windows // len(train_items)))  # each file this many times an epoch
    epoch_items, epoch_labels = train_items * repeats, np.tile(y_train, repeats)
    epoch_weight = np.tile(sample_weight, repeats)
    state_file = ckpt / "state.json"
    if state_file.exists():
        state = json.loads(state_file.read_text())
        _check_resume(state, opts, out)
        model = keras.saving.load_model(ckpt / "last.keras", safe_mode=True)
        log.info("resuming after epoch %d", state["epoch"])
        if on_epoch and state["history"]:
            on_epoch(state["history"][-1])
    else:
        state = {"epoch": 0, "best_score": -np.inf, "best_epoch": 0, "since_best": 0, "history": [],
                 "train_seconds": 0.0, "options": asdict(opts)}
        model = _initial_model(opts, params, classes, base)
        if base is not None and opts.freeze_epochs > 0:
            _set_trainable(model, head_only=True)
        _compile(model, opts.learning_rate)
    from sklearn.metrics import f1_score

    while state["epoch"] < opts.epochs and state["since_best"] < opts.patience:
        epoch = state["epoch"]
        t_epoch = time.time()
        rng = np.random.default_rng([opts.seed, epoch])
        keras.utils.set_random_seed(opts.seed * 1000 + epoch)
        lr = cosine_lr(epoch, opts)
        if base is not None and epoch >= opts.freeze_epochs:
            lr *= opts.unfrozen_lr_scale
            if epoch == opts.freeze_epochs:  # unfreeze, with a fresh optimiser for the new variables
                _set_trainable(model, head_only=False)
                _compile(model, lr)
        model.optimizer.learning_rate.assign(lr)
        x, y = _epoch_data(epoch_items, epoch_labels, len(classes), params, opts, rng)
        hist = model.fit(x, y, batch_size=opts.batch_size, epochs=1, shuffle=True, verbose=0,
                         sample_weight=epoch_weight)
        val_probs = _file_probs(_file_logits(model, val_items, params, val_dur), 1.0)
        val_pred = val_probs.argmax(axis=1)
        f1 = float(f1_score(y_val, val_pred, average="macro"))
        acc = float((val_pred == y_val).mean())
        nll = _nll(val_probs, y_val)
        state["epoch"] = epoch + 1
        state["train_seconds"] += time.time() - t_epoch
        state["history"].append({"epoch": epoch + 1, "loss": float(hist.history["loss"][-1]),
                                 "val_accuracy": acc, "val_macro_f1": f1, "val_nll": nll, "lr": lr})
        score = -nll if opts.select_by == "nll" else f1
        if score > state.get("best_score", state.get("best_f1", -np.inf)):  # best_f1: checkpoints before select_by
            state.update(best_score=score, best_epoch=epoch + 1, since_best=0)
            _save_atomic(model, ckpt / "best.keras")
        else:
            state["since_best"] += 1
        _save_atomic(model, ckpt / "last.keras")
        (ckpt / "state.tmp").write_text(json.dumps(state, indent=1))
        os.replace(ckpt / "state.tmp", state_file)  # last: a kill before it repeats this epoch
        log.info("epoch %d loss %.3f val acc %.3f macro-F1 %.3f (%.0f s)", epoch + 1,
                 state["history"][-1]["loss"], acc, f1, time.time() - t_epoch)
        if on_epoch:
            on_epoch(state["history"][-1])

    best = keras.saving.load_model(ckpt / "best.keras", safe_mode=True)
    val_logits = _file_logits(best, val_items, params, val_dur)
    temperature = fit_temperature(val_logits, y_val)
    chosen = state["history"][state["best_epoch"] - 1]
    log.info("best epoch %d by %s (val macro-F1 %.3f, log-loss %.3f), temperature %.3f", state["best_epoch"],
             opts.select_by, chosen["val_macro_f1"], chosen.get("val_nll", float("nan")), temperature)
    clips = pd.concat([train_df, val_df])["emotion"].value_counts()
    card = {
        "name": out.name,
        "arch": opts.arch,
        "classes": classes,
        "temperature": temperature,
        "training": {
            "command": command,
            "manifest": str(manifest),
            "manifest_sha256": manifest_hash(df),
            "split_column": opts.split_column,
            "n_train": len(train_items),
            "n_val": len(val_items),
            "clips_per_class": {c: int(clips.get(c, 0)) for c in classes},
            **({"base_model": {"name": base.name, "sha256": base.identity,
                               "classes": list(base.classes)}} if base is not None else {}),
            "options": asdict(opts),
            "best_epoch": state["best_epoch"],
            "epochs_run": state["epoch"],
            "val_macro_f1": chosen["val_macro_f1"],
            "train_seconds": round(state["train_seconds"], 1),
            "history": state["history"],
            "versions": _versions(),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, no GPU",
        },
        "params": best.count_params(),
        "adaptation": reference_entry((entries[0] for entries in train_items), params.n_mels),
    }
    export(best, params, card, out)
    return card


def _save_atomic(model, path: Path) -> None:
    """``model.save(path)`` through a temporary sibling, so a kill never leaves half a checkpoint."""
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(tmp)
    os.replace(tmp, path)


#: Options a resumed training may change: raising them extends the run.
_EXTENDABLE = ("epochs", "patience")


def _check_resume(state: dict, opts: TrainOptions, out: Path) -> None:
    """Refuse, in one sentence, to resume a checkpoint made with other options (but
    ``epochs`` and ``patience``, which a resume may raise to extend the run)."""
    old = state.get("options")
    if old is None:
        return  # a checkpoint from before options were recorded
    changed = [k for k, v in asdict(opts).items() if k in old and old[k] != v and k not in _EXTENDABLE]
    if changed:
        k = changed[0]
        raise ValueError(f"Cannot resume the training in {out}: it was started with {k} = {old[k]!r}, "
                         f"not {getattr(opts, k)!r}; run it with the same options, or remove {out / 'checkpoint'} "
                         "to start again.")


def export(model, params: F.FeatureParams, card: dict, out: Path) -> None:
    """Write ``model.keras`` (source of truth), ``model.tflite`` (inference) and ``params.json``."""
    import tensorflow as tf

    model.save(out / KERAS_FILE)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    with contextlib.redirect_stdout(io.StringIO()):  # the converter prints its saved signatures
        (out / MODEL_FILE).write_bytes(converter.convert())
    (out / PARAMS_FILE).write_text(json.dumps(params.to_dict(), indent=1))
    card_path = out / "card.json"
    old = json.loads(card_path.read_text()) if card_path.exists() else {}
    card = {**card, "evaluation": old.get("evaluation", {})}
    write_card(out, card)


def add_reference(model_dir: str | Path, manifest: str | Path, *, split_column: str = "split",
                  cache_dir: str | Path | None = None, jobs: int = -1, command: str = "") -> dict:
    """Store the envelope of the manifest's ``train`` rows (those a model was trained on) in the
    card of a model trained before training stored it; returns the card entry."""
    model = load_model(model_dir)
    df = read_manifest(manifest)
    paths = list(df.loc[split_labels(df, split_column).eq("train"), "path"])
    feats = load_features(paths, model.params, cache_dir=Path(cache_dir or default_cache_dir()), jobs=jobs)
    entry = {**reference_entry((feats[p][0] for p in paths if p in feats), model.params.n_mels),
             "command": command}
    card = {**model.card, CARD_KEY: entry}
    write_card(model.path, card)
    return entry


def _versions() -> dict[str, str]:
    """Versions of Python and the libraries training used, and the sercli commit when run from a git checkout."""
    import subprocess
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    checkout = Path(__file__).resolve().parent.parent
    if (checkout / ".git").exists():  # an installed wheel has no checkout and records no commit
        try:  # "<sha>" or "<sha>-dirty"
            git = subprocess.run(["git", "-C", str(checkout), "describe", "--always", "--dirty", "--abbrev=40"],
                                 capture_output=True, text=True, timeout=10)
            if git.returncode == 0:
                out["sercli_commit"] = git.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    for pkg in ("sercli", "keras", "tensorflow-cpu", "tensorflow", "librosa", "numpy", "soundfile", "soxr",
                "scipy", "ai-edge-litert"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out

