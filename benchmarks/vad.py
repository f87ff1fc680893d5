"""Measure the voice activity detection on long files built from real speech clips joined by
known gaps of silence, noise and music-like tones; prints frame accuracy and boundary error.

    python benchmarks/vad.py                      # the 12 bundled example clips
    python benchmarks/vad.py --clips 200          # clips from ../shared/corpora (if present)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

ROOT = Path(__file__).resolve().parent.parent
RATE = 16000


def _clips(n: int, seed: int) -> list[np.ndarray]:
    shared = ROOT.parent / "shared" / "corpora"
    if n > 12 and (shared / "manifest.csv").is_file():
        import pandas as pd

        m = pd.read_csv(shared / "manifest.csv").sample(n, random_state=seed)
        paths = [shared / p for p in m["path"]]
    else:
        paths = sorted((ROOT / "examples").glob("*.wav"))[:n]
    out = []
    for p in paths:
        y, sr = sf.read(p, dtype="float32")
        out.append(soxr.resample(y, sr, RATE).astype(np.float32) if sr != RATE else y)
    return out


def _gap(kind: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    if kind == "silence":
        return np.zeros(n, np.float32)
    if kind == "noise":  # pink-ish noise at about -35 dBFS
        white = rng.standard_normal(n)
        pink = np.cumsum(white) - np.convolve(np.cumsum(white), np.ones(200) / 200, mode="same")
        return (0.018 * pink / (pink.std() + 1e-9)).astype(np.float32)
    # music-like: a chord of harmonic tones with vibrato and note changes, about -20 dBFS
    f0 = 220.0 * 2 ** (rng.integers(0, 12, size=int(seconds) + 1) / 12)
    base = np.repeat(f0, RATE)[:n] * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(base) / RATE
    y = sum(np.sin(k * phase) / k for k in (1, 2, 3, 4)) + 0.5 * sum(np.sin(1.5 * k * phase) / k for k in (1, 2))
    return (0.1 * y / np.abs(y).max()).astype(np.float32)


def build(n_clips: int, seed: int = 0) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """A long signal and its true speech regions (the clips' loud parts)."""
    from sercli.features import FeatureParams, frame_db
    from sercli.windowing import trim_bounds

    rng = np.random.default_rng(seed)
    params = FeatureParams(trim_db=35.0)
    parts, truth, t = [], [], 0.0
    for i, clip in enumerate(_clips(n_clips, seed)):
        gap = _gap(("silence", "noise", "music")[i % 3], float(rng.uniform(1.0, 4.0)), rng)
        parts.append(gap)
        t += len(gap) / RATE
        a, b = trim_bounds(frame_db(clip, params), params)
        hop = params.hop_length / RATE
        truth.append((t + a * hop, t + min(b * hop, len(clip) / RATE)))
        parts.append(clip)
        t += len(clip) / RATE
    parts.append(np.zeros(RATE, np.float32))
    return np.concatenate(parts), truth


def score(regions: list[tuple[float, float]], truth: list[tuple[float, float]], duration: float) -> dict:
    """Frame accuracy (10 ms frames), and mean start/end error of the detected region that
    overlaps each true region most."""
    grid = np.arange(0, duration, 0.01)

    def mask(rs):
        m = np.zeros(len(grid), bool)
        for a, b in rs:
            m |= (grid >= a) & (grid < b)
        return m

    det, ref = mask(regions), mask(truth)
    starts, ends, missed = [], [], 0
    for a, b in truth:
        overlaps = [(min(b, d) - max(a, c), c, d) for c, d in regions if min(b, d) > max(a, c)]
        if not overlaps:
            missed += 1
            continue
        _, c, d = max(overlaps)
        starts.append(abs(c - a))
        ends.append(abs(d - b))
    return {"frame_accuracy": float((det == ref).mean()), "speech_recall": float(det[ref].mean()),
            "nonspeech_recall": float((~det[~ref]).mean()), "start_error_s": float(np.mean(starts)),
            "end_error_s": float(np.mean(ends)), "missed_regions": missed, "true_regions": len(truth),
            "detected_regions": len(regions)}


def main() -> None:
    from sercli.vad import VadOptions, speech_regions

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    y, truth = build(args.clips, args.seed)
    print(f"{len(truth)} clips, {len(y) / RATE / 60:.1f} min; gaps cycle silence / noise / music-like tones")
    for aggressiveness in (0, 1, 2, 3):
        s = score(speech_regions(y, VadOptions(aggressiveness=aggressiveness)), truth, len(y) / RATE)
        print(f"aggressiveness {aggressiveness}: frame accuracy {s['frame_accuracy']:.3f} "
              f"(speech {s['speech_recall']:.3f}, non-speech {s['nonspeech_recall']:.3f}), boundary error "
              f"start {s['start_error_s']:.2f} s / end {s['end_error_s']:.2f} s, regions {s['detected_regions']} "
              f"for {s['true_regions']} ({s['missed_regions']} missed)")


if __name__ == "__main__":
    main()
