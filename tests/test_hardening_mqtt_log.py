"""MQTT connection trouble is said (issue 11, items 18 and 20): a refused CONNACK, a broker that closes
before its CONNACK, an unreachable broker, a TLS failure and a session takeover by another client with the
same id are each a WARNING with the reason, once rather than on every retry."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import support.mosquitto as broker_support
from support.mosquitto import Mosquitto
from support.tls import make_test_pki, openssl_binary

from edge_agent.config import MqttConfig, QueueConfig
from edge_agent.metrics import AgentMetrics
from edge_agent.publishers.mqtt import MqttPublisher, make_mqtt_publisher

mosquitto_broker = broker_support.mosquitto_broker


def publisher(url: str, tmp_path: Path, device_id: str = "pole-1", **mqtt: object) -> MqttPublisher:
    """An MQTT output with fast retries (0.1 s doubling to 0.4 s)."""
    config = MqttConfig(
        url=url, discovery=False, reconnect_min_s=0.1, reconnect_max_s=0.4, keepalive_s=5, **mqtt
    )  # type: ignore[arg-type]
    return make_mqtt_publisher(
        config,
        QueueConfig(dir=str(tmp_path / "queue" / device_id)),
        device_id,
        ("siren",),
        {"name": "m", "version": "1", "sha256": "0" * 64},
        AgentMetrics(),
    )


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    """WARNING and above from the MQTT output."""
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("edge_agent.publishers.mqtt") and r.levelno >= logging.WARNING
    ]


@pytest.fixture()
def closing_server() -> Iterator[int]:
    """Accepts TCP connections and closes them at once: a broker that never sends a CONNACK."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except OSError:
                continue
            connection.recv(4096)
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    server.close()


def run_for(output: MqttPublisher, seconds: float) -> None:
    """Start, let it retry for ``seconds``, close."""
    output.start()
    time.sleep(seconds)
    output.close(timeout=0.5)


def test_no_connack_is_a_warning_with_the_reason_once_not_every_retry(
    closing_server: int, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    run_for(publisher(f"mqtt://127.0.0.1:{closing_server}", tmp_path), 2.5)
    warned = warnings_of(caplog)
    assert len(warned) == 1, warned
    assert "closed the connection before accepting it" in warned[0], warned
    assert f"127.0.0.1:{closing_server}" in warned[0], warned


def test_an_unreachable_broker_is_one_warning_with_the_reason(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    port = broker_support.free_port()  # nothing listens
    run_for(publisher(f"mqtt://127.0.0.1:{port}", tmp_path), 1.5)
    warned = warnings_of(caplog)
    assert len(warned) == 1 and "refused" in warned[0].lower(), warned


def test_an_untrusted_broker_certificate_is_one_warning_naming_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if broker_support.mosquitto_binary() is None or openssl_binary() is None:
        pytest.skip("needs mosquitto and openssl")
    pki = make_test_pki(tmp_path / "pki")
    broker = Mosquitto(tmp_path / "tls", extra_conf=f"certfile {pki.server_cert}\nkeyfile {pki.server_key}")
    broker.start()
    caplog.set_level(logging.DEBUG)
    try:  # no mqtt.tls_ca: the system's CAs do not know the test CA
        run_for(publisher(f"mqtts://127.0.0.1:{broker.port}", tmp_path), 2.0)
    finally:
        broker.stop()
    warned = warnings_of(caplog)
    assert len(warned) == 1 and "over TLS" in warned[0] and "CERTIFICATE_VERIFY_FAILED" in warned[0], warned


def test_a_refused_connect_is_one_warning_not_an_error_per_retry(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if broker_support.mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    broker = Mosquitto(tmp_path / "auth", extra_conf="allow_anonymous false")
    broker.start()
    caplog.set_level(logging.DEBUG)
    try:
        run_for(publisher(broker.url, tmp_path), 2.0)
    finally:
        broker.stop()
    loud = [r for r in caplog.records if r.name.startswith("edge_agent") and r.levelno >= logging.WARNING]
    assert len(loud) == 1 and loud[0].levelno == logging.WARNING, [r.getMessage() for r in loud]
    assert "refused" in loud[0].getMessage() and "authori" in loud[0].getMessage().lower()


def test_two_agents_with_one_client_id_are_told_why_they_keep_dropping(
    mosquitto_broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    first = publisher(mosquitto_broker.url, tmp_path / "a", device_id="pole-1")
    second = publisher(mosquitto_broker.url, tmp_path / "b", device_id="pole-1")
    first.start()
    second.start()
    time.sleep(4.0)
    first.close(timeout=0.5)
    second.close(timeout=0.5)
    takeover = [m for m in warnings_of(caplog) if "another" in m and "earshot-pole-1" in m]
    assert takeover, warnings_of(caplog)
    assert len(warnings_of(caplog)) <= 4, warnings_of(caplog)  # rate-limited, not one per kick
