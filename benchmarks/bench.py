"""sercli throughput benchmark, against the source study's loop measured in the same run.

    python benchmarks/bench.py                 # 2,000 clips, writes benchmarks/results.json
    python benchmarks/bench.py --files 500 --no-flatness

Real speech: WAV (16 kHz, 16-bit) decoded from ../shared/corpora (test split first),
plus FLAC/MP3/Opus copies of a subset. Prints files/s, × real time, peak RSS of the
whole process tree, per-stage seconds (summed over workers), --jobs 1 and 2, cold (a
fresh ``sercli annotate`` process, start-up included) and steady state (warm workers). The baseline is the study's loop (librosa.load at 44.1 kHz, 4 s, 128 MFCCs, one
``model.predict`` per file on its 4-block CNN); it needs the ``train`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "corpora"


class PeakRSS:
    """Peak resident memory of a process and all its children, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.proc, self.peak, self._stop = psutil.Process(pid), 0, threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.proc, *self.proc.children(recursive=True)]
                self.peak = max(self.peak, sum(p.memory_info().rss for p in procs if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.02)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def prepare(n: int, workdir: Path, fmt_n: int) -> tuple[Path, dict[str, Path], float]:
    """``n`` WAV clips and ``fmt_n`` FLAC/MP3/Opus clips; returns dirs and total audio seconds."""
    manifest = pd.read_csv(SHARED / "manifest.csv")
    manifest = pd.concat([manifest[manifest["split"] == "test"], manifest[manifest["split"] != "test"]]).head(n)
    wav_dir = workdir / "wav"
    fmt_dirs = {f: workdir / f for f in ("flac", "mp3", "opus")}
    for d in [wav_dir, *fmt_dirs.values()]:
        d.mkdir(parents=True, exist_ok=True)
    total = 0.0
    for i, rel in enumerate(manifest["path"]):
        y, sr = sf.read(SHARED / rel, dtype="float32")
        total += len(y) / sr
        stem = Path(rel).stem
        sf.write(wav_dir / f"{stem}.wav", y, sr, subtype="PCM_16")
        if i < fmt_n:
            sf.write(fmt_dirs["flac"] / f"{stem}.flac", y, sr)
            sf.write(fmt_dirs["mp3"] / f"{stem}.mp3", y, sr, format="MP3")
            sf.write(fmt_dirs["opus"] / f"{stem}.opus", y, sr, format="OGG", subtype="OPUS")
    return wav_dir, fmt_dirs, total


def audio_seconds(folder: Path) -> float:
    return sum(sf.info(str(p)).duration for p in folder.iterdir())


def cold_run(folder: Path, jobs: int, model: str, out: Path) -> dict:
    """A fresh ``sercli annotate`` process: wall time including start-up, peak RSS."""
    out.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "sercli", "annotate", str(folder), "-m", model, "-o", str(out), "-j", str(jobs), "-q"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with PeakRSS(proc.pid) as mem:
        _, err = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise RuntimeError(err.decode())
    return {"wall_s": wall, "peak_rss_mib": mem.peak / 2**20}


def steady_run(folder: Path, jobs: int, model: str, out: Path, executor_factory=None) -> dict:
    """In-process run on warm workers (spawned, imports done, model loaded by a first small run)."""
    from sercli.batch import annotate_to_file, plan_output
    from sercli.discovery import discover
    from sercli.pipeline import Job
    from sercli.workers import local_executor

    factory = executor_factory or (lambda: local_executor(jobs))
    job = Job.create(model, adapt="none")  # steady state: no adaptation pass
    t0 = time.perf_counter()
    paths = discover([folder])
    t_discover = time.perf_counter() - t0
    # warm the pool: workers spawned, imports and the model loaded
    plan = plan_output(out, job.metadata(), overwrite=True)
    annotate_to_file((paths * 2)[: 64 * jobs], job, plan=plan, executor_factory=factory)
    t0 = time.perf_counter()
    stats = annotate_to_file(paths, job, plan=plan, executor_factory=factory)
    wall = time.perf_counter() - t0
    return {
        "files": len(paths), "wall_s": wall,
        "files_per_s": stats.done / wall,
        "x_real_time": stats.audio_s / wall,
        "stage_s": {"discover": t_discover, **{k: round(v, 3) for k, v in stats.stage_s.items()}},
    }


def dask_run(folder: Path, workers: int, model: str, out: Path) -> dict:
    """Steady-state throughput on a Dask LocalCluster with ``workers`` worker processes."""
    from sercli.cluster import dask_executor_factory

    factory = dask_executor_factory(None, workers)
    try:
        return steady_run(folder, workers, model, out, executor_factory=factory)
    finally:
        factory.close()


def baseline(folder: Path, n: int) -> dict:
    """The study's per-file loop on ``n`` files (its CNN with random weights: speed only)."""
    import keras
    import librosa
    from keras import layers

    inp = keras.Input((128, 345, 1))
    x = inp
    for f in (32, 64, 128, 256):
        x = layers.Conv2D(f, 3, padding="same", activation="relu")(x)
        x = layers.MaxPooling2D(2)(x)
        x = layers.BatchNormalization()(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.5)(x)
    model = keras.Model(inp, layers.Dense(7, activation="softmax")(x))
    files = sorted(folder.iterdir())[:n]
    model.predict(np.zeros((1, 128, 345, 1), np.float32), verbose=0)
    t0, audio = time.perf_counter(), 0.0
    for f in files:
        y, sr = librosa.load(f, sr=44100, duration=4)
        audio += len(y) / sr
        y = np.pad(y, (0, max(0, 4 * sr - len(y))))
        mfcc = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=128, hop_length=512)
        model.predict(mfcc[None, :, :, None], verbose=0)
    wall = time.perf_counter() - t0
    return {"files": len(files), "wall_s": wall, "files_per_s": len(files) / wall,
            "x_real_time": sum(sf.info(str(f)).duration for f in files) / wall}


