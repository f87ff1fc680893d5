"""One chunk of files, in a worker: decode each file block by block, window it, classify
the windows in batches, and return plain rows (files, segments, windows).

A file that cannot be read or classified gets a row saying why; nothing here raises for
one bad file."""

from __future__ import annotations

import itertools
import threading
import time
from dataclasses import replace
from typing import Iterator

import numpy as np

from .audio import ArrayAudio, DecodeError, open_audio
from .windowing import Windows, WindowStream, concat_windows
from .models import Model, load_model
from .results import VAD_MIN_S, ChunkResult, FileState, Measured, Options, Pending, base_row, fill

__all__ = ["annotate_chunk", "replay"]


_BATCH_WINDOWS = 256


_per_thread = threading.local()


def _model(options: Options) -> Model:
    """The model, loaded once per thread: a LiteRT interpreter must never be shared between
    threads (a Dask worker runs several tasks at once in threads)."""
    cache = getattr(_per_thread, "models", None)
    if cache is None:
        cache = _per_thread.models = {}
    key = (options.model, options.calibration, options.shift, options.model_sha256, options.classes)
    if key not in cache:
        model = load_model(options.model, calibration=options.calibration)
        model.check_identity(options.model_sha256)
        model = model.restricted(options.classes)
        if model.head is not None and options.shift is not None:  # an encoder model adapts its embeddings
            model = replace(model, corpus_stats=options.shift)
        cache[key] = model
    return cache[key]


def _mel_shift(options: Options, model: Model) -> tuple[float, ...] | None:
    """The log-mel shift of ``--adapt corpus`` for a network on log-mel input (an encoder model
    adapts its embeddings instead)."""
    return options.shift if model.head is None else None


def annotate_chunk(paths: list, options: Options) -> ChunkResult:
    """Classify ``paths`` (runs in a worker). Never raises for a bad file: it gets a row.

    Files are decoded and windowed block by block (:class:`~sercli.audio.AudioStream`,
    :class:`~sercli.windowing.WindowStream`). Short files' windows are classified together, in
    one batch at the end of the chunk; a long file's windows are classified as soon as a batch
    is full, so memory does not depend on file length.
    """
    model = _model(options)
    params = model.params
    stage = {"decode": 0.0, "features": 0.0, "inference": 0.0}
    rows, waiting, audio_s, measured = [], [], 0.0, set()
    for path in paths:  # file paths, or ArrayAudio (the library's in-memory input)
        row = base_row(path.name if isinstance(path, ArrayAudio) else path, options)
        rows.append(row)
        state = FileState(row, WindowStream(params, hop_s=options.hop_s, shift=_mel_shift(options, model)))
        row["_state"] = state
        try:
            _stream(path, state, options, model, stage)
        except Measured:  # enough of a long file for the statistics; the main pass classifies it
            measured.add(id(state))
            continue
        except DecodeError as exc:
            row.update(status=exc.status, error=exc.message)
            continue
        except Exception as exc:  # a bug or a resource error on one file must not end the run
            row.update(status="error", error=_unexpected("Reading or classifying the file", exc))
            continue
        duration = state.n / params.sample_rate
        row.update(duration_s=round(duration, 4))
        audio_s += duration
        if state.n < params.min_samples:
            row.update(status="too_short", error=f"The audio is {duration:.2f} s long; "
                       f"at least {params.min_samples / params.sample_rate:.2f} s is needed.")
            continue
        row["flags"] = state.flags(params)
        if state.windows:
            waiting.append(state)  # a short file: joins the chunk's batch
        else:
            _finish(state, options, params)
    t0 = time.perf_counter()
    for state, w, p in _classify(model, waiting, options):
        if p is None:
            state.row.update(status="error", error=_unexpected("Classification", w))
            continue
        try:
            state.take(p, w, options)
        except Measured:  # a short file with very many windows (a tiny hop): as a long one
            measured.add(id(state))
            continue
        _finish(state, options, params)
    stage["inference"] += time.perf_counter() - t0
    states = [r.pop("_state") for r in rows if "_state" in r]
    if options.measure:  # rows that wait for the corpus statistics are not rows yet
        pending = [Pending(st.row, st.kept, id(st) not in measured) for st in states if st.row["status"] is None]
        return ChunkResult(rows=[r for r in rows if r["status"] is not None], audio_s=audio_s, stage_s=stage,
                           pending=pending)
    return ChunkResult(rows=rows, segments=[x for st in states for x in st.segment_rows],
                       windows=[x for st in states for x in st.window_rows], audio_s=audio_s, stage_s=stage)


