"""Optional clip capture: a short local FLAC around each alert start, with size and age retention.

Off by default; when ``capture.enabled`` is false ``make_publishers`` builds no ``ClipCapture`` and nothing
is written. It is an output like the others: the consumer thread feeds it model-rate audio (``hear``) for a
bounded pre-roll buffer, and an alert start (``publish_event``) opens a clip from ``pre_roll_s`` before the
detection to ``post_roll_s`` after it. It comes first among the outputs because it adds the name of the
file that *will* be written to the event (``clip``), which the other outputs then carry; the file
appears (atomically, via a temporary name and ``os.replace``) once the post-roll has arrived. Encoding
and retention run on a small writer thread, so the consumer only copies samples.
"""

from __future__ import annotations

import logging
import os
import queue
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.config import CaptureConfig
from edge_agent.metrics import AgentMetrics
from edge_agent.publishers.base import OutputSetupError, Publisher

logger = logging.getLogger(__name__)

CLIP_SUFFIX = ".flac"
# Only files the agent itself named are ever deleted by retention.
CLIP_NAME = re.compile(r"^\d{8}T\d{6}\.\d{3}Z_[A-Za-z0-9_-]+_[0-9a-f]{8}\.flac$")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
PART_NAME = re.compile(r"^\.\d{8}T\d{6}\.\d{3}Z_[A-Za-z0-9_-]+_[0-9a-f]{8}\.flac\.part$")  # being written
WRITE_QUEUE = 32  # clips waiting for the writer; beyond this a clip is dropped and logged
RETENTION_EVERY_S = 3600.0  # the age limit also applies when no alert comes for a long time
# A read-only or full card fails every clip the same way: say it once, then this often; the metric counts all.
FAILURE_LOG_EVERY_S = 600.0


class CaptureError(OutputSetupError):
    """The capture directory cannot be used; one-line message."""


def clip_name(timestamp: float, label: str, event_id: str) -> str:
    """``<utc-timestamp>_<label>_<event_id-prefix>.flac``: ``20260101T120000.250Z_siren_1a2b3c4d.flac``."""
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    stamp = moment.strftime("%Y%m%dT%H%M%S") + f".{moment.microsecond // 1000:03d}Z"
    prefix = event_id.replace("-", "")[:8].lower()
    return f"{stamp}_{_UNSAFE.sub('-', label)}_{prefix}{CLIP_SUFFIX}"


def apply_retention(
    directory: Path, max_bytes: float, max_age_s: float, now: float | None = None
) -> list[str]:
    """Delete the agent's clips older than ``max_age_s``, then the oldest until the total fits."""
    now = time.time() if now is None else now
    clips = []
    for path in directory.iterdir() if directory.is_dir() else []:
        if CLIP_NAME.match(path.name):
            try:
                stat = path.stat()
            except FileNotFoundError:  # removed meanwhile
                continue
            clips.append((path.name, stat.st_mtime, stat.st_size, path))
    clips.sort()  # the name starts with the UTC time: oldest first
    total = sum(size for _, _, size, _ in clips)
    removed = []
    for name, mtime, size, path in clips:
        if now - mtime <= max_age_s and total <= max_bytes:
            continue
        path.unlink(missing_ok=True)
        total -= size
        removed.append(name)
    return removed


@dataclass
class _PendingClip:
    """A clip still collecting post-roll: absolute model-rate sample range and the parts gathered so far."""

    name: str
    start: int
    end: int
    parts: list[np.ndarray] = field(default_factory=list)
    collected_to: int = 0  # absolute index up to which parts hold samples

    def take(self, samples: np.ndarray, first: int) -> None:
        """Append the part of ``samples`` (absolute index of samples[0] = ``first``) inside the clip."""
        lo, hi = max(self.collected_to, self.start, first), min(self.end, first + len(samples))
        if hi > lo:
            self.parts.append(samples[lo - first : hi - first].copy())
            self.collected_to = hi

    @property
    def done(self) -> bool:
        """True once the post-roll is complete."""
        return self.collected_to >= self.end


