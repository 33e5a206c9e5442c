"""A bounded, fsync'd on-disk FIFO of outgoing events (sqlite3), so no event is lost to an outage.

Every output that delivers over a network (MQTT, webhook) has one, in its own file under ``queue.dir``.
sqlite3 because it is in the standard library and survives SIGKILL and power loss with WAL + fsync, and
a queue on the sensor does not depend on the broker's or the endpoint's own persistence.
An event enters with ``put`` and leaves only with ``delivered``/``refused`` (after the broker's PUBACK or
the endpoint's answer). Across a crash or
SIGKILL the file keeps every unacknowledged event, and ``read_after(0, n)`` returns them in order.

Defined edge behaviour:
- full (``max_events``): the oldest events are deleted to make room; each is counted and logged;
- files this process cannot write (another user's, read-only, a name too long, a directory it cannot
  create): OutputSetupError at open naming ``queue.dir`` and the reason, every file left as it was;
- a really corrupt file (SQLITE_CORRUPT, SQLITE_NOTADB or a failing ``PRAGMA quick_check``): moved aside
  with its -wal and -shm (``*.corrupt-<unix time>``) and a new one started, logged at ERROR, the events
  that can still be counted in it counted as dropped;
- one agent per file: ``<file>.lock`` holds an exclusive flock (and the holder's pid) while it is open;
- disk full: a put that cannot be stored returns None, counted as dropped and logged, and ``health()``
  is unhealthy until a put succeeds. Each queue keeps a ``<file>.reserve`` of RESERVE_BYTES that puts never
  use: when the disk fills, it is given back so the WAL can be landed in the database and truncated, and
  delivered events deleted, without a restart. A delivered event whose delete still fails is never handed
  out again and is deleted by the next write that succeeds (after a restart it is sent again: a duplicate,
  never a loss).
"""

from __future__ import annotations

import fcntl
import io
import logging
import os
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from edge_agent.config import QueueConfig
from edge_agent.metrics import AgentMetrics
from edge_agent.publishers.base import OutputSetupError
from edge_agent.publishers.ha_discovery import node_id

logger = logging.getLogger(__name__)

_T = TypeVar("_T")

_SCHEMA = """CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    payload TEXT NOT NULL,
    created REAL NOT NULL
)"""
_SCHEMA_VERSION = 1  # written at every open: the probe that the files are writable, not just readable

# Primary sqlite result codes (the extended code's low byte).
_SQLITE_CORRUPT, _SQLITE_FULL, _SQLITE_NOTADB = 11, 13, 26

RESERVE_BYTES = 1 << 20
# Landing the WAL grows the database by at most the pages written since the last checkpoint; checkpointing
# every 128 pages (512 KiB at sqlite's default page size) keeps that within the reserve.
_CHECKPOINT_PAGES = 128
_PUT_PAGES = 4  # at most this many new pages for one put (a leaf split and its parents)
_KEPT_FOR_DELETES = "the disk is full; the last space is kept for deleting delivered events"
_SIDE_FILES = ("-wal", "-shm", ".lock", ".reserve")
_ASIDE_SUFFIX = ".corrupt-0000000000-wal"  # the longest name a queue file's siblings can take


