"""The MQTT publisher against a real mosquitto: events, state, LWT, discovery, outages, restarts."""

from __future__ import annotations

import dataclasses
import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jsonschema
import pytest
from prometheus_client import CollectorRegistry
from support import mosquitto as broker_support
from support.mosquitto import Mosquitto, Subscriber, contract_event

from edge_agent.config import AgentConfig, MqttConfig, QueueConfig
from edge_agent.metrics import AgentMetrics
from edge_agent.publishers import OutputSetupError, make_publishers
from edge_agent.publishers.mqtt import MqttPublisher, make_mqtt_publisher

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "edge_agent/schemas/event.schema.json").read_text())
DEVICE = "test-device"
MODEL = {"name": "tiny", "version": "1", "sha256": "0" * 64}
MQTT = {"output": "mqtt"}  # the labels of the MQTT output's delivery metrics
mosquitto_broker = broker_support.mosquitto_broker  # the fixture: a real broker per test


def _config(broker: Mosquitto, tmp_path: Path, **overrides: object) -> MqttConfig:
    """Fast reconnects so outage tests stay short."""
    values = {
        "url": broker.url,
        "reconnect_min_s": 0.1,
        "reconnect_max_s": 0.5,
        "keepalive_s": 5,
        **overrides,
    }
    return MqttConfig(**values)  # type: ignore[arg-type]


def _publisher(
    config: MqttConfig, queue_dir: Path, metrics: AgentMetrics | None = None, max_events: int = 10000
) -> MqttPublisher:
    """The MQTT output as the agent builds it, its disk queue under ``queue_dir``."""
    return make_mqtt_publisher(
        config,
        QueueConfig(dir=str(queue_dir), max_events=max_events),
        DEVICE,
        ["siren", "gun_shot"],
        MODEL,
        metrics or AgentMetrics(CollectorRegistry()),
    )


def _sample(publisher: MqttPublisher, name: str, labels: dict[str, str] | None = None) -> float | None:
    return publisher.metrics.registry.get_sample_value(name, labels)


def _last_siren_state_is_off(messages: list) -> bool:
    return [m.payload for m in messages if m.topic.endswith("state/siren")][-1:] == [b"OFF"]


def _is_event(topic: str) -> bool:
    return topic.startswith("earshot/") and "/event/" in topic  # not homeassistant/event/... configs


def _events(subscriber: Subscriber) -> list[dict]:
    return [json.loads(m.payload) for m in subscriber.on("") if _is_event(m.topic)]


def test_url_none_means_no_mqtt_output(tmp_path: Path) -> None:
    def outputs(url: str) -> list[str]:
        config = AgentConfig(device_id=DEVICE, mqtt=MqttConfig(url=url), queue=QueueConfig(dir=str(queue)))
        return [p.name for p in make_publishers(config, 16000, MODEL, AgentMetrics(CollectorRegistry()))]

    queue = tmp_path / "queue"
    assert outputs("none") == ["stdout"]
    assert not queue.exists()  # no queue file for an output that is off
    assert outputs("mqtt://127.0.0.1:1883") == ["stdout", "mqtt"]
    assert (queue / "earshot_test-device.mqtt.sqlite3").is_file()


