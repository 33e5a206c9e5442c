"""The offline queue never loses or strands events on a hostile host (issue 11, items 9-14).

Queue files left by another user (a ``sudo`` run with umask 077), read-only files, names too long,
real corruption, a full disk, and two agents on one file: each either works, or stops the agent at start
with one line and leaves the files untouched; only a really corrupt file is moved aside, and what it held
is counted as dropped.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from support.mosquitto import free_port
from support.onnx_models import noise, siren_sweep, to_s16le, write_audio, write_card
from support.tmpfs import mounted_tmpfs
from support.unprivileged import agent_as_nobody, drop_reason, nobody, world_readable_dir

from edge_agent.config import MqttConfig, QueueConfig, WebhookConfig
from edge_agent.metrics import AgentMetrics
from edge_agent.publishers.base import OutputSetupError
from edge_agent.publishers.disk_queue import DiskQueue, open_output_queue
from edge_agent.publishers.mqtt import make_mqtt_publisher
from edge_agent.publishers.webhook import PostResult, WebhookPublisher

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "hardening"
QUEUE_FILE = f"earshot_{DEVICE}.mqtt.sqlite3"
EVENTS = 40
DROPPED = "earshot_queue_dropped_total"

needs_drop = pytest.mark.skipif(drop_reason() is not None, reason=str(drop_reason()))


# --- helpers -------------------------------------------------------------------------------------


@pytest.fixture()
def site(siren_model: Path) -> Iterator[Path]:
    """A directory ``nobody`` can enter, with the model, a short recording and a queue dir owned by nobody."""
    with world_readable_dir() as base:
        shutil.copy(siren_model, base / "siren.onnx")
        write_card(base / "siren.onnx")
        write_audio(base / "quiet.wav", noise(2.0, amplitude=0.02))
        queue = base / "queue"
        queue.mkdir()
        if os.geteuid() == 0:
            os.chown(queue, *nobody())  # the user's own state dir, as on the sensor
        yield base


def agent_argv(site: Path) -> list[str]:
    """``earshot agent`` on the short recording, with MQTT pointed at a port where nothing listens."""
    return [
        "--source",
        str(site / "quiet.wav"),
        "--fast",
        "--mqtt",
        f"mqtt://127.0.0.1:{free_port()}",
        "--model",
        str(site / "siren.onnx"),
    ]


def agent_env(site: Path) -> dict[str, str]:
    """The queue dir and device id of every agent in these tests."""
    return {"EARSHOT_QUEUE_DIR": str(site / "queue"), "EARSHOT_DEVICE_ID": DEVICE}


def leave_queue_as_root(queue_dir: Path, ending: str, events: int = EVENTS) -> None:
    """A root run with umask 077 queues ``events`` (broker down) and then ends by ``kill`` or ``close``."""
    script = textwrap.dedent(f"""
        import os, signal
        os.umask(0o077)
        from prometheus_client import CollectorRegistry
        from edge_agent.config import QueueConfig
        from edge_agent.metrics import AgentMetrics
        from edge_agent.publishers.disk_queue import open_output_queue
        queue = open_output_queue(QueueConfig(dir={str(queue_dir)!r}), "mqtt", {DEVICE!r},
                                  AgentMetrics(CollectorRegistry()))
        for n in range({events}):
            assert queue.put("earshot/{DEVICE}/event", '{{"n": %d}}' % n) is not None
        if {ending!r} == "kill":
            os.kill(os.getpid(), signal.SIGKILL)
        queue.close()
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    expected = -signal.SIGKILL if ending == "kill" else 0
    assert done.returncode == expected, done.stderr


def snapshot(directory: Path) -> dict[str, tuple[str, int, int]]:
    """Every file in ``directory``: sha256, owner and mode, to prove the agent left them untouched."""
    return {
        path.name: (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_uid, path.stat().st_mode)
        for path in sorted(directory.iterdir())
    }


def queued_payloads(queue_dir: Path) -> list[str]:
    """The events a root agent would find in the MQTT queue file (opened as root, after the checks)."""
    metrics = AgentMetrics(CollectorRegistry())
    queue = open_output_queue(QueueConfig(dir=str(queue_dir)), "mqtt", DEVICE, metrics)
    try:
        return [event.payload for event in queue.read_after(0, 1_000_000)]
    finally:
        queue.close()