def flatness(wav_dir: Path, model: str, workdir: Path, sizes: list[int]) -> list[dict]:
    """Peak RSS for growing numbers of files (symlinks to the clips)."""
    clips = sorted(wav_dir.iterdir())
    rows = []
    for n in sizes:
        d = workdir / f"links{n}"
        d.mkdir(exist_ok=True)
        for i in range(n):
            link = d / f"f{i:06d}.wav"
            if not link.exists():
                link.symlink_to(clips[i % len(clips)])
        r = cold_run(d, 2, model, workdir / f"flat{n}.parquet")
        rows.append({"files": n, **r, "files_per_s": n / r["wall_s"]})
    return rows


def long_files(wav_dir: Path, workdir: Path, hours: tuple[float, ...] = (2.0, 2.0, 3.9)) -> Path:
    """Long 16 kHz 16-bit WAV files (recorded talk is mostly speech with pauses): the real clips
    one after another with 0.2-2 s of silence between them, written block by block."""
    folder = workdir / "long"
    folder.mkdir(exist_ok=True)
    clips = [sf.read(p, dtype="float32")[0] for p in sorted(wav_dir.iterdir())[:400]]
    rng = np.random.default_rng(0)
    for i, h in enumerate(hours):
        path = folder / f"talk{i}_{h:g}h.wav"
        if path.exists():
            continue
        with sf.SoundFile(path, "w", samplerate=16000, channels=1, subtype="PCM_16") as fh:
            written, target = 0, int(h * 3600 * 16000)
            while written < target:
                clip = clips[int(rng.integers(len(clips)))]
                gap = np.zeros(int(rng.uniform(0.2, 2.0) * 16000), np.float32)
                block = np.concatenate([clip, gap])[: target - written]
                fh.write(block)
                written += len(block)
    return folder


