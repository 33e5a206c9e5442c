"""Signals without deadlocks: the handlers only record, a small thread acts on what they recorded.

A Python signal handler runs on the main thread between two bytecodes, possibly inside the very
``threading.Event.set()`` it would call: its lock is not re-entrant, so the agent hung, or nested handlers
overflowed the stack, under a burst of SIGTERM/SIGINT/SIGHUP. Here the C-level handler writes the signal
number to a self-pipe (``signal.set_wakeup_fd``, async-signal-safe), the Python handler does nothing, and
the ``earshot-signals`` thread reads the pipe and calls the actions (stop the pipeline, reload the model)
from ordinary thread context. Signals that come before an action exists (start-up) are kept and handed
over when it is attached, so a SIGHUP while the model loads no longer kills the agent.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

logger = logging.getLogger(__name__)

_CLOSE = 0  # written by close(); no signal has number 0


def stop_signals() -> tuple[int, ...]:
    """SIGINT and SIGTERM: stop the agent."""
    return (signal.SIGINT, signal.SIGTERM)


def hup_signals() -> tuple[int, ...]:
    """SIGHUP, where the platform has one: reload the model."""
    return (signal.SIGHUP,) if hasattr(signal, "SIGHUP") else ()


def _record(signum: int, frame: FrameType | None) -> None:
    """The Python-level handler: nothing, the wakeup fd already carries the signal number."""


class SignalRouter:
    """Routes SIGINT/SIGTERM to a stop action and SIGHUP to a reload action, off the signal handler."""

    def __init__(self, handle_hup: bool = True) -> None:
        self._signals = stop_signals() + (hup_signals() if handle_hup else ())
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)  # set_wakeup_fd requires it; a full pipe drops, never blocks
        self._lock = threading.Lock()  # main thread (attach) vs router thread; never taken in a handler
        self._on_stop: Callable[[], None] | None = None
        self._on_hup: Callable[[], None] | None = None
        self.stop_requested = False
        self._pending_hup = False
        self._previous: dict[int, object] = {}
        self._previous_fd = -1
        self._thread = threading.Thread(target=self._run, name="earshot-signals", daemon=True)

    def install(self) -> SignalRouter:
        """Take over the signals (main thread only); returns self."""
        self._previous = {signum: signal.signal(signum, _record) for signum in self._signals}
        self._previous_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
        self._thread.start()
        return self

    def on_stop(self, action: Callable[[], None]) -> None:
        """Call ``action`` on SIGINT/SIGTERM; at once if one came already."""
        with self._lock:
            self._on_stop, pending = action, self.stop_requested
        if pending:
            action()

    def on_hup(self, action: Callable[[], None]) -> None:
        """Call ``action`` on SIGHUP; at once if one came while there was none (start-up)."""
        with self._lock:
            self._on_hup, pending, self._pending_hup = action, self._pending_hup, False
        if pending:
            action()

    def close(self, restore: bool = True) -> None:
        """Stop routing; ``restore`` puts the previous handlers back, else late signals stay ignored."""
        signal.set_wakeup_fd(self._previous_fd)
        if restore:
            for signum, handler in self._previous.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]
        if self._thread.is_alive():
            os.write(self._write_fd, bytes([_CLOSE]))
            self._thread.join(timeout=2.0)
        os.close(self._read_fd)
        os.close(self._write_fd)

    def _run(self) -> None:
        """Thread body: act on each signal number read from the pipe until close()."""
        while True:
            data = os.read(self._read_fd, 512)
            for signum in data:
                if signum == _CLOSE:
                    return
                self._dispatch(signum)
            if not data:
                return

    def _dispatch(self, signum: int) -> None:
        """Stop or reload; an action's failure is logged, never the end of signal handling."""
        try:
            if signum in hup_signals():
                self._hup()
            elif signum in stop_signals():
                self._stop(signum)
        except Exception:  # the router's boundary: the next signal must still be handled
            logger.exception("handling signal %d failed", signum)

    def _stop(self, signum: int) -> None:
        """First stop signal: log and act; repeats while stopping change nothing."""
        with self._lock:
            first, self.stop_requested = not self.stop_requested, True
            action = self._on_stop
        if first:
            logger.info("%s received: stopping", signal.Signals(signum).name)
        if action is not None:
            action()

    def _hup(self) -> None:
        """Reload, or remember it until the reloader exists; ignored once stopping."""
        with self._lock:
            action, first_pending = self._on_hup, not self._pending_hup
            if action is None:
                self._pending_hup = True
        if self.stop_requested:
            logger.debug("SIGHUP ignored: stopping")
        elif action is not None:
            action()
        elif first_pending:
            logger.info("SIGHUP during start-up: the model is reloaded once the agent runs")