def test_events_state_availability_and_discovery(mosquitto_broker: Mosquitto, tmp_path: Path) -> None:
    subscriber = Subscriber(mosquitto_broker.port, ["earshot/#", "homeassistant/#"])
    metrics = AgentMetrics(CollectorRegistry())
    publisher = _publisher(_config(mosquitto_broker, tmp_path), tmp_path / "queue", metrics)
    publisher.start()
    # Connected first: a start and end queued before the connection leave only the newest state (OFF).
    _wait(lambda: metrics.registry.get_sample_value("earshot_mqtt_connected") == 1)
    start, end = contract_event(kind="start"), contract_event(kind="end", score=0.95)
    publisher.publish_event(start, 0)
    publisher.publish_event(end, 16000)
    subscriber.wait_for(lambda ms: sum(_is_event(m.topic) for m in ms) == 2)
    assert _events(subscriber) == [start, end]
    for event in _events(subscriber):
        jsonschema.validate(event, SCHEMA)
    assert [m.topic for m in subscriber.on("/event/siren")] == [f"earshot/{DEVICE}/event/siren"] * 2
    assert subscriber.on("/availability")[0].payload == b"online"
    subscriber.wait_for(_last_siren_state_is_off)
    assert b"ON" in [m.payload for m in subscriber.on("state/siren")]
    configs = {m.topic: json.loads(m.payload) for m in subscriber.on("/config")}
    binary = configs["homeassistant/binary_sensor/earshot_test-device/siren/config"]
    assert binary["state_topic"] == f"earshot/{DEVICE}/state/siren"
    assert binary["availability_topic"] == f"earshot/{DEVICE}/availability"
    assert binary["unique_id"] == "earshot_test-device_siren" and binary["device"]["identifiers"]
    assert "homeassistant/sensor/earshot_test-device/gun_shot_score/config" in configs
    _wait(lambda: metrics.registry.get_sample_value("earshot_events_delivered_total", MQTT) == 2)
    assert metrics.registry.get_sample_value("earshot_mqtt_connected") == 1
    assert metrics.registry.get_sample_value("earshot_queue_depth", MQTT) == 0
    assert metrics.registry.get_sample_value("earshot_delivery_latency_seconds_count", MQTT) == 2
    assert metrics.registry.get_sample_value("earshot_delivery_failures_total", MQTT) == 0
    publisher.close(5)
    subscriber.wait_for(lambda ms: ms[-1].topic.endswith("/availability") and ms[-1].payload == b"offline")
    subscriber.close()


def test_retained_topics_reach_a_late_subscriber_and_discovery_can_be_off(
    mosquitto_broker: Mosquitto, tmp_path: Path
) -> None:
    publisher = _publisher(_config(mosquitto_broker, tmp_path, discovery=False), tmp_path / "queue")
    publisher.start()
    publisher.publish_event(contract_event(kind="start"), 0)
    _wait(lambda: publisher.queue.depth() == 0)
    late = Subscriber(mosquitto_broker.port, ["earshot/#", "homeassistant/#"], client_id="late")
    expected = {f"earshot/{DEVICE}/{topic}" for topic in ("state/siren", "state/gun_shot", "availability")}
    late.wait_for(lambda ms: {m.topic for m in ms} >= expected)
    retained = {m.topic: m.payload for m in late.messages if m.retain}
    assert retained[f"earshot/{DEVICE}/state/siren"] == b"ON"
    assert retained[f"earshot/{DEVICE}/state/gun_shot"] == b"OFF"
    assert retained[f"earshot/{DEVICE}/availability"] == b"online"
    assert not any(topic.startswith("homeassistant/") for topic in retained)
    publisher.close(5)
    late.close()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_broker_restart_mid_stream_loses_nothing_in_order_exactly_once(
    mosquitto_broker: Mosquitto, tmp_path: Path, stop_signal: int
) -> None:
    subscriber = Subscriber(mosquitto_broker.port, "earshot/+/event/#")
    metrics = AgentMetrics(CollectorRegistry())
    publisher = _publisher(_config(mosquitto_broker, tmp_path), tmp_path / "queue", metrics)
    publisher.start()
    sent = []
    for n in range(60):
        if n == 20:
            mosquitto_broker.stop(stop_signal)
        if n == 40:
            mosquitto_broker.start()
        sent.append(contract_event(kind="start" if n % 2 == 0 else "end", n=n))
        publisher.publish_event(sent[-1], n)
        time.sleep(0.03)
    subscriber.wait_for(lambda ms: len(ms) >= len(sent), timeout=15)
    time.sleep(0.5)  # a duplicate would arrive now
    received = [event["event_id"] for event in _events(subscriber)]
    index = {event["event_id"]: n for n, event in enumerate(sent)}
    arrivals = [(index.get(json.loads(m.payload)["event_id"]), m.dup) for m in subscriber.messages]
    # none lost, in order:
    assert list(dict.fromkeys(received)) == [event["event_id"] for event in sent], arrivals
    if stop_signal == signal.SIGTERM:
        assert len(received) == len(sent), arrivals  # exactly once
    # A SIGKILLed broker may die between forwarding a message and recording its acknowledgement; QoS 1
    # then redelivers it (rarely, ~1 run in 50 here), and consumers de-duplicate on event_id.
    assert metrics.registry.get_sample_value("earshot_events_delivered_total", MQTT) == len(sent)
    assert metrics.registry.get_sample_value("earshot_queue_dropped_total", MQTT) == 0
    publisher.close(5)
    subscriber.close()


