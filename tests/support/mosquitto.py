"""A real mosquitto broker for tests (free loopback port, persistence on, stop/restart on the same port)
and a paho subscriber that records what a QoS 1 consumer with a persistent session receives."""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from edge_agent.detector import Detection
from edge_agent.events import ModelRef, make_event


def mosquitto_binary() -> str | None:
    """Path of the mosquitto daemon (Debian puts it in /usr/sbin, often off a user's PATH)."""
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if os.access(p, os.X_OK)), None
    )


def free_port() -> int:
    """A currently free TCP port on 127.0.0.1."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    """Block until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=0.5).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout} s") from None
            time.sleep(0.02)


class Mosquitto:
    """One mosquitto process configured in ``directory``; ``extra_conf`` adds lines (TLS, auth...)."""

    def __init__(
        self, directory: Path, port: int | None = None, extra_conf: str = "", listener: str | None = None
    ) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise FileNotFoundError("mosquitto is not installed: apt-get install mosquitto mosquitto-clients")
        self.binary = binary
        self.directory = Path(directory)
        self.port = port or free_port()
        self.url = f"mqtt://127.0.0.1:{self.port}"
        self.log_path = self.directory / "mosquitto.log"
        self.conf_path = self.directory / "mosquitto.conf"
        self.process: subprocess.Popen[bytes] | None = None
        (self.directory / "data").mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(
            "\n".join(
                [
                    listener or f"listener {self.port} 127.0.0.1",
                    "allow_anonymous true" if "allow_anonymous" not in extra_conf else "",
                    # Started as root, mosquitto would drop to user "mosquitto" and not write its files here.
                    f"user {getpass.getuser()}",
                    "persistence true",
                    f"persistence_location {self.directory / 'data'}/",
                    # Save after every change, so even a SIGKILLed broker keeps queued QoS 1 messages.
                    "autosave_interval 1",
                    "autosave_on_changes true",
                    "max_queued_messages 100000",
                    f"log_dest file {self.log_path}",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "log_type information",
                    "connection_messages true",
                    extra_conf,
                ]
            )
            + "\n"
        )

    def start(self, timeout: float = 10.0) -> None:
        """Start the broker and wait until it accepts connections."""
        self.process = subprocess.Popen(
            [self.binary, "-c", str(self.conf_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for_port(self.port, timeout)
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"mosquitto did not start; log:\n{self.log()}") from None

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop it (SIGTERM saves its persistence file; SIGKILL simulates a crash)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def restart(self, downtime: float = 0.0) -> None:
        """Stop, stay down ``downtime`` seconds, start again on the same port."""
        self.stop()
        time.sleep(downtime)
        self.start()

    def log(self) -> str:
        """The broker's log so far (for assertion messages)."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@pytest.fixture()
def mosquitto_broker(tmp_path: Path) -> Iterator[Mosquitto]:
    """A started broker in tmp_path; skipped when mosquitto is not installed."""
    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto mosquitto-clients)")
    broker = Mosquitto(tmp_path / "mosquitto")
    broker.start()
    yield broker
    broker.stop()


@dataclass(frozen=True)
class Received:
    """One message as the subscriber saw it."""

    topic: str
    payload: bytes
    retain: bool
    at: float  # time.time() on arrival
    dup: bool = False  # the broker's redelivery flag (QoS 1 resend after a lost acknowledgement)


class Subscriber:
    """A paho QoS 1 subscriber with a persistent session (clean_session False), recording every message."""

    def __init__(
        self,
        port: int,
        topics: str | list[str],
        client_id: str = "earshot-test-subscriber",
        host: str = "127.0.0.1",
    ) -> None:
        self.messages: list[Received] = []
        self._condition = threading.Condition()
        self._topics = [topics] if isinstance(topics, str) else topics
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_: self.subscribed.set()
        self.subscribed = threading.Event()
        self.client.reconnect_delay_set(0.1, 0.5)
        self.client.connect_async(host, port, keepalive=10)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise TimeoutError(f"subscriber could not subscribe on 127.0.0.1:{port}")

    def _on_connect(
        self, client: mqtt.Client, userdata: object, flags: object, reason_code: object, properties: object
    ) -> None:
        client.subscribe([(topic, 1) for topic in self._topics])

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._condition:
            self.messages.append(
                Received(message.topic, message.payload, bool(message.retain), time.time(), bool(message.dup))
            )
            self._condition.notify_all()

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout: float = 10.0) -> list[Received]:
        """Wait until predicate(messages) holds; AssertionError with what arrived otherwise."""
        with self._condition:
            if not self._condition.wait_for(lambda: predicate(self.messages), timeout):
                seen = [(m.topic, m.payload[:80]) for m in self.messages]
                raise AssertionError(f"timed out after {timeout} s; received {seen}")
            return list(self.messages)

    def on(self, topic_suffix: str) -> list[Received]:
        """Messages so far whose topic ends with topic_suffix."""
        with self._condition:
            return [m for m in self.messages if m.topic.endswith(topic_suffix)]

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


def contract_event(
    label: str = "siren", kind: str = "start", score: float = 0.9, n: int = 0, device_id: str = "test-device"
) -> dict:
    """A real event from the agent's own builder (earshot.event/1); ``n`` makes started_at distinct."""
    detection = Detection(
        label=label,
        kind=kind,
        score=score,
        started_at=float(n),
        ended_at=float(n) + 2.0 if kind == "end" else None,
        top_k=((label, score), ("dog_bark", round(1.0 - score, 6))),
    )
    return make_event(detection, device_id, ModelRef("tiny", "1", "0" * 64), clock_origin=1_767_225_600.0)
