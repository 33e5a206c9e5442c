"""The on-disk event queue of the network outputs: order, bounds, durability across SIGKILL, disk full,
corruption, delivery accounting per output, and one file per output under queue.dir."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from collections import deque
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from edge_agent.config import QueueConfig
from edge_agent.metrics import AgentMetrics
from edge_agent.publishers.disk_queue import DiskQueue, open_output_queue

REPO = Path(__file__).resolve().parents[1]
MQTT, WEBHOOK = {"output": "mqtt"}, {"output": "webhook"}


def _payloads(queue: DiskQueue) -> list[str]:
    return [event.payload for event in queue.read_after(0, 1_000_000)]


def test_fifo_ack_and_depth_gauge(tmp_path: Path) -> None:
    metrics = AgentMetrics(CollectorRegistry())
    queue = DiskQueue(tmp_path / "q.sqlite3", 100, metrics)
    seqs = [queue.put("t/a", f"e{i}") for i in range(5)]
    assert seqs == sorted(seqs) and None not in seqs
    assert _payloads(queue) == [f"e{i}" for i in range(5)]
    assert [e.payload for e in queue.read_after(seqs[1], 2)] == ["e2", "e3"]
    assert queue.ack(seqs[0]) and not queue.ack(seqs[0])
    assert queue.depth() == 4 and metrics.registry.get_sample_value("earshot_queue_depth", MQTT) == 4
    queue.close()


def test_overflow_drops_the_oldest_and_counts_it(tmp_path: Path) -> None:
    metrics = AgentMetrics(CollectorRegistry())
    queue = DiskQueue(tmp_path / "q.sqlite3", 3, metrics)
    for i in range(7):
        queue.put("t", str(i))
    assert _payloads(queue) == ["4", "5", "6"]
    assert metrics.registry.get_sample_value("earshot_queue_dropped_total", MQTT) == 4
    assert metrics.registry.get_sample_value("earshot_queue_depth", MQTT) == 3
    queue.close()


def test_survives_reopen_and_keeps_order_and_seq_growing(tmp_path: Path) -> None:
    queue = DiskQueue(tmp_path / "q.sqlite3", 100)
    first = [queue.put("t", str(i)) for i in range(3)]
    queue.ack(first[2])  # the newest row is gone; its seq must not be reused, or order would break
    queue.close()
    reopened = DiskQueue(tmp_path / "q.sqlite3", 100)
    later = reopened.put("t", "3")
    assert later is not None and later > max(s for s in first if s is not None)
    assert _payloads(reopened) == ["0", "1", "3"]
    reopened.close()


def test_every_committed_put_survives_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    writer = textwrap.dedent(f"""
        import sys
        from edge_agent.publishers.disk_queue import DiskQueue
        queue = DiskQueue({str(path)!r}, 100000)
        i = 0
        while True:
            queue.put("t", str(i))
            print(i, flush=True)
            i += 1
    """)
    process = subprocess.Popen([sys.executable, "-c", writer], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    confirmed = [process.stdout.readline() for _ in range(50)]
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    queue = DiskQueue(path, 100000)
    stored = _payloads(queue)
    # Everything the writer confirmed is there, in order; at most the in-flight put beyond it.
    assert stored[:50] == [line.strip() for line in confirmed]
    assert stored == [str(i) for i in range(len(stored))]
    queue.close()


def test_disk_full_drops_the_new_event_counted_and_the_queue_keeps_working(tmp_path: Path) -> None:
    # A real ENOSPC-like failure: the kernel refuses writes past RLIMIT_FSIZE (EFBIG) in a child process.
    script = textwrap.dedent(f"""
        import resource, signal
        from prometheus_client import CollectorRegistry
        from edge_agent.publishers.disk_queue import DiskQueue
        from edge_agent.metrics import AgentMetrics
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        metrics = AgentMetrics(CollectorRegistry())
        queue = DiskQueue({str(tmp_path / "q.sqlite3")!r}, 100000, metrics)
        resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
        results = [queue.put("t", "x" * 2000) for _ in range(200)]
        stored = sum(r is not None for r in results)
        dropped = metrics.registry.get_sample_value("earshot_queue_dropped_total", {{"output": "mqtt"}})
        print(stored, queue.depth(), int(dropped))
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    stored, depth, dropped = map(int, result.stdout.split())
    assert 0 < stored < 200 and depth == stored and dropped == 200 - stored
    assert "cannot store it" in result.stderr


