"""Voice activity detection: where a long recording has speech.

WebRTC's detector (``webrtcvad-wheels``: compiled C, no model weights) labels every 30 ms
frame of 16 kHz audio as speech or not. On its own it also takes steady noise and music for
speech, so a frame counts as speech only if its loudness also moves the way syllables make
it move: the spread (90th minus 10th percentile) of the frame levels around it, over half a
second, must reach ``min_spread_db``. :class:`SpeechDetector` turns the frame labels into
speech regions, block by block, so a file of hours never has to be held in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["VadOptions", "SpeechDetector", "speech_regions"]

#: WebRTC VAD works on 10, 20 or 30 ms frames of 8, 16, 32 or 48 kHz 16-bit PCM.
FRAME_S = 0.03
VAD_RATE = 16000
#: Frames of context (about half a second) for the level spread.
_SPREAD_FRAMES = 17


@dataclass(frozen=True)
class VadOptions:
    """How frame labels become speech regions."""

    #: WebRTC aggressiveness, 0 (keeps most) to 3 (keeps least)
    aggressiveness: int = 2
    #: pauses shorter than this join the regions on either side
    min_gap_s: float = 0.5
    #: regions with less speech than this are dropped
    min_speech_s: float = 0.3
    #: context added before and after each region
    pad_s: float = 0.2
    #: a region is cut after this long, so memory stays bounded in endless talk
    max_region_s: float = 60.0
    #: least level spread (dB) over the half second around a frame for it to count as speech
    min_spread_db: float = 6.0


class SpeechDetector:
    """Speech regions ``(start_s, end_s)`` of a 16 kHz signal that arrives block by block.

    ``feed(block)`` returns the regions that are final (no later speech can extend them);
    ``finish()`` returns the rest. Regions are padded, never overlap, and are in order.
    """

    def __init__(self, options: VadOptions = VadOptions()) -> None:
        import webrtcvad

        self.options = options
        self._vad = webrtcvad.Vad(options.aggressiveness)
        self._frame = int(FRAME_S * VAD_RATE)
        self._rest = np.zeros(0, np.int16)
        self._voiced = np.zeros(0, bool)  # WebRTC labels of the frames still needed
        self._level = np.zeros(0)  # their levels (dBFS)
        self._base = 0  # frame index of self._voiced[0]
        self._decided = 0  # frames of the buffer already decided
        self._run: list[int] | None = None  # [first, last] speech frame of the open region
        self._speech = 0  # speech frames in the open region
        self._last_end = 0.0  # end of the last region returned (padding never overlaps it)

    def feed(self, y: np.ndarray) -> list[tuple[float, float]]:
        pcm = np.concatenate([self._rest, (np.clip(y, -1.0, 1.0) * 32767.0).astype(np.int16)])
        n = len(pcm) // self._frame
        self._rest = pcm[n * self._frame:]
        frames = pcm[: n * self._frame].reshape(n, self._frame)
        voiced = np.array([self._vad.is_speech(f.tobytes(), VAD_RATE) for f in frames], bool)
        level = 10.0 * np.log10(np.maximum(np.mean(np.square(frames / 32768.0), axis=1), 1e-10))
        self._voiced = np.concatenate([self._voiced, voiced])
        self._level = np.concatenate([self._level, level])
        return self._label(final=False)

    def _label(self, *, final: bool) -> list[tuple[float, float]]:
        """Decide the frames whose half-second context is complete (all of them when ``final``)."""
        half = _SPREAD_FRAMES // 2
        ready = len(self._voiced) if final else max(0, len(self._voiced) - half)
        out = []
        gap = int(round(self.options.min_gap_s / FRAME_S))
        longest = int(round(self.options.max_region_s / FRAME_S))
        speech = self._voiced[self._decided:ready] & (self._spread(self._decided, ready) >= self.options.min_spread_db)
        for k in range(self._decided, ready):
            f = self._base + k
            if speech[k - self._decided]:
                if self._run is None:
                    self._run = [f, f]
                self._run[1] = f
                self._speech += 1
            if self._run is not None and (f - self._run[1] > gap or f - self._run[0] + 1 >= longest):
                out += self._close(cut=f - self._run[0] + 1 >= longest and f - self._run[1] <= gap)
        self._decided = ready
        drop = max(0, self._decided - half)  # keep the context the next frames need
        self._voiced, self._level = self._voiced[drop:], self._level[drop:]
        self._decided -= drop
        self._base += drop
        return out

    def _spread(self, start: int, stop: int) -> np.ndarray:
        """90th minus 10th percentile of the levels within half a window of each frame in
        ``[start, stop)`` (fewer frames at the edges of the buffer)."""
        half = _SPREAD_FRAMES // 2
        padded = np.concatenate([np.full(half, np.nan), self._level, np.full(half, np.nan)])
        ctx = np.lib.stride_tricks.sliding_window_view(padded, _SPREAD_FRAMES)[start:stop]
        if not len(ctx):
            return np.zeros(0)
        edge = np.isnan(ctx).any(axis=1)  # only frames near the buffer's ends
        spread = np.empty(len(ctx))
        hi, lo = np.percentile(ctx[~edge], [90, 10], axis=1)
        spread[~edge] = hi - lo
        for i in np.flatnonzero(edge):
            row = ctx[i][~np.isnan(ctx[i])]
            spread[i] = np.percentile(row, 90) - np.percentile(row, 10)
        return spread

    def keep_from_s(self) -> float:
        """The earliest time a region not returned yet may start: samples before it are not needed."""
        first = self._run[0] if self._run is not None else self._base + self._decided
        return max(self._last_end, first * FRAME_S - self.options.pad_s)

    def finish(self, duration_s: float | None = None) -> list[tuple[float, float]]:
        out = self._label(final=True)
        out += self._close(cut=False) if self._run is not None else []
        if duration_s is not None:
            out = [(a, min(b, duration_s)) for a, b in out if a < duration_s]
        return out

    def _close(self, *, cut: bool) -> list[tuple[float, float]]:
        first, last = self._run
        speech = self._speech * FRAME_S
        self._run, self._speech = None, 0
        if speech < self.options.min_speech_s and not cut:
            return []
        pad = self.options.pad_s
        start = max(first * FRAME_S - pad, self._last_end, 0.0)
        end = (last + 1) * FRAME_S + (0.0 if cut else pad)
        self._last_end = end
        return [(round(start, 3), round(end, 3))]


def speech_regions(y: np.ndarray, options: VadOptions = VadOptions()) -> list[tuple[float, float]]:
    """Speech regions of a whole 16 kHz mono signal (see :class:`SpeechDetector`).

    >>> speech_regions(np.zeros(16000, np.float32))
    []
    """
    detector = SpeechDetector(options)
    return detector.feed(y) + detector.finish(len(y) / VAD_RATE)
