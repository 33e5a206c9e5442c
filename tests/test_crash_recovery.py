"""Agent crash with the broker down: the real ``earshot agent`` queues events on disk, is SIGKILLed, and
on restart delivers the queue to a real mosquitto in order, exactly once. A full queue drops the oldest
and counts them in earshot_queue_dropped_total{output="mqtt"}."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.mosquitto import Mosquitto, Subscriber, free_port, mosquitto_binary
from support.onnx_models import noise, siren_sweep, to_s16le, write_audio

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "crash-test"
SIRENS = 5  # each gives a start and an end event
DEPTH, DROPPED = 'earshot_queue_depth{output="mqtt"}', 'earshot_queue_dropped_total{output="mqtt"}'

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")


def sirens_s16le(count: int) -> bytes:
    """``count`` 3 s sirens, each followed by 12 s of quiet noise (past end_after and cooldown)."""
    parts = [noise(1.0, amplitude=0.02)]
    for n in range(count):
        siren = siren_sweep(3.0) + noise(3.0, amplitude=0.02, seed=n)
        parts += [siren, noise(12.0, amplitude=0.02, seed=50 + n)]
    return to_s16le(np.concatenate(parts))


class Agent:
    """``earshot agent --source -`` with MQTT and /metrics; stdin stays open until ``stop``/``kill``."""

    def __init__(
        self,
        tmp_path: Path,
        broker_port: int,
        audio: bytes | Path,
        extra_env: dict[str, str] | None = None,
        name: str = "agent",
    ) -> None:
        self.metrics_port = free_port()
        self.log = (tmp_path / f"{name}.log").open("w")
        self.events: list[dict] = []
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "EARSHOT_DEVICE_ID": DEVICE,
            "EARSHOT_QUEUE_DIR": str(tmp_path / "queue"),
            "EARSHOT_MQTT_RECONNECT_MIN_S": "0.1",
            "EARSHOT_MQTT_RECONNECT_MAX_S": "0.5",
            **(extra_env or {}),
        }
        source = str(audio) if isinstance(audio, Path) else "-"
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge_agent.cli",
                "agent",
                "--source",
                source,
                "--mqtt",
                f"mqtt://127.0.0.1:{broker_port}",
                "--metrics-port",
                str(self.metrics_port),
                "--model",
                os.environ["EARSHOT_TEST_MODEL"],
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            cwd=ROOT,
            env=env,
        )
        if isinstance(audio, bytes):
            threading.Thread(target=self._feed, args=(audio,), daemon=True).start()
        threading.Thread(target=self._read_events, daemon=True).start()

    def _feed(self, audio: bytes) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(audio)  # then leave stdin open: a live source that never ends
        self.process.stdin.flush()

    def _read_events(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.events.append(json.loads(line))

    def metric(self, selector: str) -> float | None:
        """One sample from the live /metrics, ``name`` or ``name{label="value",...}`` with exactly those
        labels, as in the exposition; None while it is not serving."""
        name, _, rest = selector.partition("{")
        labels = dict(re.findall(r'(\w+)="([^"]*)"', rest))
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as reply:
                text = reply.read().decode()
        except OSError:
            return None
        return next(
            (
                s.value
                for f in text_string_to_metric_families(text)
                for s in f.samples
                if s.name == name and s.labels == labels
            ),
            None,
        )

    def wait_metric(self, name: str, value: float, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.metric(name) != value:
            assert self.process.poll() is None, "agent exited early"
            assert time.monotonic() < deadline, f"{name} never reached {value} (last {self.metric(name)})"
            time.sleep(0.1)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.log.close()
        return int(self.process.returncode)


@pytest.fixture(autouse=True)
def _model_for_agents(siren_model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EARSHOT_TEST_MODEL", str(siren_model))


@pytest.fixture()
def down_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A broker configured on a fixed port but not started: the agent finds nobody there."""
    broker = Mosquitto(tmp_path / "broker")
    yield broker
    broker.stop()


def kill_with_queue(
    tmp_path: Path, broker: Mosquitto, expect: dict[str, float], env: dict[str, str] | None = None
) -> list[str]:
    """First run: broker down, SIRENS sirens classified and queued until the ``expect`` metrics hold, then
    SIGKILL; the ids of the events it printed, in order."""
    first = Agent(tmp_path, broker.port, sirens_s16le(SIRENS), env, name="first")
    for name, value in expect.items():
        first.wait_metric(name, value)
    deadline = time.monotonic() + 10
    while len(first.events) < 2 * SIRENS and time.monotonic() < deadline:
        time.sleep(0.05)
    assert first.metric("earshot_mqtt_connected") == 0
    first.kill()
    assert [e["kind"] for e in first.events] == ["start", "end"] * SIRENS
    return [e["event_id"] for e in first.events]


def deliver_after_restart(tmp_path: Path, broker: Mosquitto, expected: int) -> list[str]:
    """Broker up, a persistent QoS 1 subscriber, the agent restarted with no new audio; event ids received."""
    broker.start()
    subscriber = Subscriber(broker.port, f"earshot/{DEVICE}/event/#", client_id="crash-test-subscriber")
    # No new audio: a quiet file paced in real time (a stdin source cannot stop cleanly, see below).
    quiet = write_audio(tmp_path / "quiet.wav", noise(60.0, amplitude=0.01))
    second = Agent(tmp_path, broker.port, quiet, name="second")
    try:
        subscriber.wait_for(lambda ms: len(ms) >= expected, timeout=30)
        second.wait_metric(DEPTH, 0)
        time.sleep(1.0)  # a duplicate would arrive now
        received = [json.loads(m.payload)["event_id"] for m in subscriber.messages]
    finally:
        subscriber.close()
    assert second.stop() == 0
    return received


def test_sigkill_with_a_queue_then_restart_delivers_it_in_order_exactly_once(
    tmp_path: Path, down_broker: Mosquitto
) -> None:
    sent = kill_with_queue(tmp_path, down_broker, {DEPTH: 2 * SIRENS})
    received = deliver_after_restart(tmp_path, down_broker, expected=len(sent))
    duplicates = {event_id: n for event_id, n in Counter(received).items() if n > 1}
    print(
        f"\ncrash recovery: queued {len(sent)}, delivered {len(received)}, duplicates {len(duplicates)}, "
        f"lost {len(set(sent) - set(received))}"
    )
    assert received == sent


def test_a_full_queue_drops_the_oldest_and_counts_them(tmp_path: Path, down_broker: Mosquitto) -> None:
    limit = 4
    sent = kill_with_queue(
        tmp_path,
        down_broker,
        {DROPPED: 2 * SIRENS - limit, DEPTH: limit},
        {"EARSHOT_QUEUE_MAX_EVENTS": str(limit)},
    )
    received = deliver_after_restart(tmp_path, down_broker, expected=limit)
    print(
        f"\nqueue limit {limit}: classified {len(sent)}, dropped {len(sent) - limit}, "
        f"delivered {len(received)}"
    )
    assert received == sent[-limit:]  # the newest survive, in order
    log = (tmp_path / "first.log").read_text()
    assert "disk queue full (4 events): dropped the 1 oldest undelivered events" in log


def test_sigterm_stops_a_stdin_agent_cleanly(tmp_path: Path, down_broker: Mosquitto) -> None:
    agent = Agent(tmp_path, down_broker.port, sirens_s16le(1), name="stdin")
    agent.wait_metric(DEPTH, 2)
    code = agent.stop()
    assert code == 0, (tmp_path / "stdin.log").read_text()[-1500:]