def test_corrupt_file_is_moved_aside(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    path.write_bytes(b"this is not a database" * 100)
    queue = DiskQueue(path, 10)
    assert queue.depth() == 0 and queue.put("t", "ok") is not None
    assert len(list(tmp_path.glob("q.sqlite3.corrupt-*"))) == 1
    queue.close()


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.one_of(st.just("put"), st.integers(min_value=0, max_value=5)), max_size=40),
    st.integers(min_value=1, max_value=6),
)
def test_behaves_like_a_bounded_deque(tmp_path_factory, operations: list, capacity: int) -> None:
    """Random puts and acks (by position) agree with an in-memory model of the queue."""
    queue = DiskQueue(tmp_path_factory.mktemp("q") / "q.sqlite3", capacity)
    model: deque[tuple[int, str]] = deque(maxlen=capacity)
    for n, operation in enumerate(operations):
        if operation == "put":
            seq = queue.put("t", str(n))
            assert seq is not None
            model.append((seq, str(n)))
        elif operation < len(model):
            seq, _ = model[operation]
            del model[operation]
            assert queue.ack(seq)
    assert [(e.seq, e.payload) for e in queue.read_after(0, 100)] == list(model)
    assert queue.depth() == len(model)
    queue.close()


def test_delivered_and_refused_are_counted_for_their_own_output(tmp_path: Path) -> None:
    metrics = AgentMetrics(CollectorRegistry())
    webhook = DiskQueue(tmp_path / "webhook.sqlite3", 10, metrics, output="webhook")
    for i in range(3):
        webhook.put("siren/start", f"e{i}", created=0.0)
    first, second, third = webhook.read_after(0, 3)
    webhook.delivered(first)
    webhook.refused(second, "HTTP 400 Bad Request")
    sample = metrics.registry.get_sample_value
    assert _payloads(webhook) == ["e2"] and webhook.depth() == 1
    assert sample("earshot_events_delivered_total", WEBHOOK) == 1
    assert sample("earshot_delivery_latency_seconds_count", WEBHOOK) == 1
    assert sample("earshot_delivery_latency_seconds_sum", WEBHOOK) > 1e9  # created at the epoch
    assert sample("earshot_queue_dropped_total", WEBHOOK) == 1  # a refusal is a loss, never silent
    assert sample("earshot_queue_depth", WEBHOOK) == 1
    assert sample("earshot_queue_depth", MQTT) is None  # the MQTT output's series are its own
    webhook.close()


def test_each_output_has_its_own_file_under_queue_dir(tmp_path: Path) -> None:
    metrics, config = AgentMetrics(CollectorRegistry()), QueueConfig(dir=str(tmp_path / "q"), max_events=7)
    mqtt = open_output_queue(config, "mqtt", "pole 1", metrics)
    webhook = open_output_queue(config, "webhook", "pole 1", metrics)
    assert mqtt.path == tmp_path / "q" / "earshot_pole_1.mqtt.sqlite3" and mqtt.max_events == 7
    assert webhook.path == tmp_path / "q" / "earshot_pole_1.webhook.sqlite3" and webhook.output == "webhook"
    mqtt.put("t", "for the broker")
    assert _payloads(webhook) == [] and metrics.registry.get_sample_value("earshot_queue_depth", MQTT) == 1
    mqtt.close()
    webhook.close()


def test_the_mqtt_output_adopts_a_queue_file_from_before_the_queue_section(tmp_path: Path) -> None:
    """Events left in ``<node>.sqlite3`` (the MQTT queue before [queue]) are delivered, not forgotten."""
    legacy = DiskQueue(tmp_path / "earshot_pole.sqlite3", 100)
    for i in range(3):
        legacy.put("earshot/pole/event/siren", f"old{i}")
    legacy.close()
    config = QueueConfig(dir=str(tmp_path))
    webhook = open_output_queue(config, "webhook", "pole", AgentMetrics(CollectorRegistry()))
    assert webhook.depth() == 0  # not the webhook's events
    mqtt = open_output_queue(config, "mqtt", "pole", AgentMetrics(CollectorRegistry()))
    assert _payloads(mqtt) == ["old0", "old1", "old2"]
    assert not (tmp_path / "earshot_pole.sqlite3").exists()
    mqtt.close()
    webhook.close()
