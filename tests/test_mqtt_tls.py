"""The agent's MQTT publisher against a real mosquitto running deploy/mosquitto's example config:
TLS with a test CA made by openssl, password logins, the ACL, and client certificates."""

from __future__ import annotations

import getpass
import json
import logging
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import paho.mqtt.client as mqtt
import pytest
from prometheus_client import CollectorRegistry
from support.mosquitto import Mosquitto, contract_event, free_port, mosquitto_binary, wait_for_port
from support.tls import Pki, make_test_pki, openssl_binary

from edge_agent.config import MqttConfig, QueueConfig
from edge_agent.metrics import AgentMetrics
from edge_agent.publishers.mqtt import MqttPublisher, make_mqtt_publisher

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "deploy" / "mosquitto"
SCHEMA = json.loads((REPO / "edge_agent/schemas/event.schema.json").read_text())
DEVICE = "lamp-7"  # also its broker login: the ACL's %u
SECRET = "tls-S3cret-never-logged"
CONSUMER_SECRET = "ha-S3cret"
MODEL = {"name": "tiny", "version": "1", "sha256": "0" * 64}

pytestmark = pytest.mark.skipif(
    mosquitto_binary() is None or shutil.which("mosquitto_passwd") is None or openssl_binary() is None,
    reason="needs mosquitto and openssl: apt-get install mosquitto mosquitto-clients openssl",
)


@dataclass
class Broker:
    """A running broker configured from the example, with its TLS and plain (loopback) ports."""

    mosquitto: Mosquitto
    pki: Pki
    tls_port: int
    plain_port: int


def render_example(
    directory: Path, pki: Pki, tls_port: int, plain_port: int, require_cert: bool, log_path: Path
) -> str:
    """deploy/mosquitto/mosquitto.conf with the test's ports, files and logging; nothing else changes."""
    passwd, acl = directory / "earshot.passwd", directory / "earshot.acl"
    shutil.copy(EXAMPLE / "acl", acl)
    for user, secret in ((DEVICE, SECRET), ("homeassistant", CONSUMER_SECRET)):
        create = [] if passwd.exists() else ["-c"]
        subprocess.run(
            ["mosquitto_passwd", "-b", *create, str(passwd), user, secret],
            check=True,
            capture_output=True,
            timeout=30,
        )
    passwd.chmod(0o600)
    replacements = {
        "/etc/mosquitto/earshot.passwd": str(passwd),
        "/etc/mosquitto/earshot.acl": str(acl),
        "/etc/mosquitto/certs/ca.crt": str(pki.ca_cert),
        "/etc/mosquitto/certs/server.crt": str(pki.server_cert),
        "/etc/mosquitto/certs/server.key": str(pki.server_key),
        "listener 1883 127.0.0.1": f"listener {plain_port} 127.0.0.1",
        "listener 8883\n": f"listener {tls_port} 127.0.0.1\n",
        "require_certificate false": f"require_certificate {'true' if require_cert else 'false'}",
    }
    text = (EXAMPLE / "mosquitto.conf").read_text()
    for old, new in replacements.items():
        assert old in text, f"the example no longer contains {old!r}"
        text = text.replace(old, new)
    # Run as the test's user (root would drop to 'mosquitto' and lose access to tmp_path), log to a file.
    lines = [
        f"user {getpass.getuser()}",
        f"log_dest file {log_path}",
        "log_type all",
        "connection_messages true",
    ]
    return text + "\n" + "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """One test CA, server and client certificate for the module (openssl is the slow part)."""
    return make_test_pki(tmp_path_factory.mktemp("pki"), client_name=DEVICE)


def start_broker(directory: Path, pki: Pki, require_cert: bool = False) -> Broker:
    """Start mosquitto with the rendered example config."""
    tls_port, plain_port = free_port(), free_port()
    broker = Mosquitto(directory, port=tls_port)
    broker.conf_path.write_text(
        render_example(directory, pki, tls_port, plain_port, require_cert, broker.log_path)
    )
    broker.start()
    wait_for_port(plain_port)
    return Broker(broker, pki, tls_port, plain_port)


@pytest.fixture()
def broker(tmp_path: Path, pki: Pki) -> Iterator[Broker]:
    """The example config: TLS + passwords + ACL, no client certificate required."""
    running = start_broker(tmp_path / "broker", pki)
    yield running
    running.mosquitto.stop()


class Consumer:
    """Home Assistant's side: logs in on the loopback listener and records what it may read."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.ready = threading.Event()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-homeassistant")
        self.client.username_pw_set("homeassistant", CONSUMER_SECRET)
        self.client.on_connect = lambda c, *_: c.subscribe([("earshot/#", 1), ("homeassistant/#", 1)])
        self.client.on_subscribe = lambda *_: self.ready.set()
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        assert self.ready.wait(10), "consumer could not subscribe"

    def topics(self) -> list[str]:
        """Topics received so far."""
        return [topic for topic, _ in list(self.messages)]

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def wait_until(predicate, timeout: float = 10.0) -> bool:  # noqa: ANN001
    """Poll predicate until true or timeout; returns its last value."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def publisher(broker: Broker, tmp_path: Path, **overrides: object) -> MqttPublisher:
    """The agent's MQTT output for ``broker``'s TLS port, built exactly as the agent builds it."""
    values: dict[str, object] = {
        "url": f"mqtts://127.0.0.1:{broker.tls_port}",
        "username": DEVICE,
        "password": SECRET,
        "tls_ca": str(broker.pki.ca_cert),
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "keepalive_s": 5,
        **overrides,
    }
    config = MqttConfig(**values)  # type: ignore[arg-type]
    queue = QueueConfig(dir=str(tmp_path / "queue"))
    return make_mqtt_publisher(
        config, queue, DEVICE, ["siren", "gun_shot"], MODEL, AgentMetrics(CollectorRegistry())
    )


def sample(pub: MqttPublisher, name: str, labels: dict[str, str] | None = None) -> float | None:
    """A metric value from the publisher's registry."""
    return pub.metrics.registry.get_sample_value(name, labels)


