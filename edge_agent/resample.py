"""Streaming downmix and rational resampling in numpy; stateful, so output never depends on block size.

Output sample ``k`` sits at input time ``k * down / up`` and is a windowed-sinc interpolation of the
input around it. Each output is computed from absolute sample positions with a fixed-length dot product,
so feeding one file in 256- or 4000-sample blocks gives bit-identical output.
"""

from __future__ import annotations

import math

import numpy as np

ZERO_CROSSINGS = 16  # sinc lobes each side: ~80 dB stop band with a Kaiser window, cheap enough for a Pi
KAISER_BETA = 8.0


def downmix(block: np.ndarray) -> np.ndarray:
    """(frames,) or (frames, channels) float or int16 -> (frames,) float32 mean over channels, in [-1, 1]."""
    if block.dtype == np.int16:
        block = block.astype(np.float32) / np.float32(32768.0)
    block = np.asarray(block, dtype=np.float32)
    if block.ndim == 1:
        return block
    if block.shape[1] == 1:
        return block[:, 0]
    return block.mean(axis=1, dtype=np.float32)


def polyphase_bank(up: int, down: int) -> tuple[np.ndarray, int]:
    """Filter taps per output phase, (up, 2 * half) float32, and ``half`` (input samples each side)."""
    cutoff = min(1.0, up / down)  # of the input Nyquist: low-pass at the lower of the two rates
    half = math.ceil(ZERO_CROSSINGS / cutoff)
    offsets = np.arange(-half + 1, half + 1)  # input sample j = floor(t) + offset
    phases = np.arange(up)[:, None] / up  # fractional part of t
    distance = phases - offsets[None, :]  # t - j, (up, 2 * half)
    inside = np.sqrt(np.clip(1.0 - (distance / half) ** 2, 0.0, None))
    window = np.i0(KAISER_BETA * inside) / np.i0(KAISER_BETA)  # Kaiser, evaluated at fractional taps
    taps = cutoff * np.sinc(cutoff * distance) * window
    taps /= taps.sum(axis=1, keepdims=True)  # unity DC gain in every phase
    return taps.astype(np.float32), half


class StreamResampler:
    """Rational-ratio resampler for a mono stream: ``process`` blocks in, ``flush`` at end of stream."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        gcd = math.gcd(in_rate, out_rate)
        self.in_rate, self.out_rate = in_rate, out_rate
        self.up, self.down = out_rate // gcd, in_rate // gcd
        self.passthrough = self.up == self.down
        self._taps, self._half = polyphase_bank(self.up, self.down) if not self.passthrough else (None, 0)
        # The input the next outputs need: starts at absolute input index self._base.
        self._history = np.zeros(self._half, dtype=np.float32)  # zeros before the stream starts
        self._base = -self._half
        self._next_out = 0  # absolute index of the next output sample
        self._received = 0

    def process(self, block: np.ndarray) -> np.ndarray:
        """Mono float32 in, every output sample whose input support is now complete out."""
        block = np.asarray(block, dtype=np.float32)
        if self.passthrough:
            return block
        self._received += len(block)
        self._history = np.concatenate([self._history, block])
        return self._emit(self._received)

    def flush(self) -> np.ndarray:
        """At end of stream: pad with zeros and emit the outputs whose time falls inside the input."""
        if self.passthrough:
            return np.zeros(0, dtype=np.float32)
        self._history = np.concatenate([self._history, np.zeros(self._half, dtype=np.float32)])
        last = -(-self._received * self.up // self.down)  # outputs at times < received samples
        return self._emit(self._received + self._half, limit=last)

    def _emit(self, available: int, limit: int | None = None) -> np.ndarray:
        """Compute outputs whose last needed input index (floor(t) + half) is below ``available``."""
        # largest k with floor(k*down/up) + half <= available - 1
        end = ((available - self._half) * self.up - 1) // self.down + 1
        if limit is not None:
            end = min(end, limit)
        k = np.arange(self._next_out, max(end, self._next_out), dtype=np.int64)
        floors, phases = np.divmod(k * self.down, self.up)
        starts = floors - self._half + 1 - self._base  # into self._history
        width = 2 * self._half
        # Every input window as a strided view (no copy); picking whole rows from it is a fast memcpy,
        # where an element-wise 2-D index would cost most of the resampler's time.
        history = self._history
        every = np.lib.stride_tricks.as_strided(history, (max(len(history) - width + 1, 0), width),
                                                (history.strides[0],) * 2, writeable=False)  # (starts, width)
        if self.up == 1 and len(starts):  # integer decimation (48 -> 16 kHz): evenly spaced rows, one phase
            rows = every[starts[0]:starts[-1] + 1:self.down]  # (outputs, width) view
            out = np.einsum("ij,j->i", rows, self._taps[0], dtype=np.float32)  # (outputs,)
        else:
            out = np.einsum("ij,ij->i", every[starts], self._taps[phases], dtype=np.float32)  # (outputs,)
        self._next_out = max(end, self._next_out)
        self._trim()
        return out

    def _trim(self) -> None:
        """Drop input no future output needs."""
        keep_from = (self._next_out * self.down) // self.up - self._half + 1
        drop = max(0, keep_from - self._base)
        if drop:
            self._history = self._history[drop:]
            self._base += drop