def assert_one_line_refusal(result: subprocess.CompletedProcess[str], *reasons: str) -> str:
    """Exit 2, no traceback, nothing called corrupt; the last stderr line names queue.dir and a reason."""
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert "corrupt" not in result.stderr.lower() and "unreadable" not in result.stderr, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("earshot agent: queue.dir: "), result.stderr
    assert any(reason in line.lower() for reason in reasons), line
    return line


def dropped(metrics: AgentMetrics, output: str = "mqtt") -> float:
    """earshot_queue_dropped_total{output}."""
    return metrics.registry.get_sample_value(DROPPED, {"output": output}) or 0.0


# --- items 9, 10, 11: another user's files, read-only, name too long, a missing dir ----------------


@needs_drop
def test_foreign_0600_queue_left_by_sigkill_is_refused_in_one_line_and_left_intact(site: Path) -> None:
    """Item 9: root's SIGKILLed queue (db + -wal + -shm, 0600) is not moved aside; nothing is deleted."""
    queue_dir = site / "queue"
    leave_queue_as_root(queue_dir, "kill")
    before = snapshot(queue_dir)
    assert f"{QUEUE_FILE}-wal" in before  # the undelivered events live in root's WAL
    for _restart in range(2):  # the same on every restart under Restart=always
        result = agent_as_nobody(agent_argv(site), agent_env(site))
        assert_one_line_refusal(result, "permission denied")
        assert snapshot(queue_dir) == before
    assert queued_payloads(queue_dir) == [f'{{"n": {n}}}' for n in range(EVENTS)]


@needs_drop
def test_foreign_0600_queue_left_by_a_clean_stop_is_refused_not_stranded(site: Path) -> None:
    """Item 10: after root's clean stop only the 0600 db remains; it is not stranded in ``.corrupt-*``."""
    queue_dir = site / "queue"
    leave_queue_as_root(queue_dir, "close")
    before = snapshot(queue_dir)
    result = agent_as_nobody(agent_argv(site), agent_env(site))
    line = assert_one_line_refusal(result, "permission denied")
    assert QUEUE_FILE in line
    assert snapshot(queue_dir) == before and not list(queue_dir.glob("*.corrupt-*"))
    assert len(queued_payloads(queue_dir)) == EVENTS


@needs_drop
@pytest.mark.parametrize("case", ["read-only file", "read-only dir"])
def test_read_only_queue_refuses_to_start_with_the_file_untouched(site: Path, case: str) -> None:
    """Items 11 and 13: a queue nobody can write is one line and exit 2 at start, not dropped events."""
    queue_dir = site / "queue"
    leave_queue_as_root(queue_dir, "close")
    os.chmod(queue_dir / QUEUE_FILE, 0o644)  # readable by the agent's user, writable only by root
    if case == "read-only dir":
        os.chown(queue_dir, 0, 0)  # the agent may not create its -wal, -shm or lock files either
    before = snapshot(queue_dir)
    result = agent_as_nobody(agent_argv(site), agent_env(site))
    assert_one_line_refusal(result, "read-only", "permission denied")
    assert snapshot(queue_dir) == before


@pytest.mark.parametrize("length", [240, 232], ids=["db name too long", "wal name too long"])
def test_name_too_long_is_a_setup_error_not_corruption(
    tmp_path: Path, length: int, caplog: pytest.LogCaptureFixture
) -> None:
    """Item 11: a device id that makes a file name too long is named as such, nothing moved aside."""
    # earshot_<id>.mqtt.sqlite3 is 21 + len(id) bytes and most file systems allow 255: 240 makes the
    # database's own name too long, 232 only its -wal's.
    device = "d" * length
    metrics = AgentMetrics(CollectorRegistry())
    with caplog.at_level(logging.INFO), pytest.raises(OutputSetupError) as raised:
        open_output_queue(QueueConfig(dir=str(tmp_path)), "mqtt", device, metrics)
    assert str(raised.value).startswith("queue.dir: ") and "name too long" in str(raised.value).lower()
    assert not [r for r in caplog.records if "corrupt" in r.getMessage() or "unreadable" in r.getMessage()]
    assert not list(tmp_path.glob("*.corrupt-*"))