def replay(pending: Pending, model: Model, options: Options) -> ChunkResult:
    """A measured file's rows, its kept embeddings classified with ``options`` (which carry the
    corpus statistics, or none: ``adapt="none"``): what the main pass would have given."""
    state = FileState(pending.row, None)
    for out, w, region in pending.kept:
        state.take(model.probabilities(out, stats=options.shift), w, options, region)
    _finish(state, options, model.params)
    return ChunkResult(rows=[state.row], segments=state.segment_rows, windows=state.window_rows,
                       audio_s=float(state.row["duration_s"]))


def _stream(path, state: FileState, options: Options, model: Model, stage: dict) -> None:
    """Decode, window and (once a batch is full) classify one file, block by block."""
    params = model.params
    t0 = time.perf_counter()
    audio = path if isinstance(path, ArrayAudio) else open_audio(path, sample_rate=params.sample_rate,
                                                                  max_duration_s=options.max_duration_s)
    state.row.update(sample_rate=audio.source_rate, channels=audio.channels)
    split, blocks = _use_vad(audio, audio.blocks(), options)
    stage["decode"] += time.perf_counter() - t0
    if split:
        _stream_regions(blocks, state, options, model, stage)
        return
    for y in _read(blocks, state, stage):
        t1 = time.perf_counter()
        w = state.stream.finish() if y is None else state.stream.feed(y)
        if len(w.x):
            state.windows.append(w)
        stage["features"] += time.perf_counter() - t1
        if sum(len(x.x) for x in state.windows) >= _BATCH_WINDOWS or (y is None and state.n_taken):
            t0 = time.perf_counter()
            batch = concat_windows(state.windows, params)
            state.windows = []
            state.take(_predict(model, batch.x, options), batch, options)
            stage["inference"] += time.perf_counter() - t0


def _read(blocks: Iterator[np.ndarray], state: FileState, stage: dict) -> Iterator[np.ndarray | None]:
    """The file's blocks, each observed for the flags and timed as decoding, then ``None`` at the end."""
    while True:
        t0 = time.perf_counter()
        y = next(blocks, None)
        stage["decode"] += time.perf_counter() - t0
        if y is not None:
            state.observe(y)
        yield y
        if y is None:
            return


def _use_vad(audio, blocks: Iterator[np.ndarray], options: Options) -> tuple[bool, Iterator[np.ndarray]]:
    """Whether to split the file into speech regions, and its blocks (unchanged). A file whose
    header gives no length (decoded through ffmpeg) is read until :data:`VAD_MIN_S` seconds or
    its end, so the decision is the same in every format."""
    if options.vad != "auto":
        return options.vad == "on", blocks
    if isinstance(audio, ArrayAudio):
        return len(audio.samples) >= VAD_MIN_S * audio.source_rate, blocks
    if audio.frames:
        return audio.frames >= VAD_MIN_S * audio.source_rate, blocks
    head, n = [], 0
    for block in blocks:
        head.append(block)
        n += len(block)
        if n >= VAD_MIN_S * audio.sample_rate:
            break
    return n >= VAD_MIN_S * audio.sample_rate, itertools.chain(head, blocks)