PUBLISHER_PROCESS = textwrap.dedent("""
    import json, sys, time
    from prometheus_client import CollectorRegistry
    from edge_agent.config import MqttConfig, QueueConfig
    from edge_agent.metrics import AgentMetrics
    from edge_agent.publishers.mqtt import make_mqtt_publisher
    url, queue_dir, events_file = sys.argv[1:4]
    config = MqttConfig(url=url, reconnect_min_s=0.1, reconnect_max_s=0.5, keepalive_s=5)
    publisher = make_mqtt_publisher(config, QueueConfig(dir=queue_dir), "test-device", ["siren"],
                                    {"name": "tiny", "version": "1", "sha256": "0" * 64},
                                    AgentMetrics(CollectorRegistry()))
    publisher.start()
    for n, line in enumerate(open(events_file)):
        publisher.publish_event(json.loads(line), n)
    print("queued", publisher.queue.depth(), flush=True)
    time.sleep(3600)  # until the test kills it
""")


def _spawn_publisher(url: str, tmp_path: Path, events: list[dict]) -> subprocess.Popen[str]:
    """A separate publishing process (so that it can be SIGKILLed); returns once its events are queued."""
    events_file = tmp_path / f"events-{time.monotonic_ns()}.jsonl"
    events_file.write_text("".join(json.dumps(e) + "\n" for e in events))
    process = subprocess.Popen(
        [sys.executable, "-c", PUBLISHER_PROCESS, url, str(tmp_path / "queue"), str(events_file)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline().startswith("queued")
    return process


def _kill(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)


def test_last_will_offline_when_the_publisher_is_sigkilled(
    mosquitto_broker: Mosquitto, tmp_path: Path
) -> None:
    subscriber = Subscriber(mosquitto_broker.port, f"earshot/{DEVICE}/availability")
    process = _spawn_publisher(mosquitto_broker.url, tmp_path, [contract_event()])
    subscriber.wait_for(lambda ms: [m.payload for m in ms][-1:] == [b"online"])
    _kill(process)
    subscriber.wait_for(lambda ms: [m.payload for m in ms][-1:] == [b"offline"], timeout=5)
    subscriber.close()


def test_queue_survives_a_sigkilled_publisher_while_the_broker_is_down(
    mosquitto_broker: Mosquitto, tmp_path: Path
) -> None:
    subscriber = Subscriber(mosquitto_broker.port, "earshot/+/event/#")
    mosquitto_broker.stop()
    first = [contract_event(n=n) for n in range(5)]
    _kill(_spawn_publisher(mosquitto_broker.url, tmp_path, first))
    mosquitto_broker.start()
    second = [contract_event(n=n) for n in range(5, 8)]
    process = _spawn_publisher(mosquitto_broker.url, tmp_path, second)
    try:
        subscriber.wait_for(lambda ms: len(ms) >= 8, timeout=15)
        time.sleep(0.3)
        assert [e["event_id"] for e in _events(subscriber)] == [e["event_id"] for e in first + second]
    finally:
        _kill(process)
        subscriber.close()


def test_missing_tls_file_is_a_one_line_setup_error(tmp_path: Path) -> None:
    config = MqttConfig(url="mqtts://127.0.0.1:8883", tls_ca=str(tmp_path / "missing-ca.pem"))
    with pytest.raises(OutputSetupError, match=r"^mqtt\.tls_ca: cannot load TLS files") as error:
        _publisher(config, tmp_path / "queue")
    assert "\n" not in str(error.value)


def _wait(predicate, timeout: float = 10.0) -> None:  # noqa: ANN001
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def test_username_password_auth_and_the_password_never_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    if broker_support.mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    secret = "s3cret-Pa55-do-not-log"
    passwords = tmp_path / "passwd"
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(passwords), "sensor", secret], check=True, capture_output=True
    )
    passwords.chmod(0o600)
    broker = Mosquitto(
        tmp_path / "auth-broker", extra_conf=f"allow_anonymous false\npassword_file {passwords}\n"
    )
    broker.start()
    caplog.set_level("DEBUG")
    try:
        wrong = _publisher(_config(broker, tmp_path, username="sensor", password="nope"), tmp_path / "wrong")
        wrong.start()
        _wait(lambda: "refused" in caplog.text)
        assert _sample(wrong, "earshot_mqtt_connected") == 0
        wrong.close(0.5)
        good = _publisher(_config(broker, tmp_path, username="sensor", password=secret), tmp_path / "good")
        good.start()
        good.publish_event(contract_event(), 0)
        _wait(lambda: _sample(good, "earshot_events_delivered_total", MQTT) == 1)
        good.close(2)
    finally:
        broker.stop()
    assert "Not authorized" in caplog.text or "not authorised" in caplog.text.lower()
    assert secret not in caplog.text and "nope" not in caplog.text


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def _test_pki(directory: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    directory.mkdir(parents=True)
    files = {
        name: directory / f"{name}.pem"
        for name in ("ca", "ca-key", "server", "server-key", "client", "client-key")
    }
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=earshot test CA",
        "-keyout",
        files["ca-key"],
        "-out",
        files["ca"],
    )
    for name, subject, extension in (
        ("server", "/CN=127.0.0.1", "subjectAltName=IP:127.0.0.1"),
        ("client", "/CN=sensor", "extendedKeyUsage=clientAuth"),
    ):
        request = directory / f"{name}.csr"
        _openssl(
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            subject,
            "-keyout",
            files[f"{name}-key"],
            "-out",
            request,
        )
        extfile = directory / f"{name}.ext"
        extfile.write_text(extension + "\n")
        _openssl(
            "x509",
            "-req",
            "-in",
            request,
            "-CA",
            files["ca"],
            "-CAkey",
            files["ca-key"],
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            extfile,
            "-out",
            files[name],
        )
    return files