def window_ms(models: list[str], batch: int = 32, repeats: int = 20) -> dict[str, float]:
    """Inference time per window (LiteRT, one thread, batches of ``batch`` windows), per model."""
    from sercli.models import load_model

    out = {}
    for name in models:
        m = load_model(name)
        x = np.random.default_rng(0).standard_normal((batch, m.params.n_features, m.params.window_frames))
        m.predict(x.astype(np.float32))  # allocate
        t0 = time.perf_counter()
        for _ in range(repeats):
            m.predict(x.astype(np.float32))
        out[name] = (time.perf_counter() - t0) / (repeats * batch) * 1000
    return out


def per_model(wav_dir: Path, models: list[str], workdir: Path, audio_s: float, n: int) -> list[dict]:
    """Every shipped model on the same clips: cold (a fresh process, start-up included) and steady,
    ``--jobs 2``; and the first annotate of one clip in a fresh process (start-up alone, nearly)."""
    one = workdir / "one"
    one.mkdir(exist_ok=True)
    first = sorted(wav_dir.iterdir())[0]
    (one / first.name).write_bytes(first.read_bytes())
    out = []
    for name in models:
        cold = cold_run(wav_dir, 2, name, workdir / "model.parquet")
        steady = steady_run(wav_dir, 2, name, workdir / "model.parquet")
        single = cold_run(one, 2, name, workdir / "one.parquet")
        out.append({"model": name, "cold_files_per_s": n / cold["wall_s"], "cold_x_real_time": audio_s / cold["wall_s"],
                    "cold_peak_rss_mib": cold["peak_rss_mib"], "steady_files_per_s": steady["files_per_s"],
                    "steady_x_real_time": steady["x_real_time"], "first_file_s": single["wall_s"]})
        print(out[-1], file=sys.stderr, flush=True)
    return out


def help_time() -> float:
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "sercli", "--help"], capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--format-files", type=int, default=300)
    ap.add_argument("--baseline-files", type=int, default=200)
    ap.add_argument("--model", default="mfcc-cnn")
    ap.add_argument("--models-only", action="store_true",
                    help="only the per-model table (cold/steady --jobs 2 and first-file time of every shipped model)")
    ap.add_argument("--flatness", default="1000,10000,50000")
    ap.add_argument("--no-flatness", action="store_true")
    ap.add_argument("--no-long", action="store_true", help="skip the long-file case (two 2 h files and one 3.9 h)")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.json")
    args = ap.parse_args()
    if not (SHARED / "manifest.csv").is_file():
        sys.exit("bench.py needs ../shared/corpora (real speech) next to the repository.")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="sercli-bench-"))
    print(f"preparing {args.files} WAV clips in {workdir} ...", file=sys.stderr)
    wav_dir, fmt_dirs, audio_s = prepare(args.files, workdir, args.format_files)
    res: dict = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                            f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Python {platform.python_version()}",
                 "files": args.files, "audio_s": round(audio_s, 1), "model": args.model,
                 "help_s": round(help_time(), 3), "runs": []}
    from sercli import available_models

    res["per_model"] = per_model(wav_dir, available_models(), workdir, audio_s, args.files)
    res["window_ms"] = window_ms(available_models())
    if args.models_only:
        args.out.write_text(json.dumps(res, indent=1, default=float))
        report(res)
        return
    for jobs in (1, 2):
        cold = cold_run(wav_dir, jobs, args.model, workdir / "cold.parquet")
        steady = steady_run(wav_dir, jobs, args.model, workdir / "steady.parquet")
        res["runs"].append({"format": "wav", "jobs": jobs,
                            "cold_files_per_s": args.files / cold["wall_s"],
                            "cold_x_real_time": audio_s / cold["wall_s"], **{f"cold_{k}": v for k, v in cold.items()},
                            **{f"steady_{k}": v for k, v in steady.items()}})
    for fmt, d in fmt_dirs.items():
        steady = steady_run(d, 2, args.model, workdir / f"{fmt}.parquet")
        res["runs"].append({"format": fmt, "jobs": 2, **{f"steady_{k}": v for k, v in steady.items()}})
    res["dask"] = [{"workers": w, **dask_run(wav_dir, w, args.model, workdir / "dask.parquet")} for w in (1, 2)]
    res["baseline"] = baseline(wav_dir, args.baseline_files)
    best = max(r["steady_files_per_s"] for r in res["runs"] if r["format"] == "wav")
    res["speedup_vs_baseline"] = best / res["baseline"]["files_per_s"]
    cold2 = next(r for r in res["runs"] if r["format"] == "wav" and r["jobs"] == 2)
    res["speedup_cold_vs_baseline"] = cold2["cold_files_per_s"] / res["baseline"]["files_per_s"]
    if not args.no_long:
        folder = long_files(wav_dir, workdir)
        secs = audio_seconds(folder)
        r = cold_run(folder, 2, args.model, workdir / "long.parquet")
        res["long"] = {"files": len(list(folder.iterdir())), "audio_h": secs / 3600, **r,
                       "x_real_time": secs / r["wall_s"]}
    if not args.no_flatness:
        res["flatness"] = flatness(wav_dir, args.model, workdir, [int(s) for s in args.flatness.split(",")])
    args.out.write_text(json.dumps(res, indent=1, default=float))
    report(res)


