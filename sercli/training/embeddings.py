"""Pooled Whisper-encoder embeddings of a manifest's clips, cached once per encoder size.

Training an emotion head on a frozen encoder then takes seconds: every clip is decoded and cut
into windows by the same code as ``annotate`` (:func:`sercli.windowing.windows` with
:func:`sercli.features.whisper_params`), each window goes through the encoder once, and the
mean and standard deviation over its 150 steps of *every* block's output (after Whisper's final
layer norm) are stored, so a head can be trained on any depth. Development and training only
(imports Keras/TensorFlow).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import features as F
from .. import windowing as W
from ..audio import decode

__all__ = ["EmbeddingCache", "cache_embeddings", "clip_windows", "load_cache", "pool"]

log = logging.getLogger(__name__)
_CHUNK = 256  # clips per cache file (the unit of checkpointing)


def pool(hidden: np.ndarray) -> np.ndarray:
    """Mean and standard deviation over time: ``(n, steps, d)`` -> ``(n, 2 d)``."""
    return np.concatenate([hidden.mean(axis=1), hidden.std(axis=1)], axis=-1)


@dataclass(frozen=True)
class EmbeddingCache:
    """Window embeddings of clips: ``emb`` ``(n_windows, layers, 2 d)`` float16, ``clip``
    ``(n_windows,)`` index into ``paths``, and each window's ``start_s``, ``end_s``, ``silent``."""

    paths: list[str]
    emb: np.ndarray
    clip: np.ndarray
    start_s: np.ndarray
    end_s: np.ndarray
    silent: np.ndarray


def clip_windows(path: str, params: F.FeatureParams) -> W.Windows | str:
    """A clip's windows as annotate cuts them, or why it is left out (one sentence)."""
    try:
        audio = decode(path, sample_rate=params.sample_rate)
    except Exception as exc:
        return str(exc)
    if len(audio.samples) < params.min_samples:
        return "shorter than 0.25 s"
    return W.windows(audio.samples, params)


def _windows_of(path: str, params: F.FeatureParams) -> W.Windows | None:
    w = clip_windows(path, params)
    if isinstance(w, str):  # reported; the clip is left out
        log.warning("skipped %s: %s", path, w)
        return None
    return w


def cache_embeddings(paths: list[str], *, size: str, out_dir: str | Path, batch: int = 32) -> None:
    """Write the pooled per-block embeddings of ``paths`` to ``out_dir/chunk-NNNN.npz``.

    Checkpointed: chunks already written are skipped, so an interrupted run resumes.
    """
    from joblib import Parallel, delayed

    from .encoder import build_encoder, load_weights

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = F.whisper_params()
    encoder = None
    for c in range(0, len(paths), _CHUNK):
        target = out / f"chunk-{c // _CHUNK:04d}.npz"
        if target.exists():
            continue
        if encoder is None:
            encoder = build_encoder(load_weights(size), frames=params.window_frames, outputs="all")
        part = paths[c:c + _CHUNK]
        wins = Parallel(n_jobs=2, prefer="threads")(delayed(_windows_of)(p, params) for p in part)
        keep = [(i, w) for i, w in enumerate(wins) if w is not None]
        x = np.concatenate([w.x for _, w in keep])
        embs = []
        for b in range(0, len(x), batch):
            hidden = encoder(x[b:b + batch], training=False)
            embs.append(np.stack([pool(np.asarray(h)) for h in hidden], axis=1).astype(np.float16))
        tmp = target.with_suffix(".tmp.npz")
        np.savez(tmp, paths=np.array(part), emb=np.concatenate(embs),
                 clip=np.concatenate([np.full(len(w.x), c + i) for i, w in keep]),
                 start_s=np.concatenate([w.start_s for _, w in keep]),
                 end_s=np.concatenate([w.end_s for _, w in keep]),
                 silent=np.concatenate([w.silent for _, w in keep]))
        tmp.rename(target)
        log.info("%s: %d clips, %d windows", target.name, len(keep), len(x))


def load_cache(paths: list[str], out_dir: str | Path) -> EmbeddingCache:
    """The cache written by :func:`cache_embeddings` for the same ``paths``."""
    files = sorted(Path(out_dir).glob("chunk-[0-9][0-9][0-9][0-9].npz"))
    parts = [np.load(f) for f in files]
    return EmbeddingCache(paths=list(paths), emb=np.concatenate([p["emb"] for p in parts]),
                          clip=np.concatenate([p["clip"] for p in parts]),
                          start_s=np.concatenate([p["start_s"] for p in parts]),
                          end_s=np.concatenate([p["end_s"] for p in parts]),
                          silent=np.concatenate([p["silent"] for p in parts]))
