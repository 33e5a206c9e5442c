"""Events as JSON lines on standard output (or any text stream): what ``earshot agent`` prints."""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

from edge_agent.events import to_json_line
from edge_agent.publishers.base import Publisher

logger = logging.getLogger(__name__)


class StdoutPublisher(Publisher):
    """One compact JSON line per event; a reader that goes away (``| head``) must not stop detection."""

    name = "stdout"

    def __init__(self, out: TextIO | None = None) -> None:
        self.out: TextIO | None = out if out is not None else sys.stdout

    def publish_event(self, event: dict[str, Any], stream_sample: int) -> None:
        """Write the event as one line and flush, so a pipe sees it at once."""
        if self.out is None:
            return
        try:
            self.out.write(to_json_line(event) + "\n")
            self.out.flush()
        except (BrokenPipeError, ValueError):  # ValueError: the stream was closed
            logger.warning("stdout is closed; events go on to the other outputs and the metrics only")
            self.out = None
