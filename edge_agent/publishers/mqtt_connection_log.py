"""Why the MQTT connection fails or flaps, said at WARNING: once per cause, then every ``REMIND_S``.

paho retries on its own with backoff and logs each retry at DEBUG only; without this a broker that refuses
the client, drops it before its CONNACK (a client id or Last Will topic it rejects), fails TLS, or hands its
session to another client with the same id left the agent retrying forever with nothing in the journal.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

logger = logging.getLogger("edge_agent.publishers.mqtt")

REMIND_S = 600.0  # the same cause is repeated this often while it lasts
# A connection the broker ends this soon after accepting it, FLAPS times in a row, is being taken over:
# MQTT lets one session per client id live, so two agents with one id kick each other off every retry.
FLAP_S = 10.0
FLAPS = 3


class ConnectionLog:
    """Rate-limited WARNINGs for one MQTT output's connection; called from paho's network thread."""

    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        tls: bool,
        retry_max_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.where, self.client_id, self.tls, self.retry_max_s = f"{host}:{port}", client_id, tls, retry_max_s
        self._clock = clock
        self._said: dict[str, float] = {}  # cause -> when it was last logged
        self._connected_at: float | None = None
        self._flaps = 0
        self._just_refused = False  # paho reports a refused CONNACK, then the disconnect that follows it

    def connected(self) -> None:
        """The broker accepted the connection."""
        self._connected_at = self._clock()
        self._just_refused = False

    def unreachable(self, error: BaseException | None) -> None:
        """No TCP (or TLS) connection; ``error`` is paho's OSError, when known."""
        reason = str(error) if error is not None else "no connection"
        over = " over TLS" if self.tls else ""
        self._say(
            f"unreachable {reason}",
            "MQTT: cannot reach the broker at %s%s (%s); retrying with "
            "backoff up to %g s, events wait in the disk queue",
            self.where,
            over,
            reason,
            self.retry_max_s,
        )

    def refused(self, reason: object) -> None:
        """The broker answered CONNACK with a failure (bad credentials, client id rejected...)."""
        self._just_refused = True
        self._say(f"refused {reason}", "MQTT: broker refused the connection: %s (retrying)", reason)

    def disconnected(self, was_connected: bool, reason: object) -> None:
        """paho lost the connection: before its CONNACK, soon after it (a takeover), or after a while."""
        if not was_connected:
            self._closed_before_connack(reason)
            return
        lasted = self._clock() - (self._connected_at or self._clock())
        self._flaps = self._flaps + 1 if lasted < FLAP_S else 0
        if lasted >= FLAP_S:
            self._said.clear()  # a new outage: its first cause is news again
        if self._flaps >= FLAPS:
            self._say(
                "takeover",
                "MQTT: the broker closed the connection %d times within %g s of accepting "
                "it; another client probably uses client id %r (two sensors with one device_id?); give "
                "each sensor its own device_id or mqtt.client_id",
                self._flaps,
                FLAP_S,
                self.client_id,
            )
        else:
            self._say(
                "disconnected",
                "MQTT: disconnected (%s); events are kept in the disk queue until it returns",
                reason,
            )

    def _closed_before_connack(self, reason: object) -> None:
        """Closed before the broker accepted us; after a refused CONNACK that is the refusal, said already."""
        if self._just_refused:
            self._just_refused = False
            return
        self._say(
            "no connack",
            "MQTT: the broker at %s closed the connection before accepting it (%s); a "
            "broker does this to a client id, user name or Last Will topic it rejects; retrying",
            self.where,
            reason,
        )

    def _say(self, cause: str, message: str, *args: object) -> None:
        """WARNING unless this cause was said less than REMIND_S ago (DEBUG then)."""
        now = self._clock()
        last = self._said.get(cause)
        if last is not None and now - last < REMIND_S:
            logger.debug(message, *args)
            return
        self._said[cause] = now
        logger.warning(message, *args)
