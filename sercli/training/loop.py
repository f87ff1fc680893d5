"""The checkpointed training loop: a network on cached, augmented features, early-stopped on
validation, resumable after a kill, calibrated and exported at the end."""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from .. import features as F
from ..adaptation import reference_entry
from .architectures import ARCHITECTURES, build
from .corpora import manifest_name, read_manifest
from ..models import KERAS_FILE, load_model
from ..reports import class_order
from .augment import epoch_data
from .cache import default_cache_dir, load_features
from .calibration import file_logits, file_probs, fit_temperature, nll
from .export import export, runtime_versions
from .options import TrainOptions, manifest_hash, split_rows

log = logging.getLogger("sercli.train")

__all__ = ["cosine_lr", "train"]


def cosine_lr(epoch: int, opts: TrainOptions) -> float:
    """Learning rate of ``epoch`` (0-based): cosine decay from ``learning_rate`` to 1 % of it.

    >>> opts = TrainOptions(epochs=11, learning_rate=1e-3)
    >>> [round(cosine_lr(e, opts) * 1e3, 3) for e in (0, 5, 10)]
    [1.0, 0.505, 0.01]
    """
    frac = epoch / max(opts.epochs - 1, 1)
    return float(opts.learning_rate * (0.01 + 0.99 * 0.5 * (1.0 + np.cos(np.pi * frac))))


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
    train_df, val_df = split_rows(df, opts)  # an unusable manifest is refused before TensorFlow loads
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
        x, y = epoch_data(epoch_items, epoch_labels, len(classes), params, opts, rng)
        hist = model.fit(x, y, batch_size=opts.batch_size, epochs=1, shuffle=True, verbose=0,
                         sample_weight=epoch_weight)
        val_probs = file_probs(file_logits(model, val_items, params, val_dur), 1.0)
        val_pred = val_probs.argmax(axis=1)
        f1 = float(f1_score(y_val, val_pred, average="macro"))
        acc = float((val_pred == y_val).mean())
        val_nll = nll(val_probs, y_val)
        state["epoch"] = epoch + 1
        state["train_seconds"] += time.time() - t_epoch
        state["history"].append({"epoch": epoch + 1, "loss": float(hist.history["loss"][-1]),
                                 "val_accuracy": acc, "val_macro_f1": f1, "val_nll": val_nll, "lr": lr})
        score = -val_nll if opts.select_by == "nll" else f1
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
    val_logits = file_logits(best, val_items, params, val_dur)
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
            "manifest": manifest_name(manifest),
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
            "versions": runtime_versions(),
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
