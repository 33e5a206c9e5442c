"""The agent's HTTP endpoint: /metrics (Prometheus text) and /healthz, in a daemon thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from edge_agent.metrics import AgentMetrics

logger = logging.getLogger(__name__)

HealthCheck = Callable[[], "tuple[bool, str]"]
# Seconds a connection may send nothing before it is closed: each one holds a handler thread, and a client
# that connects and never speaks would hold it forever. A scrape's request arrives in milliseconds.
IDLE_TIMEOUT_S = 5.0


class MetricsServer(ThreadingHTTPServer):
    """A threading HTTP server that knows its metrics and health check."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], metrics: AgentMetrics, health: HealthCheck) -> None:
        super().__init__(address, _Handler)
        self.metrics = metrics
        self.health = health
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The bound port (useful when started with port 0)."""
        return int(self.server_address[1])

    def shutdown(self) -> None:
        """Stop serving, close the socket and join the thread."""
        super().shutdown()
        self.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5.0)


class _Handler(BaseHTTPRequestHandler):
    """Routes GET /metrics and /healthz; everything else is 404."""

    server: MetricsServer
    timeout = IDLE_TIMEOUT_S  # socket timeout set by StreamRequestHandler.setup

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        """Serve one request."""
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._reply(200, generate_latest(self.server.metrics.registry), CONTENT_TYPE_LATEST)
        elif path == "/healthz":
            self._reply_health()
        else:
            self._reply(404, b"not found\n", "text/plain; charset=utf-8")

    def _reply_health(self) -> None:
        """200 ok, or 503 with the reason; a failing check is itself unhealthy."""
        try:
            healthy, reason = self.server.health()
        except Exception as error:  # the health probe must answer even if the check is broken
            logger.exception("health check failed")
            healthy, reason = False, f"health check error: {error}"
        body = ("ok" if healthy else reason or "unhealthy") + "\n"
        self._reply(200 if healthy else 503, body.encode(), "text/plain; charset=utf-8")

    def _reply(self, status: int, body: bytes, content_type: str) -> None:
        """Send a complete response."""
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 (base-class signature)
        """Route access logs to logging at debug level instead of stderr."""
        logger.debug("%s " + format, self.address_string(), *args)


def start_http_server(
    metrics: AgentMetrics, host: str = "127.0.0.1", port: int = 0, health: HealthCheck | None = None
) -> MetricsServer:
    """Bind host:port (port 0 picks a free one) and serve in a daemon thread; OSError if the bind fails."""
    server = MetricsServer((host, port), metrics, health or (lambda: (True, "ok")))
    server.thread = threading.Thread(target=server.serve_forever, name="earshot-http", daemon=True)
    server.thread.start()
    logger.info("metrics and health on http://%s:%s/", host, server.port)
    return server
