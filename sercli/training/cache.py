"""The feature cache: log-mel spectra of every training file (and its speed-perturbed
copies), extracted once in parallel and kept on disk."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path

import numpy as np

from .. import features as F
from ..audio import decode
from .options import SPEEDS

log = logging.getLogger("sercli.train")

__all__ = ["default_cache_dir", "load_features"]


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
