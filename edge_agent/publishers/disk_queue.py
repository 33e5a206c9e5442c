"""A bounded, fsync'd on-disk FIFO of outgoing events (sqlite3), so no event is lost to an outage.

Every output that delivers over a network (MQTT, webhook) has one, in its own file under ``queue.dir``.
sqlite3 because it is in the standard library and survives SIGKILL and power loss with WAL + fsync, and
a queue on the sensor does not depend on the broker's or the endpoint's own persistence.
An event enters with ``put`` and leaves only with ``delivered``/``refused`` (after the broker's PUBACK or
the endpoint's answer). Across a crash or
SIGKILL the file keeps every unacknowledged event, and ``read_after(0, n)`` returns them in order.

Defined edge behaviour:
- full (``max_events``): the oldest events are deleted to make room; each is counted and logged;
- disk full or I/O error on ``put``: the new event cannot be stored; ``put`` returns None, the event is
  counted as dropped and logged (the agent keeps running and retries storage with the next event);
- a corrupt queue file is moved aside (``*.corrupt-<unix time>``) and a new one is started, logged.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edge_agent.config import QueueConfig
from edge_agent.metrics import AgentMetrics
from edge_agent.publishers.base import OutputSetupError
from edge_agent.publishers.ha_discovery import node_id

logger = logging.getLogger(__name__)

_SCHEMA = """CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    created REAL NOT NULL
)"""


@dataclass(frozen=True)
class QueuedEvent:
    """One stored event: ``seq`` orders the queue, ``created`` is its Unix time (for latency)."""

    seq: int
    topic: str
    payload: str
    created: float


class DiskQueue:
    """Durable FIFO; thread-safe (the audio thread puts, the MQTT thread acks)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_events: int,
        metrics: AgentMetrics | None = None,
        output: str = "mqtt",
    ) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        self.path = Path(path)
        self.max_events = max_events
        self.output = output  # the ``output`` label of this queue's metrics
        self._metrics = metrics
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = self._open()
        self._depth = int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        self._publish_depth()
        if self._depth:
            logger.info(
                "disk queue %s holds %d undelivered events from a previous run", self.path, self._depth
            )

    def _open(self) -> sqlite3.Connection:
        """Open (or create) the database; a corrupt file is moved aside rather than crashing the agent."""
        try:
            return _connect(self.path)
        except sqlite3.DatabaseError as error:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            logger.error(
                "disk queue %s is unreadable (%s); moved to %s, starting empty", self.path, error, aside
            )
            self.path.rename(aside)
            return _connect(self.path)

    def put(self, topic: str, payload: str, created: float | None = None) -> int | None:
        """Store one event durably and return its seq; None (counted, logged) if it could not be stored."""
        created = time.time() if created is None else created
        with self._lock:
            try:
                with self._db:
                    cursor = self._db.execute(
                        "INSERT INTO events (topic, payload, created) VALUES (?, ?, ?)",
                        (topic, payload, created),
                    )
                    seq = int(cursor.lastrowid or 0)
                    dropped = self._trim()
            except sqlite3.Error as error:
                logger.error(
                    "%s event on %s dropped: disk queue %s cannot store it (%s)",
                    self.output,
                    topic,
                    self.path,
                    error,
                )
                self._count_dropped(1)
                return None
            self._depth += 1 - dropped
        if dropped:
            logger.warning(
                "disk queue full (%d events): dropped the %d oldest undelivered events",
                self.max_events,
                dropped,
            )
            self._count_dropped(dropped)
        self._publish_depth()
        return seq

    def _trim(self) -> int:
        """Delete the oldest rows beyond ``max_events`` (inside the caller's transaction); how many."""
        excess = self._depth + 1 - self.max_events
        if excess <= 0:
            return 0
        cursor = self._db.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?)", (excess,)
        )
        return int(cursor.rowcount)

    def read_after(self, seq: int, limit: int) -> list[QueuedEvent]:
        """Up to ``limit`` events with seq greater than ``seq``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload, created FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [QueuedEvent(int(s), str(t), str(p), float(c)) for s, t, p, c in rows]

    def ack(self, seq: int) -> bool:
        """Remove a delivered event; False if it was already gone (e.g. dropped by overflow)."""
        with self._lock:
            try:
                with self._db:
                    removed = self._db.execute("DELETE FROM events WHERE seq = ?", (seq,)).rowcount
            except sqlite3.Error as error:
                # Left in place it is sent again after a restart: a duplicate, never a loss.
                logger.error("disk queue %s cannot remove delivered event %d (%s)", self.path, seq, error)
                return False
            self._depth -= removed
        self._publish_depth()
        return bool(removed)

    def delivered(self, event: QueuedEvent) -> None:
        """The output confirmed ``event``: remove it, count it and record its delivery latency."""
        self.ack(event.seq)
        if self._metrics is not None:
            self._metrics.events_delivered.labels(output=self.output).inc()
            self._metrics.delivery_latency.labels(output=self.output).observe(
                max(0.0, time.time() - event.created)
            )

    def refused(self, event: QueuedEvent, reason: str) -> None:
        """The receiver refused ``event`` for good (retrying cannot help): remove, log, count the loss."""
        self.ack(event.seq)
        logger.error(
            "%s refused event seq %d on %s (%s); dropped", self.output, event.seq, event.topic, reason
        )
        self._count_dropped(1)

    def depth(self) -> int:
        """Number of undelivered events."""
        return self._depth

    def close(self) -> None:
        """Close the database; undelivered events stay on disk for the next run."""
        with self._lock:
            self._db.close()

    def _publish_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.labels(output=self.output).set(self._depth)

    def _count_dropped(self, count: int) -> None:
        if self._metrics is not None:
            self._metrics.queue_dropped.labels(output=self.output).inc(count)


def _connect(path: Path) -> sqlite3.Connection:
    """A connection in WAL mode with synchronous=FULL: a committed put survives SIGKILL and power loss."""
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(_SCHEMA)
        db.execute("SELECT COUNT(*) FROM events").fetchone()
    except sqlite3.DatabaseError:
        db.close()
        raise
    # isolation_level=None is autocommit; ``with db`` still wraps multi-statement puts in one transaction.
    db.isolation_level = ""
    return db


def open_output_queue(config: QueueConfig, output: str, device_id: str, metrics: AgentMetrics) -> DiskQueue:
    """The queue file of one output, ``<queue.dir>/<node>.<output>.sqlite3``; OutputSetupError if unusable."""
    directory = Path(config.dir).expanduser()
    path = directory / f"{node_id(device_id)}.{output}.sqlite3"
    _adopt_legacy_mqtt_queue(directory, device_id, output, path)
    try:
        return DiskQueue(path, config.max_events, metrics, output)
    except (OSError, ValueError) as error:
        raise OutputSetupError(f"queue.dir: cannot use {path}: {error}") from None


def _adopt_legacy_mqtt_queue(directory: Path, device_id: str, output: str, path: Path) -> None:
    """MQTT's queue file was ``<node>.sqlite3`` before the queue served every output: keep its events."""
    legacy = directory / f"{node_id(device_id)}.sqlite3"
    if output != "mqtt" or path.exists() or not legacy.exists():
        return
    for suffix in ("", "-wal", "-shm"):
        source = legacy.with_name(legacy.name + suffix)
        if source.exists():
            source.rename(path.with_name(path.name + suffix))
    logger.info("disk queue %s adopted as %s", legacy, path)