def report(res: dict) -> None:
    print(f"machine: {res['machine']}; {res['files']} clips, {res['audio_s'] / 3600:.2f} h of audio; "
          f"model {res['model']}")
    print(f"sercli --help: {res['help_s']:.2f} s")
    print(f"{'format':6} {'jobs':>4} {'cold f/s':>9} {'cold ×RT':>9} {'cold peak MiB':>13} "
          f"{'steady f/s':>10} {'steady ×RT':>10}  stages (s, summed over workers)")
    print(f"{'model':22} {'cold f/s':>9} {'cold ×RT':>9} {'cold peak MiB':>13} {'steady f/s':>10} {'steady ×RT':>10} "
          f"{'first file s':>12}   (--jobs 2)")
    for r in res.get("per_model", []):
        print(f"{r['model']:22} {r['cold_files_per_s']:9.0f} {r['cold_x_real_time']:9.0f} {r['cold_peak_rss_mib']:13.0f} "
              f"{r['steady_files_per_s']:10.0f} {r['steady_x_real_time']:10.0f} {r['first_file_s']:12.2f}")
    for r in res["runs"]:
        cold = (f"{r['cold_files_per_s']:9.0f} {r['cold_x_real_time']:9.0f} {r['cold_peak_rss_mib']:13.0f}"
                if "cold_wall_s" in r else f"{'':9} {'':9} {'':13}")
        stages = ", ".join(f"{k} {v:.1f}" for k, v in r["steady_stage_s"].items())
        print(f"{r['format']:6} {r['jobs']:4d} {cold} {r['steady_files_per_s']:10.0f} "
              f"{r['steady_x_real_time']:10.0f}  {stages}")
    for r in res.get("dask", []):
        print(f"dask LocalCluster, {r['workers']} worker process(es): {r['files_per_s']:.0f} files/s, "
              f"{r['x_real_time']:.0f}× real time")
    print("inference per window (LiteRT, 1 thread, batches of 32): "
          + ", ".join(f"{k} {v:.2f} ms" for k, v in res["window_ms"].items()))
    if "baseline" not in res:
        return
    b = res["baseline"]
    print(f"baseline (study loop, {b['files']} files): {b['files_per_s']:.1f} files/s, "
          f"{b['x_real_time']:.0f}× real time; sercli is {res['speedup_vs_baseline']:.0f}× faster steady "
          f"(--jobs 2, warm workers) and {res['speedup_cold_vs_baseline']:.0f}× cold (--jobs 2, start-up included)")
    if "long" in res:
        r = res["long"]
        print(f"long files ({r['files']} files, {r['audio_h']:.1f} h, --jobs 2, cold): {r['x_real_time']:.0f}× real "
              f"time, peak RSS {r['peak_rss_mib']:.0f} MiB")
    for r in res.get("flatness", []):
        print(f"flatness: {r['files']:6d} files  peak RSS {r['peak_rss_mib']:6.0f} MiB  {r['files_per_s']:.0f} files/s")


if __name__ == "__main__":
    main()
