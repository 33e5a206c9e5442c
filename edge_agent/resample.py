"""Streaming downmix and resampling to the model's rate; stateful, so output never depends on block size."""

from __future__ import annotations

import numpy as np
import soxr

# libsoxr, not a hand-written windowed sinc: 4-7x less CPU at 44.1/48 kHz (1024-frame blocks), measured.
# HQ, not VHQ: the same pass band (flat to 7.3 kHz), >= 130 dB stop band, 15-25% less time.
QUALITY = "HQ"


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


class StreamResampler:
    """Resampler for a mono float32 stream: ``process`` blocks in, ``flush`` once at end of stream."""

    def __init__(self, in_rate: int, out_rate: int) -> None:
        if in_rate <= 0 or out_rate <= 0:
            raise ValueError(f"sample rates must be positive, got {in_rate} -> {out_rate}")
        self.in_rate, self.out_rate = in_rate, out_rate
        self.passthrough = in_rate == out_rate
        self._stream: soxr.ResampleStream | None = None
        if not self.passthrough:
            self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="float32", quality=QUALITY)
        self._flushed = False

    def process(self, block: np.ndarray) -> np.ndarray:
        """Mono samples in, every output sample the resampler can give so far out (float32)."""
        block = np.ascontiguousarray(block, dtype=np.float32)
        if self._stream is None:
            return block
        return self._stream.resample_chunk(block)

    def flush(self) -> np.ndarray:
        """At end of stream: the outputs still held back by the filter; empty on a second call."""
        if self._stream is None or self._flushed:
            return np.zeros(0, dtype=np.float32)
        self._flushed = True
        return self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True)
