"""The MQTT output in a process of its own, so that a test can SIGKILL it like a crashed agent.

Run as ``python publisher_process.py URL QUEUE_DIR DEVICE_ID LABELS`` (LABELS comma-separated). It reports a
healthy agent status, prints ``connected`` once the broker accepted it, then reads standard input: a JSON
event per line is published (``delivered`` once the broker acknowledged it), a level summary
(``earshot.level/1``) is published as the retained level state (``stated``); ``close`` closes and exits.
It announces a calibrated (dBA) sound-level sensor.
Tests drive it through ``PublisherProcess``.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from prometheus_client import CollectorRegistry

from edge_agent.config import MqttConfig, QueueConfig
from edge_agent.metrics import AgentMetrics
from edge_agent.publishers.mqtt import make_mqtt_publisher

MODEL = {"name": "tiny", "version": "1", "sha256": "0" * 64}


def wait(predicate, timeout: float = 10.0) -> None:  # noqa: ANN001
    """Poll until predicate() holds; exit 3 (the test sees it) when it never does."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            sys.exit(3)
        time.sleep(0.01)


def main(url: str, queue_dir: str, device_id: str, labels: str) -> None:
    """Connect, then publish what standard input says."""
    metrics = AgentMetrics(CollectorRegistry())
    config = MqttConfig(url=url, reconnect_min_s=0.1, reconnect_max_s=0.5, keepalive_s=5)
    publisher = make_mqtt_publisher(
        config, QueueConfig(dir=queue_dir), device_id, labels.split(","), MODEL, metrics, level_unit="dBA"
    )
    publisher.publish_state(
        "agent", {"healthy": True, "reason": "ok", "audio_stalled": False, "model": MODEL}
    )
    publisher.start()
    wait(lambda: metrics.registry.get_sample_value("earshot_mqtt_connected") == 1)
    print("connected", flush=True)
    for line in sys.stdin:
        if line.strip() == "close":
            publisher.close(5)
            return
        message = json.loads(line)
        if message.get("schema") == "earshot.level/1":
            publisher.publish_state("level", message)
            print("stated", flush=True)
            continue
        publisher.publish_event(message, 0)
        wait(lambda: publisher.queue.depth() == 0)
        print("delivered", flush=True)


class PublisherProcess:
    """This file run as a process of its own, connected to ``broker_url``."""

    def __init__(
        self, broker_url: str, queue_dir: str, labels: tuple[str, ...], device_id: str = "test-device"
    ) -> None:
        command = [sys.executable, __file__, broker_url, queue_dir, device_id, ",".join(labels)]
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.expect("connected")

    def expect(self, line: str) -> None:
        """The next line it prints is ``line``."""
        assert self.process.stdout is not None and self.process.stdout.readline().strip() == line

    def publish(self, event: dict) -> None:
        """Publish one event and wait until the broker acknowledged it."""
        self._send(json.dumps(event))
        self.expect("delivered")

    def publish_level(self, summary: dict) -> None:
        """Publish one per-minute level summary as the retained level state."""
        self._send(json.dumps(summary))
        self.expect("stated")

    def close(self) -> None:
        """A clean stop: it says offline and exits."""
        self._send("close")
        self.process.wait(timeout=10)

    def kill(self) -> None:
        """A crash: the broker's Last Will says offline."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def _send(self, line: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(line + "\n")
        self.process.stdin.flush()


if __name__ == "__main__":
    main(*sys.argv[1:5])