class _CorruptQueue(sqlite3.DatabaseError):
    """``PRAGMA quick_check`` found damage that opening the file did not."""


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
        self._store_problem: str | None = None  # why the last put failed, until one succeeds
        self._delete_problem: str | None = None  # why the last delete failed, until one succeeds
        self._undeleted: set[int] = set()  # delivered, but the delete failed: never handed out again
        _check_files(self.path)
        self._lock_file = _hold_lock(self.path)
        try:
            self._db = self._open()
        except BaseException:
            self._lock_file.close()
            raise
        self._reserve = _Reserve(_side(self.path, ".reserve"))
        self._reserve.restore()
        self._depth = int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        self._publish_depth()
        if self._depth:
            logger.info(
                "disk queue %s holds %d undelivered events from a previous run", self.path, self._depth
            )

    def _open(self) -> sqlite3.Connection:
        """Open (or create) the database; only a corrupt one is moved aside, any other error refused."""
        try:
            return _connect(self.path)
        except sqlite3.Error as error:
            if not _is_corrupt(error):
                raise _unusable(self.path, _describe(error)) from None
            self._set_aside(error)
        try:
            return _connect(self.path)
        except sqlite3.Error as error:
            raise _unusable(self.path, _describe(error)) from None

    def _set_aside(self, error: sqlite3.Error) -> None:
        """Move a corrupt file, with its -wal and -shm, aside; count what it still held as lost, loudly."""
        lost = _countable_events(self.path)
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            source = _side(self.path, suffix)
            if not os.path.lexists(source):
                continue
            try:
                source.rename(_side(aside, suffix))
            except OSError as move_error:
                reason = f"corrupt ({error}) and cannot be moved aside: {move_error}"
                raise _unusable(self.path, reason) from None
        held = "an unknown number of" if lost is None else f"at least {lost}"
        logger.error(
            "disk queue %s is corrupt (%s): moved to %s and started empty; %s undelivered %s events in it "
            "are lost",
            self.path,
            error,
            aside,
            held,
            self.output,
        )
        self._count_dropped(lost or 0)

    def put(self, topic: str, payload: str, created: float | None = None) -> int | None:
        """Store one event durably and return its seq; None (counted, logged) if it could not be stored."""
        created = time.time() if created is None else created
        with self._lock:
            try:
                if not self._room_for_put():
                    raise sqlite3.OperationalError(_KEPT_FOR_DELETES)
                seq, flushed, trimmed = self._write(lambda: self._insert(topic, payload, created), True)
            except sqlite3.Error as error:
                self._cannot_store(topic, str(error))
                return None
            self._depth += 1 - flushed - trimmed
            self._undeleted.clear()
            self._store_problem = self._delete_problem = None
        if trimmed:
            logger.warning(
                "disk queue full (%d events): dropped the %d oldest undelivered events",
                self.max_events,
                trimmed,
            )
            self._count_dropped(trimmed)
        self._publish_depth()
        return seq

    def _insert(self, topic: str, payload: str, created: float) -> tuple[int, int, int]:
        """One transaction: delete rows pending deletion, add the event, trim; (seq, flushed, trimmed)."""
        flushed = self._delete_rows(self._undeleted)
        cursor = self._db.execute(
            "INSERT INTO events (topic, payload, created) VALUES (?, ?, ?)", (topic, payload, created)
        )
        return int(cursor.lastrowid or 0), flushed, self._trim(self._depth - flushed + 1)

    def _cannot_store(self, topic: str, reason: str) -> None:
        """A put failed: log it, count the event as dropped, report unhealthy until a put succeeds."""
        logger.error(
            "%s event on %s dropped: disk queue %s cannot store it (%s)",
            self.output,
            topic,
            self.path,
            reason,
        )
        self._store_problem = f"queue cannot store events ({reason})"
        self._count_dropped(1)

    def _trim(self, rows: int) -> int:
        """Delete the oldest of ``rows`` beyond ``max_events`` (inside the caller's transaction); how many."""
        excess = rows - self.max_events
        if excess <= 0:
            return 0
        cursor = self._db.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?)", (excess,)
        )
        return int(cursor.rowcount)

    def _delete_rows(self, seqs: Iterable[int]) -> int:
        """Delete these rows (inside the caller's transaction); how many existed."""
        cursor = self._db.executemany("DELETE FROM events WHERE seq = ?", [(seq,) for seq in seqs])
        return max(0, int(cursor.rowcount))

    def read_after(self, seq: int, limit: int) -> list[QueuedEvent]:
        """Up to ``limit`` events with seq greater than ``seq``, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, topic, payload, created FROM events WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit + len(self._undeleted)),
            ).fetchall()
            events = [QueuedEvent(int(s), str(t), str(p), float(c)) for s, t, p, c in rows]
            return [event for event in events if event.seq not in self._undeleted][:limit]

    def ack(self, seq: int) -> bool:
        """Remove a delivered event; False if it was already gone (e.g. dropped by overflow)."""
        with self._lock:
            if seq in self._undeleted:
                return False
            try:
                flushed, removed = self._write(lambda: self._delete_with_pending(seq))
            except sqlite3.Error as error:
                removed = self._defer_delete(seq, error)
            else:
                self._depth -= flushed + removed
                self._undeleted.clear()
                self._delete_problem = None
                self._reserve.restore()
        self._publish_depth()
        return bool(removed)

    def _delete_with_pending(self, seq: int) -> tuple[int, int]:
        """Delete rows still pending deletion and ``seq`` (inside the caller's transaction); both counts."""
        return self._delete_rows(self._undeleted), self._delete_rows([seq])

    def _defer_delete(self, seq: int, error: sqlite3.Error) -> int:
        """The delete failed: keep the event from being handed out again; delete it with the next write."""
        exists = self._db.execute("SELECT 1 FROM events WHERE seq = ?", (seq,)).fetchone() is not None
        if exists:
            self._undeleted.add(seq)
        if self._delete_problem is None:
            # Once per episode, not once per event: a full disk fails every delete of a long drain.
            logger.error(
                "disk queue %s cannot delete delivered events (%s); they are not sent again, and are deleted "
                "once a write succeeds (after a restart they are sent again: duplicates, never losses)",
                self.path,
                error,
            )
        self._delete_problem = f"queue cannot delete delivered events ({error})"
        return int(exists)

    def _write(self, work: Callable[[], _T], for_put: bool = False) -> _T:
        """``work`` in one transaction; on a full disk make room (``_make_room``) and try again."""
        for attempt in range(3):
            try:
                return self._transaction(work)
            except sqlite3.Error as error:
                if _primary_code(error) != _SQLITE_FULL or not self._make_room(attempt, for_put):
                    raise
        raise AssertionError("unreachable: the third attempt returns or raises")

    def _make_room(self, attempt: int, for_put: bool) -> bool:
        """After "disk full": land the WAL so its file is reused; then, for deletes only, spend the reserve.

        False: give up. A put is retried only while the reserve is held: puts never use its space.
        """
        if attempt == 0:
            self._land_wal()
            return not for_put or self._room_for_put()
        if attempt == 1 and not for_put and self._reserve.release():
            self._say_reserve_spent()
            return True
        return False

    def _transaction(self, work: Callable[[], _T]) -> _T:
        """Run ``work`` and commit, or roll back and raise."""
        try:
            with self._db:
                return work()
        except sqlite3.Error:
            if self._db.in_transaction:
                self._db.rollback()
            raise

    def _land_wal(self) -> None:
        """Copy the WAL into the database so the next write starts the WAL file over, with no new space.

        The database grows by the new pages in the WAL; with the disk full, the reserve pays for that.
        """
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            return
        except sqlite3.Error as error:
            if _primary_code(error) != _SQLITE_FULL or not self._reserve.release():
                raise
        self._say_reserve_spent()
        self._db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def _say_reserve_spent(self) -> None:
        """Warn that the disk is full and the reserve was given back."""
        logger.warning(
            "disk queue %s: the disk is full; gave back its %d KiB reserve so delivered events can still be "
            "deleted. Free some space: new events may be dropped until there is room for it again",
            self.path,
            RESERVE_BYTES // 1024,
        )

    def _room_for_put(self) -> bool:
        """Whether a put may write: the reserve is held (or taken back), or the put can reuse free pages.

        Without the reserve, a put that grew the database would leave landing the WAL, and so every
        delete, waiting for space that nothing frees.
        """
        if self._reserve.restore():
            return True
        free_pages = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
        return free_pages >= _PUT_PAGES

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
        return self._depth - len(self._undeleted)

    def health(self) -> tuple[bool, str]:
        """For the output's ``health``: False with the reason while puts or deletes fail."""
        problem = self._store_problem or self._delete_problem
        return problem is None, problem or "ok"

    def close(self) -> None:
        """Close the database and release the file; undelivered events stay on disk for the next run."""
        with self._lock:
            if self._lock_file.closed:
                return
            self._db.close()
            self._lock_file.close()  # releases the flock: another agent may now open this file

    def _publish_depth(self) -> None:
        if self._metrics is not None:
            self._metrics.queue_depth.labels(output=self.output).set(self.depth())

    def _count_dropped(self, count: int) -> None:
        if self._metrics is not None:
            self._metrics.queue_dropped.labels(output=self.output).inc(count)


class _Reserve:
    """RESERVE_BYTES of disk kept beside the queue, given back when the disk fills (see the module doc)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._warned = False  # a file system that refuses it keeps refusing: say so once

    def held(self) -> bool:
        """The reserve file is there at full size."""
        return _size(self.path) >= RESERVE_BYTES

    def room(self) -> bool:
        """The file system has room for the reserve."""
        try:
            stats = os.statvfs(self.path.parent)
        except OSError:
            return False
        return stats.f_bavail * stats.f_frsize >= RESERVE_BYTES

    def release(self) -> bool:
        """Delete the reserve to free its space; False when there was none to give."""
        held = self.held()
        try:
            self.path.unlink()
        except OSError:
            return False
        return held

    def restore(self) -> bool:
        """Allocate the reserve if it is missing and there is room; True when it is held."""
        if self.held():
            return True
        if not self.room():
            return False
        try:
            descriptor = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(descriptor, 0, RESERVE_BYTES)
            finally:
                os.close(descriptor)
        except OSError as error:
            self.path.unlink(missing_ok=True)  # a partial reserve would only take space
            if not self._warned:
                logger.warning("disk queue: cannot set aside %s (%s)", self.path, error)
            self._warned = True
            return False
        self._warned = False
        return True


def _connect(path: Path) -> sqlite3.Connection:
    """A checked connection in WAL mode, synchronous=FULL: a committed put survives SIGKILL and power loss.

    Raises sqlite3.Error when the file is corrupt (``_is_corrupt``) or cannot be written.
    """
    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute(f"PRAGMA wal_autocheckpoint={_CHECKPOINT_PAGES}")
        check = db.execute("PRAGMA quick_check(1)").fetchone()[0]
        if check != "ok":
            raise _CorruptQueue(f"quick_check: {check}")
        db.execute(_SCHEMA)
        db.execute("SELECT COUNT(*) FROM events").fetchone()
        _probe_write(db)
    except sqlite3.Error:
        db.close()
        raise
    # isolation_level=None was autocommit for the set-up; now ``with db`` wraps each put in one transaction.
    db.isolation_level = "DEFERRED"
    return db


def _probe_write(db: sqlite3.Connection) -> None:
    """A committed write at open, so a file this process may only read is refused at start, not per event.

    A full disk is not refused: it can clear at any time, and meanwhile puts are counted as dropped.
    """
    try:
        db.execute(f"PRAGMA user_version={_SCHEMA_VERSION}")
    except sqlite3.Error as error:
        if _primary_code(error) != _SQLITE_FULL:
            raise
        logger.warning(
            "disk queue: the disk is full at start (%s); new events are dropped until it has room", error
        )


def _primary_code(error: sqlite3.Error) -> int | None:
    """sqlite's primary result code of ``error`` (None when it carries none)."""
    code = getattr(error, "sqlite_errorcode", None)
    return None if code is None else int(code) & 0xFF


def _is_corrupt(error: sqlite3.Error) -> bool:
    """The file itself is damaged (not merely unreadable or unwritable by this process)."""
    return isinstance(error, _CorruptQueue) or _primary_code(error) in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def _describe(error: sqlite3.Error) -> str:
    """``error`` with sqlite's name for it: ``attempt to write a readonly database (SQLITE_READONLY)``."""
    name = getattr(error, "sqlite_errorname", None)
    return f"{error} ({name})" if name else str(error)


def _countable_events(path: Path) -> int | None:
    """How many events a corrupt file still shows (a lower bound); None when none can be read."""
    try:
        db = sqlite3.connect(path)
    except sqlite3.Error:
        return None
    try:
        try:
            return int(db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        except sqlite3.Error:
            pass  # count the rows readable from either end, up to the damage
        forward, complete = _readable_rows(db, "ASC")
        backward = 0 if complete else _readable_rows(db, "DESC")[0]
        return (forward + backward) or None
    finally:
        db.close()


def _readable_rows(db: sqlite3.Connection, order: str) -> tuple[int, bool]:
    """Rows read in ``order`` of seq before an error; and whether the scan reached the end."""
    count = 0
    try:
        for _row in db.execute(f"SELECT seq FROM events ORDER BY seq {order}"):
            count += 1
    except sqlite3.Error:
        return count, False
    return count, True


def _check_files(path: Path) -> None:
    """Create the directory, and check that this process can write every queue file; nothing is changed."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _unusable(path, str(error)) from None
    problem = _name_problem(path) or _access_problem(path)
    if problem is not None:
        raise _unusable(path, problem)


def _name_problem(path: Path) -> str | None:
    """Why the file's name (or a sibling's, such as ``.corrupt-<time>``) is too long for the file system."""
    try:
        limit = os.pathconf(path.parent, "PC_NAME_MAX")
    except (OSError, ValueError):
        limit = 255
    longest = len(os.fsencode(path.name + _ASIDE_SUFFIX))
    if longest <= limit:
        return None
    return (
        f"file name too long: its side files need up to {longest} bytes per name and this file system "
        f"allows {limit}; use a shorter device_id"
    )


def _access_problem(path: Path) -> str | None:
    """Why this process cannot write the directory or an existing queue file (None when it can)."""
    directory = path.parent
    if not os.access(directory, os.W_OK | os.X_OK):
        return f"{directory}: {_denial(directory)} ({_ownership(directory)})"
    for candidate in [path, *(_side(path, suffix) for suffix in _SIDE_FILES)]:
        try:
            os.close(os.open(candidate, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC))
        except FileNotFoundError:
            continue
        except OSError as error:
            return f"{candidate.name}: {error.strerror} ({_ownership(candidate)})"
    return None


def _denial(directory: Path) -> str:
    """Why ``access(W_OK)`` failed: a read-only file system, or the permissions."""
    try:
        read_only = bool(os.statvfs(directory).f_flag & os.ST_RDONLY)
    except OSError:
        read_only = False
    return "Read-only file system" if read_only else "Permission denied"


def _ownership(path: Path) -> str:
    """Owner and mode of ``path`` and who we are: what an operator needs to fix a permission error."""
    try:
        info = path.stat()
    except OSError:
        return f"this agent runs as uid {os.geteuid()}"
    mode = stat.S_IMODE(info.st_mode)
    return f"owner uid {info.st_uid}, mode {mode:04o}; this agent runs as uid {os.geteuid()}"


def _hold_lock(path: Path) -> io.FileIO:
    """An exclusive flock on ``<file>.lock`` until closed, with our pid in it for whoever finds it taken.

    A file object, not a bare descriptor: a queue dropped without ``close`` still releases it when collected.
    """
    lock_path = _side(path, ".lock")
    try:
        lock = io.FileIO(os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644), "r+")
    except OSError as error:
        raise _unusable(path, f"{lock_path.name}: {error.strerror}") from None
    try:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(lock.fileno(), 32, 0).decode("ascii", "replace").strip() or "unknown"
        lock.close()
        reason = (
            f"in use by another earshot agent (pid {holder}); give each agent its own queue.dir or device_id"
        )
        raise _unusable(path, reason) from None
    lock.truncate(0)
    os.pwrite(lock.fileno(), f"{os.getpid()}\n".encode("ascii"), 0)
    return lock


def _unusable(path: Path, reason: str) -> OutputSetupError:
    """The one-line setup error for a queue file this agent cannot use."""
    return OutputSetupError(f"queue.dir: cannot use {path}: {reason}")


def _side(path: Path, suffix: str) -> Path:
    """A file beside the queue: ``<file>-wal``, ``<file>.lock`` and so on."""
    return path.with_name(path.name + suffix)


def _size(path: Path) -> int:
    """A file's size in bytes, 0 when it is missing."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def open_output_queue(config: QueueConfig, output: str, device_id: str, metrics: AgentMetrics) -> DiskQueue:
    """The queue file of one output, ``<queue.dir>/<node>.<output>.sqlite3``; OutputSetupError if unusable."""
    directory = Path(config.dir).expanduser()
    path = directory / f"{node_id(device_id)}.{output}.sqlite3"
    try:
        _adopt_legacy_mqtt_queue(directory, device_id, output, path)
        return DiskQueue(path, config.max_events, metrics, output)
    except OutputSetupError:
        raise
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
