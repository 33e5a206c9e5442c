"""The frame contract: fixed-length windows every ``hop`` samples, at absolute stream positions.

Window ``i`` always covers samples ``[i * hop, i * hop + window)`` of the stream, whatever the block
sizes the audio arrived in; this is what makes scores independent of chunking.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The agent's default hop, written once: the config default, the commands' help, export's windows and
# training's test-time hop_frames all come from it. A quarter second: four 1 s windows per second of audio.
DEFAULT_HOP_SECONDS = 0.25


@dataclass(frozen=True)
class Window:
    """One model input window and where it sits in the stream."""

    index: int
    start: int  # absolute sample index of the first sample
    samples: np.ndarray  # (window,) float32
    padded: bool = False  # True for the zero-padded last window of a finished stream


def hop_samples(hop_seconds: float, sample_rate: int, stft_hop: int = 1) -> int:
    """Hop in samples, rounded to a whole number of STFT hops (at least one).

    On that grid, overlapping windows share STFT frames exactly, so the front-end computes only the
    new ones: at 16 kHz with a 256-sample STFT hop, 0.25 s becomes 0.256 s.
    """
    return max(1, int(round(hop_seconds * sample_rate / stft_hop))) * stft_hop


class Windower:
    """Cuts a mono stream into overlapping windows; keeps only the samples a future window needs."""

    def __init__(self, window: int, hop: int) -> None:
        if window <= 0 or hop <= 0:
            raise ValueError(f"window and hop must be positive, got {window}, {hop}")
        self.window, self.hop = window, hop
        self._buffer = np.zeros(0, dtype=np.float32)
        self._base = 0  # absolute index of self._buffer[0]
        self._next = 0  # index of the next window
        self._received = 0

    @property
    def samples_received(self) -> int:
        """Samples pushed so far."""
        return self._received

    def push(self, samples: np.ndarray) -> list[Window]:
        """Append mono samples; return every window now complete, in order."""
        self._buffer = np.concatenate([self._buffer, np.asarray(samples, dtype=np.float32)])
        self._received += len(samples)
        windows = []
        while self._next * self.hop + self.window <= self._received:
            windows.append(self._take(self._next * self.hop, self.window))
        self._trim()
        return windows

    def flush(self) -> list[Window]:
        """End of stream: one zero-padded window if samples remain that no window covered yet."""
        start = self._next * self.hop
        covered = (self._next - 1) * self.hop + self.window if self._next else 0
        if self._received <= covered or start >= self._received:
            return []
        window = self._take(start, self._received - start)
        padded = np.zeros(self.window, dtype=np.float32)
        padded[: len(window.samples)] = window.samples
        return [Window(window.index, window.start, padded, padded=True)]

    def _take(self, start: int, length: int) -> Window:
        """Copy ``length`` samples from absolute ``start`` and advance to the next window."""
        offset = start - self._base
        window = Window(self._next, start, self._buffer[offset : offset + length].copy())
        self._next += 1
        return window

    def _trim(self) -> None:
        """Drop samples before the next window's start."""
        drop = min(self._next * self.hop - self._base, len(self._buffer))  # hop > window leaves gaps
        if drop > 0:
            self._buffer = self._buffer[drop:]
            self._base += drop
