"""A real HTTP endpoint for webhook tests: records every POST, answers with scripted status codes, and can
go down and come back on the same port (connections refused meanwhile)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from support.mosquitto import free_port


@dataclass(frozen=True)
class Received:
    """One POST as the endpoint saw it."""

    at: float  # wall time of arrival
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    status: int  # what the endpoint answered


class HttpSink:
    """A ThreadingHTTPServer on 127.0.0.1; ``answers`` are status codes used in order, then 200."""

    def __init__(
        self, port: int | None = None, answers: list[int] | None = None, retry_after: str | None = None
    ) -> None:
        self.port = port or free_port()
        self.answers = list(answers or [])
        self.retry_after = retry_after
        self.received: list[Received] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/earshot"

    def start(self) -> HttpSink:
        """Listen (again) on the same port."""
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with sink._lock:
                    status = sink.answers.pop(0) if sink.answers else 200
                    sink.received.append(Received(time.time(), self.path, dict(self.headers), body, status))
                self.send_response(status)
                if status in (429, 503) and sink.retry_after is not None:
                    self.send_header("Retry-After", sink.retry_after)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:  # keep the test output quiet
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        """Stop listening: from now on connections are refused."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def accepted(self) -> list[dict[str, Any]]:
        """Bodies of the POSTs answered with a 2xx, in arrival order."""
        with self._lock:
            return [r.body for r in self.received if 200 <= r.status < 300]

    def wait_for(self, condition: Callable[[list[dict[str, Any]]], bool], timeout: float = 10.0) -> None:
        """Block until ``condition(accepted())`` holds."""
        deadline = time.monotonic() + timeout
        while not condition(self.accepted()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"endpoint received {len(self.accepted())} events; condition not met")
            time.sleep(0.02)