def _stream_regions(blocks, state: FileState, options: Options, model: Model, stage: dict) -> None:
    """Split a file into speech regions as it streams; classify the windows within each region.

    Only the samples a future region may still need are kept (at most about a minute), and
    regions wait for classification only until a batch of windows is full."""
    from .vad import SpeechDetector

    params = model.params
    rate = params.sample_rate
    detector = SpeechDetector()
    buffer, buffer_start = np.zeros(0, np.float32), 0  # samples, and the index of buffer[0]
    waiting: list[tuple[float, float, Windows]] = []  # regions whose windows are not classified yet
    for y in _read(blocks, state, stage):
        t1 = time.perf_counter()
        if y is not None:
            buffer = np.concatenate([buffer, y])
            regions = detector.feed(y)
        else:
            regions = detector.finish(state.n / rate)
        for a, b in regions:
            piece = buffer[max(0, int(a * rate) - buffer_start):max(0, int(b * rate) - buffer_start)]
            if len(piece) >= params.min_samples:
                stream = WindowStream(params, hop_s=options.hop_s, offset_s=a,
                                      shift=_mel_shift(options, model))
                waiting.append((a, a + len(piece) / rate, concat_windows([stream.feed(piece), stream.finish()],
                                                                          params)))
        stage["features"] += time.perf_counter() - t1
        if waiting and (y is None or sum(len(w.x) for _, _, w in waiting) >= _BATCH_WINDOWS):
            t0 = time.perf_counter()
            _classify_regions(state, waiting, options, model)
            waiting = []
            stage["inference"] += time.perf_counter() - t0
        if y is None:
            return
        keep = max(0, int(detector.keep_from_s() * rate) - buffer_start)
        buffer, buffer_start = buffer[keep:], buffer_start + keep


def _classify_regions(state: FileState, regions: list[tuple[float, float, Windows]], options: Options,
                      model: Model) -> None:
    """Classify the windows of several speech regions in one batch; fold them into the file."""
    probs = _predict(model, np.concatenate([w.x for _, _, w in regions]), options)
    i = 0
    for start_s, end_s, w in regions:
        state.take(probs[i:i + len(w.x)], w, options, region=(start_s, end_s))
        i += len(w.x)


def _finish(state: FileState, options: Options, params) -> None:
    """Fill the file's row from its classified windows (and, for a file not split, its one segment
    row); when measuring, the windows wait (:class:`~sercli.results.Pending`)."""
    row = state.row
    if options.measure and state.kept:
        return
    if state.sums.n_windows == 0:
        row.update(status="silent", segments=0, windows=0, error="No speech was found (voice activity detection).")
        return
    if state.sums.n_speech == 0:
        row.update(status="silent", segments=0, windows=state.sums.n_windows, error="The file has no speech energy "
                   f"(every frame is below {params.silence_db:.0f} dBFS).")
        return
    fill(row, state.sums.probs(), options.classes)
    row.update(status="ok", windows=state.sums.n_windows,
               segments=state.n_regions or 1)
    if options.segments and not state.n_regions:
        state.add_segment(state.sums, state.span[0], state.span[1], options)


def _predict(model: Model, x: np.ndarray, options: Options) -> np.ndarray:
    """The windows' probabilities or, when measuring, their embeddings."""
    run = model.run if options.measure else model.predict
    return np.concatenate([run(x[i:i + _BATCH_WINDOWS]) for i in range(0, len(x), _BATCH_WINDOWS)])


def _classify(model: Model, states: list[FileState], options: Options) -> Iterator[tuple]:
    """``(state, windows, probs)`` for each file whose windows wait: all files in one batch or,
    if that fails, file by file, so that only a file whose inference fails gets
    ``(state, exception, None)``."""
    if not states:
        return
    wins = [concat_windows(s.windows, model.params) for s in states]
    for s in states:
        s.windows = []
    try:
        probs = _predict(model, np.concatenate([w.x for w in wins]), options)
    except Exception:
        for s, w in zip(states, wins):
            try:
                yield s, w, _predict(model, w.x, options)
            except Exception as exc:
                yield s, exc, None
        return
    i = 0
    for s, w in zip(states, wins):
        yield s, w, probs[i:i + len(w.x)]
        i += len(w.x)


def _unexpected(stage: str, exc: BaseException) -> str:
    """One sentence for an unexpected error on one file."""
    detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
    return f"{stage} failed unexpectedly ({type(exc).__name__}{': ' + detail if detail else ''})".rstrip(".") + "."