def test_a_queue_dir_that_cannot_be_created_is_a_setup_error(tmp_path: Path) -> None:
    """Item 11: queue.dir under a regular file is one line naming queue.dir and the reason."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputSetupError, match=r"^queue\.dir: .*Not a directory"):
        open_output_queue(
            QueueConfig(dir=str(tmp_path / "file" / "queue")),
            "mqtt",
            DEVICE,
            AgentMetrics(CollectorRegistry()),
        )


def corrupt_page(path: Path, page: int) -> None:
    """Overwrite the b-tree header of one page with garbage (a real malformed database)."""
    with path.open("r+b") as file:
        file.seek(4096 * (page - 1))
        file.write(b"\x7f" * 64)


@pytest.mark.parametrize("damage", ["not a database", "malformed"])
def test_only_a_really_corrupt_queue_is_moved_aside_and_its_events_counted(
    tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Item 10/11: corruption moves db, -wal and -shm aside together, loudly, counting what was lost."""
    path = tmp_path / "q.sqlite3"
    queue = DiskQueue(path, 10_000)
    for n in range(300):
        queue.put("t", f"{n:0200d}")  # several leaf pages
    queue.close()
    if damage == "not a database":
        path.write_bytes(b"this is not a database" * 200)
    else:
        corrupt_page(path, 4)
    metrics = AgentMetrics(CollectorRegistry())
    with caplog.at_level(logging.ERROR):
        fresh = DiskQueue(path, 10, metrics)
    assert fresh.depth() == 0 and fresh.put("t", "ok") is not None
    fresh.close()
    aside = sorted(p.name for p in tmp_path.glob("q.sqlite3.corrupt-*"))
    assert len(aside) == 1 and not aside[0].endswith(("-wal", "-shm")), aside
    loud = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("corrupt" in message and aside[0] in message for message in loud), loud
    if damage == "malformed":
        assert dropped(metrics) > 0  # what could be counted is counted as lost


# --- item 12: a full disk -------------------------------------------------------------------------


@pytest.fixture()
def small_disk() -> Iterator[Path]:
    """A real 4 MiB file system (tmpfs) that fills up; skipped where this host cannot mount one."""
    with world_readable_dir() as base, mounted_tmpfs(base, "4m"):
        yield base


def fill_queue(queue: DiskQueue) -> tuple[int, int]:
    """Put events until the disk is full and ten more puts fail; (stored, failed)."""
    stored = failed = 0
    while failed < 10:
        if queue.put("earshot/x/event", "x" * 400) is None:
            failed += 1
        else:
            stored += 1
        assert stored < 100_000, "the disk never filled"
    return stored, failed


