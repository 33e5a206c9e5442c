"""The one shape every output has: ``Publisher``. The pipeline hands events to a list of them.

An output overrides only what it carries. The consumer thread calls ``hear``, ``publish_event`` and
``publish_state``, so each must return quickly: network outputs put events in their durable queue
(``DiskQueue``) and deliver them from a thread of their own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np


class OutputSetupError(ValueError):
    """An output cannot be built from its configuration (one line, names the key)."""


class Publisher:
    """One output of the agent (stdout, MQTT, webhook, clip capture); the defaults do nothing."""

    name = "output"  # the ``output`` label in metrics and the name in logs

    def start(self) -> None:
        """Open connections and start threads; called once before the first event."""

    def hear(self, samples: np.ndarray) -> None:
        """Model-rate mono audio in stream order (only outputs that keep audio, such as clips, use it)."""

    def publish_event(self, event: dict[str, Any], stream_sample: int) -> None:
        """One ``earshot.event/1`` event; ``stream_sample`` is the model-rate sample at which it was decided.

        Outputs earlier in the list may add keys that later ones carry (clip capture adds ``clip``).
        """

    def publish_state(self, kind: str, state: dict[str, Any]) -> None:
        """A periodic state report (``kind`` names it, e.g. ``level``): the newest one wins, never queued."""

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what can be delivered within ``timeout`` seconds, then stop; nothing queued is lost."""

    def health(self) -> tuple[bool, str]:
        """For /healthz: False with a reason when this output can no longer keep events."""
        return True, "ok"


def drain(busy: Callable[[], bool], deadline: float, wake: threading.Event) -> None:
    """At close: keep waking an output's sender while ``busy()`` holds, until the monotonic ``deadline``."""
    while busy() and time.monotonic() < deadline:
        wake.set()
        time.sleep(0.02)