class ClipCapture(Publisher):
    """Pre-roll buffer, open clips, writer thread; ``hear`` and ``publish_event`` run on the consumer."""

    name = "capture"

    def __init__(self, config: CaptureConfig, sample_rate: int, metrics: AgentMetrics | None = None) -> None:
        self.config, self.rate = config, sample_rate
        self.metrics = metrics if metrics is not None else AgentMetrics()
        self.metrics.clip_write_failures.inc(0)
        self._failure_logged_at: float | None = None  # monotonic time of the last failure log line
        self.directory = Path(config.dir).expanduser()
        self.pre_samples = int(round(config.pre_roll_s * sample_rate))
        self.post_samples = int(round(config.post_roll_s * sample_rate))
        self._buffer = np.zeros(0, dtype=np.float32)  # the newest audio, at most pre-roll + one block
        self._end = 0  # absolute index one past the buffer's last sample
        self._pending: list[_PendingClip] = []
        self._queue: queue.Queue[tuple[str, np.ndarray] | None] = queue.Queue(maxsize=WRITE_QUEUE)
        self._writer = threading.Thread(target=self._write_loop, name="earshot-capture", daemon=True)
        self.written: list[str] = []  # names written, for logs and tests
        self.dropped = 0
        self._open_clips: dict[str, str | None] = {}  # label -> clip of its open episode

    def start(self) -> None:
        """Create the directory (owner-only) and start the writer; retention runs once now."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._remove_partials()
            self._retain()
        except OSError as error:
            detail = error.strerror or error
            raise CaptureError(f"capture.dir: cannot use {self.directory}: {detail}") from None
        self._writer.start()

    def publish_event(self, event: dict[str, Any], stream_sample: int) -> None:
        """A start opens a clip around ``stream_sample``; every event gets its episode's clip name."""
        label = str(event["label"])
        if event["kind"] != "start":
            event["clip"] = self._open_clips.pop(label, None)
            return
        started = datetime.fromisoformat(str(event["started_at"]).replace("Z", "+00:00")).timestamp()
        event["clip"] = self._open_clips[label] = self._start_clip(
            label, str(event["event_id"]), stream_sample, started
        )

    def hear(self, samples: np.ndarray) -> None:
        """Model-rate mono audio, in stream order: keep the pre-roll, feed open clips."""
        first = self._end
        self._end += len(samples)
        for clip in self._pending:
            clip.take(samples, first)
        self._submit_done()
        keep = self.pre_samples + len(samples)
        self._buffer = np.concatenate([self._buffer, samples])[-keep:] if keep else self._buffer[:0]

    def _start_clip(self, label: str, event_id: str, at_sample: int, timestamp: float) -> str:
        """Open a clip around absolute sample ``at_sample`` (the alert); returns its future file name."""
        name = clip_name(timestamp, label, event_id)
        clip = _PendingClip(name, max(0, at_sample - self.pre_samples), at_sample + self.post_samples)
        clip.take(self._buffer, self._end - len(self._buffer))
        self._pending.append(clip)
        self._submit_done()
        return name

    def close(self, timeout: float = 10.0) -> None:
        """Write open clips with the post-roll they have (end of stream), then stop the writer."""
        for clip in self._pending:
            clip.end = clip.collected_to
        self._submit_done(final=True)
        if self._writer.is_alive():
            self._queue.put(None)
            self._writer.join(timeout)

    def _submit_done(self, final: bool = False) -> None:
        """Hand finished clips to the writer thread."""
        keep = []
        for clip in self._pending:
            if not (clip.done or final):
                keep.append(clip)
                continue
            samples = np.concatenate(clip.parts) if clip.parts else np.zeros(0, dtype=np.float32)
            try:
                self._queue.put_nowait((clip.name, samples))
            except queue.Full:  # the SD card stalls: never block the consumer for a clip
                self.dropped += 1
                logger.warning("clip %s dropped: %d clips already wait to be written", clip.name, WRITE_QUEUE)
        self._pending = keep

    def _write_loop(self) -> None:
        """Writer thread: encode and store clips, apply retention after each and hourly."""
        while True:
            try:
                item = self._queue.get(timeout=RETENTION_EVERY_S)
            except queue.Empty:
                self._retain_safely()
                continue
            if item is None:
                return
            self._store(*item)
            self._retain_safely()

    def _store(self, name: str, samples: np.ndarray) -> None:
        """Write one clip; a failure is counted and logged, never the end of the writer."""
        try:
            self._write(name, samples)
        except (OSError, RuntimeError) as error:  # RuntimeError: libsndfile's; read-only, full, gone
            self._write_failed(name, error)
        except Exception:  # the writer's boundary: a bad disk must not stop detection
            logger.exception("could not write clip %s", name)

    def _retain_safely(self) -> None:
        """Retention on the writer thread: a read-only directory cannot shrink, and must not stop it."""
        try:
            self._retain()
        except OSError as error:
            logger.debug("retention in %s failed: %s", self.directory, error)

    def _write(self, name: str, samples: np.ndarray) -> None:
        """FLAC 16-bit via a temporary name, then an atomic rename."""
        import soundfile as sf  # here: an agent without capture never loads libsndfile for it

        if not len(samples):
            logger.warning("clip %s has no audio; not written", name)
            return
        final = self.directory / name
        partial = final.with_name("." + name + ".part")
        try:
            sf.write(str(partial), np.clip(samples, -1.0, 1.0), self.rate, format="FLAC", subtype="PCM_16")
            os.replace(partial, final)
        except BaseException:
            _unlink_quietly(partial)  # a half-written clip is no clip; on a full disk it frees the space
            raise
        self.written.append(name)
        logger.info("clip %s written (%.1f s)", name, len(samples) / self.rate)

    def _write_failed(self, name: str, error: BaseException) -> None:
        """Count every failed clip; log the first, then one line per FAILURE_LOG_EVERY_S (no traceback)."""
        self.metrics.clip_write_failures.inc()
        now = time.monotonic()
        if self._failure_logged_at is not None and now - self._failure_logged_at < FAILURE_LOG_EVERY_S:
            logger.debug("clip %s not written: %s", name, error)
            return
        self._failure_logged_at = now
        logger.warning(
            "clip %s not written to %s: %s; detection goes on, failures are counted in "
            "earshot_clip_write_failures_total and logged every %.0f min",
            name,
            self.directory,
            _first_line(error),
            FAILURE_LOG_EVERY_S / 60,
        )

    def _remove_partials(self) -> None:
        """Clips a crash left half-written (only names the agent makes)."""
        for path in self.directory.iterdir():
            if PART_NAME.match(path.name):
                _unlink_quietly(path)
                logger.info("removed %s, a clip left half-written by an earlier run", path.name)

    def _retain(self) -> None:
        """Apply the size and age limits."""
        removed = apply_retention(self.directory, self.config.max_mb * 1e6, self.config.max_age_days * 86400)
        if removed:
            logger.info("retention removed %d old clip(s), oldest %s", len(removed), removed[0])


def _unlink_quietly(path: Path) -> None:
    """Remove ``path`` if it can be removed; on a read-only file system it cannot, and need not be."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


def _first_line(error: BaseException) -> str:
    """One line of an exception message (libsndfile's can span several)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
