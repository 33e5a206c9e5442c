"""The bounded buffer between the audio source and the consumer thread.

The capture callback only copies into it; when it is full the block is dropped and counted as an
overrun, never silently. File and stdin sources may instead wait for room (back-pressure), because
there a drop would be our fault, not the hardware's.
"""

from __future__ import annotations

import threading

import numpy as np
import numpy.typing as npt


class RingBuffer:
    """Fixed-capacity circular buffer of (frames, channels) samples, one writer and one reader.

    ``dtype`` is the source's own sample type (int16 from a mic or stdin), so writing is a plain copy.
    """

    def __init__(self, capacity_frames: int, channels: int, dtype: npt.DTypeLike = np.float32) -> None:
        if capacity_frames <= 0 or channels <= 0:
            raise ValueError("ring buffer capacity and channels must be positive")
        self._data = np.zeros((capacity_frames, channels), dtype=dtype)
        self._capacity = capacity_frames
        self._read = 0  # absolute frame counters; position in _data is counter % capacity
        self._written = 0
        self._cond = threading.Condition()
        self._closed = False
        self.overruns = 0  # blocks dropped (or reported lost by the device) since start
        self.dropped_frames = 0
        self.error: str | None = None  # why the source ended, when it failed

    @property
    def capacity(self) -> int:
        """Frames the buffer holds when full."""
        return self._capacity

    @property
    def channels(self) -> int:
        """Channels per frame."""
        return int(self._data.shape[1])

    @property
    def frames_written(self) -> int:
        """Frames accepted since start."""
        return self._written

    def write(self, block: np.ndarray, wait: bool = False, timeout: float | None = None) -> bool:
        """Copy a (frames, channels) block in; if it does not fit, drop it and count an overrun.

        With ``wait`` the writer blocks for room instead (files, stdin); False when closed or timed out.
        """
        frames = len(block)
        if frames > self._capacity:
            raise ValueError(f"block of {frames} frames exceeds ring capacity {self._capacity}")
        with self._cond:
            if wait and not self._cond.wait_for(
                lambda: self._closed or self._capacity - (self._written - self._read) >= frames, timeout
            ):
                return False
            if self._closed:
                return False
            if self._capacity - (self._written - self._read) < frames:
                self.overruns += 1
                self.dropped_frames += frames
                return False
            self._copy_in(block)
            self._written += frames
            self._cond.notify_all()
        return True

    def _copy_in(self, block: np.ndarray) -> None:
        """Copy into the circular storage, wrapping once if needed."""
        start = self._written % self._capacity
        first = min(len(block), self._capacity - start)
        self._data[start : start + first] = block[:first]
        self._data[: len(block) - first] = block[first:]

    def note_overrun(self) -> None:
        """Count a loss the device reported (PortAudio input overflow)."""
        with self._cond:
            self.overruns += 1

    def read(self, max_frames: int, timeout: float | None = None) -> np.ndarray | None:
        """Up to ``max_frames`` frames (a copy); empty on timeout; None once closed and drained."""
        with self._cond:
            self._cond.wait_for(lambda: self._written > self._read or self._closed, timeout)
            available = self._written - self._read
            if available == 0:
                return None if self._closed else self._data[:0].copy()
            count = min(available, max_frames)
            start = self._read % self._capacity
            index = (start + np.arange(count)) % self._capacity if start + count > self._capacity else None
            out = self._data[index] if index is not None else self._data[start : start + count].copy()
            self._read += count
            self._cond.notify_all()
            return out

    def close(self, error: str | None = None) -> None:
        """End of stream (or source failure): the reader drains what is left, then gets None."""
        with self._cond:
            self._closed = True
            self.error = self.error or error
            self._cond.notify_all()

    @property
    def closed(self) -> bool:
        """True after ``close``."""
        return self._closed