def test_full_disk_recovers_when_the_broker_returns_without_a_restart(
    small_disk: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Item 12: a queue that filled the disk deletes what is delivered, then stores new events again."""
    metrics = AgentMetrics(CollectorRegistry())
    queue = DiskQueue(small_disk / "q.sqlite3", 1_000_000, metrics)
    with caplog.at_level(logging.CRITICAL):
        stored, failed = fill_queue(queue)
    assert stored > 100 and queue.depth() == stored and dropped(metrics) == failed
    for event in queue.read_after(0, stored):  # the broker is back: every event is acknowledged
        queue.delivered(event)
    assert queue.depth() == 0 and queue.read_after(0, 10) == []
    assert all(queue.put("earshot/x/event", "new") is not None for _ in range(50))
    assert queue.depth() == 50 and dropped(metrics) == failed
    queue.close()
    assert len(DiskQueue(small_disk / "q.sqlite3", 1_000_000).read_after(0, 1000)) == 50  # on disk


def test_full_disk_never_resends_a_delivered_event_and_recovers_when_space_returns(small_disk: Path) -> None:
    """Item 12: a delivery whose delete fails is not posted again; deletes happen once space returns."""
    metrics = AgentMetrics(CollectorRegistry())
    queue = DiskQueue(small_disk / "q.sqlite3", 1_000, metrics, "webhook")
    for n in range(5):
        queue.put("siren/start", f'{{"event_id": "e{n}"}}')
    for reserve in small_disk.glob("*.reserve"):
        reserve.unlink()  # as if the queue's own reserve were already spent
    filler = small_disk / "filler"
    with filler.open("wb", buffering=0) as file:  # then something else (logs) fills the disk
        while True:
            try:
                file.write(b"\0" * 65536)
            except OSError:
                break
    posts: list[bytes] = []
    webhook = WebhookPublisher(
        WebhookConfig(url="http://127.0.0.1:9/hook"),
        queue,
        metrics,
        post=lambda body, headers: posts.append(body) or PostResult(200, "OK"),
    )
    webhook.start()
    deadline = time.monotonic() + 10
    while len(posts) < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # long enough for any resend of an event whose delete failed
    assert [p.decode() for p in posts] == [f'{{"event_id": "e{n}"}}' for n in range(5)]
    assert queue.depth() == 0
    filler.unlink()  # space returns: the next write also removes the delivered rows from the file
    webhook.publish_event({"label": "siren", "kind": "start", "event_id": "e5"}, 0)
    deadline = time.monotonic() + 10
    while len(posts) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    webhook.close(timeout=2)
    assert len(posts) == 6 and dropped(metrics, "webhook") == 0
    assert DiskQueue(small_disk / "q.sqlite3", 1_000).read_after(0, 100) == []


# --- item 13: the queue's state in /healthz --------------------------------------------------------


def make_read_only(queue: DiskQueue) -> None:
    """Writes fail as on a file the process may not write ("attempt to write a readonly database")."""
    queue._db.execute("PRAGMA query_only = 1")


def test_mqtt_and_webhook_health_report_a_queue_that_cannot_store_events(tmp_path: Path) -> None:
    """Item 13: a failed put makes the output unhealthy (so /healthz is 503); a good put clears it."""
    metrics = AgentMetrics(CollectorRegistry())
    mqtt = make_mqtt_publisher(
        MqttConfig(url=f"mqtt://127.0.0.1:{free_port()}"),
        QueueConfig(dir=str(tmp_path)),
        DEVICE,
        ["siren"],
        {},
        metrics,
    )
    webhook = WebhookPublisher(
        WebhookConfig(url="http://127.0.0.1:9/hook"),
        open_output_queue(QueueConfig(dir=str(tmp_path)), "webhook", DEVICE, metrics),
        metrics,
        post=lambda body, headers: PostResult(0, "down"),
    )
    event = {"label": "siren", "kind": "start", "event_id": "e1"}
    for output in (mqtt, webhook):
        assert output.health() == (True, "ok")
        make_read_only(output.queue)
        output.publish_event(event, 0)
        healthy, reason = output.health()
        assert not healthy and "readonly" in reason and "queue" in reason, reason
        output.queue._db.execute("PRAGMA query_only = 0")
        output.publish_event(event, 0)
        assert output.health() == (True, "ok")
        output.queue.close()
    assert dropped(metrics, "mqtt") == 1 and dropped(metrics, "webhook") == 1


# --- item 14: one agent per queue file -------------------------------------------------------------


def test_a_second_agent_on_the_same_queue_fails_at_start_naming_the_first(site: Path) -> None:
    """Item 14: the queue file is locked for the agent's life; a second agent is one line and exit 2."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **agent_env(site)}
    log = (site / "first.log").open("w")
    first = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "agent",
            "--source",
            "-",
            "--stdin-rate",
            "16000",
            "--mqtt",
            f"mqtt://127.0.0.1:{free_port()}",
            "--model",
            str(site / "siren.onnx"),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=log,
        cwd=ROOT,
        env=env,
    )
    try:
        assert first.stdin is not None
        first.stdin.write(to_s16le(siren_sweep(0.5)))  # a live source: stdin stays open
        first.stdin.flush()
        deadline = time.monotonic() + 60
        while "outputs" not in (site / "first.log").read_text() and time.monotonic() < deadline:
            assert first.poll() is None, (site / "first.log").read_text()
            time.sleep(0.1)
        second = subprocess.run(
            [sys.executable, "-m", "edge_agent.cli", "agent", *agent_argv(site)],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert second.returncode == 2, second.stderr
        line = second.stderr.strip().splitlines()[-1]
        assert line.startswith("earshot agent: queue.dir: ") and f"pid {first.pid}" in line, line
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=30)
        log.close()
    assert first.returncode == 0, (site / "first.log").read_text()