def test_tls_with_a_client_certificate(tmp_path: Path) -> None:
    if broker_support.mosquitto_binary() is None or shutil.which("openssl") is None:
        pytest.skip("mosquitto or openssl is not installed")
    pki = _test_pki(tmp_path / "pki")
    port = broker_support.free_port()
    broker = Mosquitto(
        tmp_path / "tls-broker",
        port=port,
        listener=f"listener {port} 127.0.0.1\n"
        f"cafile {pki['ca']}\ncertfile {pki['server']}\nkeyfile {pki['server-key']}\n"
        "require_certificate true",
    )
    broker.start()
    try:
        config = _config(
            broker,
            tmp_path,
            url=f"mqtts://127.0.0.1:{port}",
            tls_ca=str(pki["ca"]),
            tls_cert=str(pki["client"]),
            tls_key=str(pki["client-key"]),
        )
        publisher = _publisher(config, tmp_path / "queue")
        publisher.start()
        publisher.publish_event(contract_event(), 0)
        _wait(lambda: _sample(publisher, "earshot_events_delivered_total", MQTT) == 1)
        publisher.close(2)
        # The server certificate is verified: trusting another certificate as CA never connects.
        untrusting = _publisher(
            dataclasses.replace(config, tls_ca=str(pki["client"])), tmp_path / "untrusting"
        )
        untrusting.start()
        time.sleep(1.0)
        assert _sample(untrusting, "earshot_mqtt_connected") == 0
        untrusting.close(0.5)
    finally:
        broker.stop()
    assert broker.log().count("New client connected") == 1


def test_overflow_during_an_outage_drops_the_oldest_counted_and_delivers_the_rest_in_order(
    mosquitto_broker: Mosquitto, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    subscriber = Subscriber(mosquitto_broker.port, "earshot/+/event/#")
    mosquitto_broker.stop()
    metrics = AgentMetrics(CollectorRegistry())
    publisher = _publisher(_config(mosquitto_broker, tmp_path), tmp_path / "queue", metrics, max_events=5)
    publisher.start()
    sent = [contract_event(n=n) for n in range(8)]
    for n, event in enumerate(sent):
        publisher.publish_event(event, n)
    assert metrics.registry.get_sample_value("earshot_queue_dropped_total", MQTT) == 3
    assert metrics.registry.get_sample_value("earshot_queue_depth", MQTT) == 5
    assert "dropped the 1 oldest" in caplog.text
    mosquitto_broker.start()
    subscriber.wait_for(lambda ms: len(ms) >= 5, timeout=10)
    time.sleep(0.3)
    assert [e["event_id"] for e in _events(subscriber)] == [e["event_id"] for e in sent[3:]]
    publisher.close(2)
    subscriber.close()
