"""The webhook output: each event POSTed as JSON to an HTTP endpoint, from its durable on-disk queue.

The consumer thread only queues (a fsync'd local write). A sender thread POSTs the oldest event, waits for
the answer, and removes the event only on a 2xx, so order is kept and an endpoint that is down for a while
loses nothing: the event is retried with a doubling delay. A 4xx that retrying cannot fix (a bad token, a
payload the endpoint refuses) drops the event, logged and counted. Stdlib ``urllib``: one POST at a time
needs no HTTP client library on the Pi.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from edge_agent import __version__
from edge_agent.config import WebhookConfig
from edge_agent.events import to_json_line
from edge_agent.metrics import AgentMetrics
from edge_agent.publishers.base import OutputSetupError, Publisher, drain
from edge_agent.publishers.disk_queue import DiskQueue, QueuedEvent

logger = logging.getLogger(__name__)

_POLL_S = 1.0  # the sender re-reads the queue at least this often even without a wake-up
# Client errors that can succeed later: timeout, too early, rate limited. Any other 4xx is final.
_RETRYABLE_CLIENT_ERRORS = {408, 425, 429}


@dataclass(frozen=True)
class PostResult:
    """The outcome of one POST: ``status`` 0 when no HTTP answer came; ``retry_after`` from the server."""

    status: int
    detail: str
    retry_after: float | None = None

    @property
    def delivered(self) -> bool:
        """The endpoint took the event (2xx)."""
        return 200 <= self.status < 300

    @property
    def final(self) -> bool:
        """A refusal that retrying cannot fix."""
        return 400 <= self.status < 500 and self.status not in _RETRYABLE_CLIENT_ERRORS


Poster = Callable[[bytes, dict[str, str]], PostResult]


class WebhookPublisher(Publisher):
    """POSTs queued events in order, one at a time, retrying with backoff until each is taken or refused."""

    name = "webhook"

    def __init__(
        self, config: WebhookConfig, queue: DiskQueue, metrics: AgentMetrics, post: Poster | None = None
    ) -> None:
        self.config, self.queue, self.metrics = config, queue, metrics
        self.post = post if post is not None else _urllib_poster(config)
        self._wake, self._stop = threading.Event(), threading.Event()
        self._sending = threading.Event()  # set while a POST is in flight: close() waits for it
        self._sender = threading.Thread(target=self._run_sender, name="earshot-webhook-sender", daemon=True)
        self._delay = config.retry_min_s
        self._failing_since: float | None = None  # monotonic time of the first failure of an outage
        metrics.init_output(self.name)

    def start(self) -> None:
        """Start delivering queued events (including any left by an earlier run)."""
        logger.info(
            "webhook: posting events to %s (%d queued)", _redacted(self.config.url), self.queue.depth()
        )
        self._sender.start()

    def publish_event(self, event: dict[str, Any], stream_sample: int) -> None:
        """Queue one event durably and wake the sender; never raises for network or disk trouble."""
        # The queue's address column holds the event id: the key the endpoint de-duplicates on.
        self.queue.put(str(event["event_id"]), to_json_line(event))
        self._wake.set()

    def close(self, timeout: float = 5.0) -> None:
        """Deliver what the endpoint takes within ``timeout`` s; the rest stays queued for the next run."""
        deadline = time.monotonic() + timeout
        drain(
            lambda: self._sender.is_alive() and bool(self.queue.depth()) and self._failing_since is None,
            deadline,
            self._wake,
        )
        self._stop.set()
        self._wake.set()
        if self._sender.is_alive():
            self._sender.join(max(0.1, deadline - time.monotonic()) + self.config.timeout_s)
        self.queue.close()
        logger.info("webhook: closed with %d events left in the disk queue", self.queue.depth())

    def health(self) -> tuple[bool, str]:
        """Unhealthy while the disk queue cannot store events (read-only, disk full): they are being lost."""
        return self.queue.health()

    def _run_sender(self) -> None:
        """Loop: post the oldest queued event; wait after a failure; sleep when the queue is empty."""
        while not self._stop.is_set():
            try:
                pending = self.queue.read_after(0, 1)
                if not pending:
                    self._wake.wait(_POLL_S)
                    self._wake.clear()
                    continue
                self._deliver(pending[0])
            except Exception:  # the loop must survive anything; the events stay on disk meanwhile
                logger.exception("webhook sender: unexpected error; retrying")
                self._stop.wait(1.0)

    def _deliver(self, event: QueuedEvent) -> None:
        """One POST of ``event``; on a retryable failure, wait the backoff delay (stop cuts it short)."""
        result = self.post(event.payload.encode("utf-8"), self._headers(event))
        if result.delivered or result.final:
            self._recovered()
            if result.delivered:
                self.queue.delivered(event)
            else:
                self.queue.refused(event, f"HTTP {result.status} {result.detail}")
            return
        self.metrics.delivery_failures.labels(output=self.name).inc()
        self._note_failure(result)
        wait = self._delay if result.retry_after is None else min(result.retry_after, self.config.retry_max_s)
        self._delay = min(self._delay * 2, self.config.retry_max_s)
        self._stop.wait(wait)

    def _headers(self, event: QueuedEvent) -> dict[str, str]:
        """JSON, our agent name, the event id for de-duplication, and the bearer token when configured."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"earshot/{__version__}",
            "Idempotency-Key": event.topic,
        }
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        return headers

    def _note_failure(self, result: PostResult) -> None:
        """Warn once when an outage starts (not on every retry); events wait on disk meanwhile."""
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            logger.warning(
                "webhook: %s failed (%s); retrying with backoff up to %g s, events wait in the disk queue",
                _redacted(self.config.url),
                result.detail,
                self.config.retry_max_s,
            )

    def _recovered(self) -> None:
        """After an outage: say how long it lasted, and start the backoff from the bottom again."""
        if self._failing_since is not None:
            logger.warning(
                "webhook: %s answers again after %.0f s",
                _redacted(self.config.url),
                time.monotonic() - self._failing_since,
            )
        self._failing_since, self._delay = None, self.config.retry_min_s


def _redacted(url: str) -> str:
    """The URL without a query string, which may carry a key."""
    return url.split("?", 1)[0]


def _urllib_poster(config: WebhookConfig) -> Poster:
    """A POST function over urllib with the configured timeout and CA bundle."""
    context = None
    if config.url.startswith("https://"):
        try:
            context = ssl.create_default_context(cafile=config.tls_ca)
        except (OSError, ssl.SSLError) as error:
            raise OutputSetupError(f"webhook.tls_ca: cannot load {config.tls_ca}: {error}") from None

    def post(body: bytes, headers: dict[str, str]) -> PostResult:
        request = urllib.request.Request(config.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=config.timeout_s, context=context) as response:
                return PostResult(response.status, response.reason or "")
        except urllib.error.HTTPError as error:
            return PostResult(error.code, str(error.reason), _retry_after(error.headers.get("Retry-After")))
        except (urllib.error.URLError, OSError, ValueError) as error:  # refused, DNS, TLS, timeout
            reason = getattr(error, "reason", None) or error
            return PostResult(0, str(reason) or type(error).__name__)

    return post


def _retry_after(value: str | None) -> float | None:
    """Seconds from a numeric Retry-After header (an HTTP date is rare for webhooks: ignored)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