def test_publisher_connects_with_tls_and_password_and_the_event_arrives(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    consumer = Consumer(broker.plain_port)
    pub = publisher(broker, tmp_path)
    try:
        pub.start()
        pub.publish_event(contract_event(device_id=DEVICE), 0)
        assert wait_until(lambda: f"earshot/{DEVICE}/event/siren" in consumer.topics()), consumer.topics()
        assert sample(pub, "earshot_mqtt_connected") == 1
        assert wait_until(lambda: sample(pub, "earshot_events_delivered_total", {"output": "mqtt"}) == 1)
        # The ACL lets the sensor write its own discovery configs and state as well.
        assert wait_until(
            lambda: any(
                t.startswith("homeassistant/binary_sensor/earshot_lamp-7/") for t in consumer.topics()
            )
        ), consumer.topics()
        assert (f"earshot/{DEVICE}/availability", b"online") in consumer.messages
    finally:
        pub.close(2)
        consumer.close()
    event = json.loads(dict(consumer.messages)[f"earshot/{DEVICE}/event/siren"])
    jsonschema.validate(event, SCHEMA)
    assert event["device_id"] == DEVICE and event["kind"] == "start"
    assert "tls on" in caplog.text and "MQTT: connected to 127.0.0.1" in caplog.text
    assert SECRET not in caplog.text and SECRET not in broker.mosquitto.log()
    assert f"u'{DEVICE}'" in broker.mosquitto.log()  # mosquitto saw the login over the TLS listener


def test_acl_keeps_a_sensor_inside_its_own_topics(broker: Broker) -> None:
    consumer = Consumer(broker.plain_port)
    rogue = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="test-rogue")
    rogue.username_pw_set(DEVICE, SECRET)
    rogue.tls_set(ca_certs=str(broker.pki.ca_cert))
    try:
        rogue.connect("127.0.0.1", broker.tls_port, keepalive=10)
        rogue.loop_start()
        # Publishes are ordered on one connection: once the allowed one arrives, the others had their chance.
        for topic in (
            "earshot/other-device/event/siren",
            "homeassistant/sensor/earshot_other/x/config",
            f"earshot/{DEVICE}/event/siren",
        ):
            rogue.publish(topic, b"{}", qos=1).wait_for_publish(5)
        assert wait_until(lambda: f"earshot/{DEVICE}/event/siren" in consumer.topics())
        assert consumer.topics() == [f"earshot/{DEVICE}/event/siren"]
    finally:
        rogue.disconnect()
        rogue.loop_stop()
        consumer.close()


def test_wrong_password_is_refused_with_a_clear_log_line_and_no_secret(
    broker: Broker, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-Pa55word-also-secret"
    pub = publisher(broker, tmp_path, password=wrong)
    try:
        pub.start()
        assert wait_until(lambda: any("refused" in r.getMessage() for r in caplog.records)), caplog.text
        refused = next(r for r in caplog.records if "refused" in r.getMessage())
        assert refused.levelno == logging.WARNING  # retried, and said once (issue 11, item 18)
        assert refused.getMessage() == "MQTT: broker refused the connection: Not authorized (retrying)"
        assert sample(pub, "earshot_mqtt_connected") == 0
    finally:
        pub.close(0.5)
    for text in (caplog.text, broker.mosquitto.log()):
        assert wrong not in text and SECRET not in text


def test_client_certificate_is_required_when_the_broker_demands_it(
    tmp_path: Path, pki: Pki, caplog: pytest.LogCaptureFixture
) -> None:
    running = start_broker(tmp_path / "mtls", pki, require_cert=True)
    consumer = Consumer(running.plain_port)
    without = publisher(running, tmp_path / "without")
    with_cert = publisher(
        running, tmp_path / "with", tls_cert=str(pki.client_cert), tls_key=str(pki.client_key)
    )
    try:
        without.start()
        with_cert.start()
        with_cert.publish_event(contract_event(device_id=DEVICE), 0)
        assert wait_until(lambda: f"earshot/{DEVICE}/event/siren" in consumer.topics()), consumer.topics()
        assert sample(with_cert, "earshot_mqtt_connected") == 1
        # The certificate-less client had the same time and several reconnect attempts, and never got in.
        assert sample(without, "earshot_mqtt_connected") == 0
        assert "certificate" in running.mosquitto.log().lower() or "ssl" in running.mosquitto.log().lower()
    finally:
        without.close(0.5)
        with_cert.close(2)
        consumer.close()
        running.mosquitto.stop()
    assert SECRET not in caplog.text
    assert "BEGIN" not in caplog.text  # no key material in the logs either
