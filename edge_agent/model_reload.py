"""Model updates without downtime: verify a new model off the audio path, then hand it to the pipeline.

A small watcher thread wakes on SIGHUP (``request``) or every ``model.reload_poll_s`` to compare the
model file's and its card's stat signature. A change (or SIGHUP) loads the file through the same checks
as start-up (``OnnxModel.load``: sha256 against the card, passing gate unless ``allow_ungated``) plus a
compatibility check against the running model. A verified model is offered to the pipeline, whose consumer
thread swaps it in between two windows; the ring buffer keeps filling meanwhile, so no audio is dropped.
On any failure the running model stays, and the failure is logged and counted. A file that cannot be the
model (over ``MAX_MODEL_BYTES``, no card, a size other than its card's ``size_bytes``) is refused from its
stat and card before a byte of it is read or hashed.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from edge_agent.model_card import ModelCardError, card_path, file_sha256, read_card
from edge_agent.onnx_model import MAX_MODEL_BYTES, ModelError, OnnxModel

logger = logging.getLogger(__name__)

Signature = tuple[tuple[int, int, int] | None, tuple[int, int, int] | None]

MAX_CARD_BYTES = 1 << 20  # a card is a few KB of JSON; it is read whole too


def _stat(path: Path) -> tuple[int, int, int] | None:
    """(mtime_ns, size, inode), or None when the file is absent."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def file_signature(model_path: str | Path) -> Signature:
    """Stat of the model and of its card: a change in either may make a (previously refused) model valid."""
    return _stat(Path(model_path)), _stat(card_path(model_path))


def readable_sha256(path: str | Path) -> str | None:
    """Hex sha256 of a file, or None when it cannot be read (mid-replacement, removed)."""
    try:
        return file_sha256(path)
    except OSError:
        return None


def unread_problem(model_path: str | Path, allow_ungated: bool) -> str:
    """Why the file must not even be read, from stat and the small card ("" when it may be)."""
    path, card = Path(model_path), card_path(model_path)
    size, card_size = _stat(path), _stat(card)
    if size is None:
        return ""  # OnnxModel.load says it is missing
    if size[1] > MAX_MODEL_BYTES:
        return (
            f"model {path} is {size[1] / 2**20:.0f} MiB, over the {MAX_MODEL_BYTES >> 20} MiB a model "
            "may be; not read"
        )
    if card_size is None:
        return "" if allow_ungated else f"model {path} has no card {card.name}; not read"
    if card_size[1] > MAX_CARD_BYTES:
        return f"model card {card} is {card_size[1]:,} bytes, over {MAX_CARD_BYTES:,}; not read"
    return _card_size_problem(path, size[1])


def _card_size_problem(path: Path, size: int) -> str:
    """A file whose size differs from its card's ``size_bytes`` is not the carded model (or half-copied)."""
    try:
        expected = read_card(path).get("size_bytes")  # type: ignore[union-attr]
    except (ModelCardError, AttributeError):
        return ""  # unreadable or gone meanwhile: OnnxModel.load gives the reason
    if isinstance(expected, int) and not isinstance(expected, bool) and expected != size:
        return (
            f"model {path} does not match its card {card_path(path).name}: {size:,} bytes, the card "
            f"says {expected:,} (modified, or still being copied); not read"
        )
    return ""


def compatibility_problem(running: OnnxModel, candidate: OnnxModel) -> str:
    """Why ``candidate`` cannot replace ``running`` in a live pipeline ("" when it can)."""
    if candidate.labels != running.labels:
        return (
            f"its labels differ from the running model's ({len(candidate.labels)} vs "
            f"{len(running.labels)} classes or another order); restart the agent to change labels"
        )
    new, old = candidate.frontend, running.frontend
    if new.sample_rate != old.sample_rate:
        return f"its sample rate {new.sample_rate} Hz differs from {old.sample_rate} Hz; restart the agent"
    if new.window_samples != old.window_samples:
        return (
            f"its window of {new.window_samples} samples differs from {old.window_samples}; "
            "restart the agent to change the window length"
        )
    return ""


class ModelReloader:
    """Watches one model path; verifies changes on its own thread and offers them to ``pipeline``."""

    def __init__(
        self, pipeline: Any, path: str | Path, threads: int, allow_ungated: bool, poll_s: float
    ) -> None:
        self.pipeline, self.path = pipeline, str(path)
        self.threads, self.allow_ungated, self.poll_s = threads, allow_ungated, poll_s
        self._signature = file_signature(self.path)
        self._wake = threading.Event()
        self._forced = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="earshot-model-watch", daemon=True)

    def start(self) -> None:
        """Start watching."""
        self._thread.start()

    def stop(self) -> None:
        """Stop watching (a reload being verified finishes first)."""
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10.0)

    def request(self) -> None:
        """Reload now (SIGHUP, from ``edge_agent.signals``' thread: never from a signal handler itself)."""
        self._forced = True
        self._wake.set()

    def _run(self) -> None:
        """Thread body: wait for a request or the next poll, then check."""
        while not self._stop.is_set():
            self._wake.wait(self.poll_s if self.poll_s > 0 else None)
            self._wake.clear()
            if self._stop.is_set():
                return
            forced, self._forced = self._forced, False
            try:
                self.check(forced)
            except Exception:  # the watcher's boundary: never take the agent down over an update
                logger.exception("model reload check failed")
                self.pipeline.metrics.model_reloads.labels(result="failed").inc()

    def check(self, forced: bool = False) -> bool:
        """Reload when forced or when the files changed to a different model; True when one was offered."""
        signature = file_signature(self.path)
        if not forced and signature == self._signature:
            return False
        self._signature = signature
        if not forced and self._is_running_model():
            return False  # touched, or only the card changed, and the running model is that file
        return self.reload("SIGHUP" if forced else "file changed")

    def _is_running_model(self) -> bool:
        """The file hashes to the running model; one that may not be read is not hashed either."""
        if unread_problem(self.path, self.allow_ungated):
            return False
        return readable_sha256(self.path) == self.pipeline.model.sha256

    def reload(self, reason: str) -> bool:
        """Verify the model at ``path`` and offer it; on failure log, count, and keep the running one."""
        started = time.perf_counter()
        unread = unread_problem(self.path, self.allow_ungated)
        if unread:
            return self._refuse(reason, unread)
        try:
            candidate = OnnxModel.load(self.path, self.threads, self.allow_ungated)
        except ModelError as error:
            return self._refuse(reason, str(error))
        problem = compatibility_problem(self.pipeline.model, candidate)
        if problem:
            return self._refuse(reason, f"model {self.path} cannot replace the running one: {problem}")
        verified_ms = (time.perf_counter() - started) * 1e3
        self.pipeline.offer_model(candidate)
        logger.info(
            "model reload (%s): %s %s (%s) verified in %.0f ms; swapping in at the next window",
            reason,
            candidate.metadata.name,
            candidate.metadata.version,
            candidate.sha256[:12],
            verified_ms,
        )
        return True

    def _refuse(self, reason: str, message: str) -> bool:
        """Log and count a refused reload."""
        logger.error(
            "model reload (%s) refused, the running model %s stays: %s",
            reason,
            self.pipeline.model.sha256[:12],
            message,
        )
        self.pipeline.metrics.model_reloads.labels(result="failed").inc()
        return False
