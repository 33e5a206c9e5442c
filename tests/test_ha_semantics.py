"""Home Assistant semantics of the MQTT output against a real mosquitto (issue 11, items 1-6): the order of
states, attributes and availability, what is retained, HA's birth message, stale entities, the discovery
schema, event and diagnostic entities, and the agent status."""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import paho.mqtt.client as paho
import paho.mqtt.publish as mqtt_publish
import pytest
from prometheus_client import CollectorRegistry
from support import mosquitto as broker_support
from support.mosquitto import Mosquitto, Received, Subscriber, contract_event
from support.onnx_models import band_energy_model
from support.publisher_process import PublisherProcess

from edge_agent.config import AgentConfig, MqttConfig, QueueConfig
from edge_agent.metrics import AgentMetrics
from edge_agent.onnx_model import OnnxModel
from edge_agent.pipeline import Pipeline
from edge_agent.publishers.base import Publisher
from edge_agent.publishers.ha_discovery import Topics, discovery_messages
from edge_agent.publishers.mqtt import MqttPublisher, make_mqtt_publisher
from edge_agent.ring_buffer import RingBuffer

REPO = Path(__file__).resolve().parents[1]
DEVICE = "test-device"
NODE = "earshot_test-device"
MODEL = {"name": "tiny", "version": "1", "sha256": "0" * 64}
mosquitto_broker = broker_support.mosquitto_broker  # the fixture: a real broker per test


def _publisher(
    broker: Mosquitto,
    queue_dir: Path,
    labels: tuple[str, ...] = ("siren", "gun_shot"),
    metrics: AgentMetrics | None = None,
) -> MqttPublisher:
    """The MQTT output as the agent builds it, with fast reconnects."""
    config = MqttConfig(url=broker.url, reconnect_min_s=0.1, reconnect_max_s=0.5, keepalive_s=5)
    return make_mqtt_publisher(
        config,
        QueueConfig(dir=str(queue_dir)),
        DEVICE,
        labels,
        MODEL,
        metrics or AgentMetrics(CollectorRegistry()),
    )


def _started(publisher: MqttPublisher) -> MqttPublisher:
    """Start it and wait until it is connected."""
    publisher.start()
    _wait(lambda: publisher.metrics.registry.get_sample_value("earshot_mqtt_connected") == 1)
    return publisher


def _wait(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _configs(messages: list[Received]) -> dict[str, dict]:
    """The newest non-empty discovery config per topic."""
    newest = {m.topic: m.payload for m in messages if m.topic.endswith("/config")}
    return {topic: json.loads(payload) for topic, payload in newest.items() if payload}


def _index(messages: list[Received], topic: str, test: Callable[[bytes], bool]) -> int:
    """Position of the first message on ``topic`` whose payload passes ``test`` (-1: none)."""
    return next((n for n, m in enumerate(messages) if m.topic == topic and test(m.payload)), -1)


@pytest.fixture()
def watcher(mosquitto_broker: Mosquitto) -> Iterator[Subscriber]:
    """Everything the device and Home Assistant exchange, in arrival order."""
    subscriber = Subscriber(mosquitto_broker.port, ["earshot/#", "homeassistant/#"], client_id="watcher")
    yield subscriber
    subscriber.close()


def test_item1_after_a_crash_every_state_goes_out_before_online(
    mosquitto_broker: Mosquitto, watcher: Subscriber, tmp_path: Path
) -> None:
    crashed = PublisherProcess(mosquitto_broker.url, str(tmp_path / "queue"), ("siren",))
    crashed.publish(contract_event(kind="start"))
    crashed.kill()  # during the siren: the retained state stays ON, the Last Will says offline
    availability, state = f"earshot/{DEVICE}/availability", f"earshot/{DEVICE}/state/siren"
    watcher.wait_for(lambda ms: _index(ms, availability, lambda p: p == b"offline") >= 0)
    mark = len(watcher.messages)
    restarted = _started(_publisher(mosquitto_broker, tmp_path / "queue", ("siren",)))
    after = watcher.wait_for(lambda ms: _index(ms[mark:], availability, lambda p: p == b"online") >= 0)[mark:]
    off = _index(after, state, lambda p: p == b"OFF")
    online = _index(after, availability, lambda p: p == b"online")
    assert 0 <= off < online, [(m.topic, m.payload) for m in after]
    restarted.close(2)


def test_item2_attributes_are_there_before_the_state_changes(
    mosquitto_broker: Mosquitto, watcher: Subscriber, tmp_path: Path
) -> None:
    publisher = _started(_publisher(mosquitto_broker, tmp_path / "queue"))
    event = contract_event(kind="start")
    publisher.publish_event(event, 0)
    binary = f"homeassistant/binary_sensor/{NODE}/siren/config"
    messages = watcher.wait_for(
        lambda ms: (
            binary in _configs(ms) and _index(ms, f"earshot/{DEVICE}/state/siren", lambda p: p == b"ON") >= 0
        )
    )
    config = _configs(messages)[binary]
    on = _index(messages, config["state_topic"], lambda p: p == b"ON")
    carries = _index(
        messages,
        config["json_attributes_topic"],
        lambda p: json.loads(p).get("event_id") == event["event_id"],
    )
    # Home Assistant applies messages in order: the attributes must be set when the state turns on.
    assert 0 <= carries < on, [(m.topic, m.payload[:40]) for m in messages]
    publisher.close(2)


def _read_topics(configs: dict[str, dict]) -> set[str]:
    """Topics the entities read their state and attributes from (event entities read live events only)."""
    return {
        config[key]
        for topic, config in configs.items()
        if not topic.startswith("homeassistant/event/")
        for key in ("state_topic", "json_attributes_topic")
        if key in config
    }


def test_item3_what_entities_read_is_retained_and_ha_birth_republishes(
    mosquitto_broker: Mosquitto, tmp_path: Path
) -> None:
    publisher = _started(_publisher(mosquitto_broker, tmp_path / "queue"))
    publisher.publish_event(contract_event(label="siren", kind="start"), 0)
    publisher.publish_event(contract_event(label="gun_shot", kind="start", score=0.77), 0)
    publisher.publish_state(
        "agent", {"healthy": True, "reason": "ok", "audio_stalled": False, "model": MODEL}
    )
    _wait(lambda: publisher.queue.depth() == 0)
    # A restarted Home Assistant is a late subscriber: it sees retained messages only.
    late = Subscriber(mosquitto_broker.port, ["earshot/#", "homeassistant/#"], client_id="restarted-ha")
    late.wait_for(lambda ms: f"homeassistant/sensor/{NODE}/gun_shot_score/config" in _configs(ms))
    time.sleep(0.3)  # every retained message has arrived by now
    configs = _configs(late.messages)
    retained = {m.topic: m.payload for m in late.messages if m.retain}
    assert _read_topics(configs) <= set(retained), _read_topics(configs) - set(retained)
    score = configs[f"homeassistant/sensor/{NODE}/gun_shot_score/config"]
    assert json.loads(retained[score["state_topic"]])["score"] == 0.77
    mark = len(late.messages)
    mqtt_publish.single("homeassistant/status", "online", hostname="127.0.0.1", port=mosquitto_broker.port)
    # Discovery again, and what the entities read: HA may have lost it (a broker without persistence).
    late.wait_for(
        lambda ms: (
            set(_configs(ms[mark:])) == set(configs) and _read_topics(configs) <= {m.topic for m in ms[mark:]}
        )
    )
    late.close()
    publisher.close(2)


def test_item4_a_label_dropped_from_the_listen_list_loses_its_entities(
    mosquitto_broker: Mosquitto, watcher: Subscriber, tmp_path: Path
) -> None:
    before = _started(_publisher(mosquitto_broker, tmp_path / "queue", ("siren", "gun_shot")))
    watcher.wait_for(lambda ms: f"homeassistant/binary_sensor/{NODE}/gun_shot/config" in _configs(ms))
    before.close(2)
    announced = {topic for topic in _configs(watcher.messages) if "gun_shot" in topic}
    after = _started(_publisher(mosquitto_broker, tmp_path / "queue", ("siren",)))
    watcher.wait_for(lambda ms: all(_index(ms, topic, lambda p: p == b"") >= 0 for topic in announced))
    late = Subscriber(mosquitto_broker.port, "homeassistant/#", client_id="late")
    late.wait_for(lambda ms: f"homeassistant/binary_sensor/{NODE}/siren/config" in _configs(ms))
    time.sleep(0.3)
    assert not [m.topic for m in late.messages if "gun_shot" in m.topic and m.payload]
    late.close()
    after.close(2)


# The keys Home Assistant's current MQTT docs list for each platform (home-assistant.io, integrations
# binary_sensor.mqtt, sensor.mqtt, event.mqtt; "MQTT discovery" for origin and device). A key outside these
# is a typo Home Assistant drops without a word.
COMMON_KEYS = {
    "availability",
    "availability_mode",
    "availability_template",
    "availability_topic",
    "default_entity_id",
    "device",
    "device_class",
    "enabled_by_default",
    "encoding",
    "entity_category",
    "entity_picture",
    "icon",
    "json_attributes_template",
    "json_attributes_topic",
    "name",
    "origin",
    "payload_available",
    "payload_not_available",
    "qos",
    "state_topic",
    "unique_id",
    "value_template",
}
PLATFORM_KEYS = {
    "binary_sensor": COMMON_KEYS | {"expire_after", "force_update", "off_delay", "payload_off", "payload_on"},
    "sensor": COMMON_KEYS
    | {
        "expire_after",
        "force_update",
        "last_reset_value_template",
        "options",
        "state_class",
        "suggested_display_precision",
        "unit_of_measurement",
    },
    "event": COMMON_KEYS | {"event_types"},
}
DEVICE_KEYS = {
    "configuration_url",
    "connections",
    "hw_version",
    "identifiers",
    "manufacturer",
    "model",
    "model_id",
    "name",
    "serial_number",
    "suggested_area",
    "sw_version",
    "via_device",
}
ENTITY_ID = re.compile(r"^[a-z_]+\.[a-z0-9]+(_[a-z0-9]+)*$")  # what Home Assistant accepts as an entity id


def _messages(labels: tuple[str, ...] = ("siren", "gun_shot")) -> dict[str, dict]:
    return {
        topic: json.loads(payload)
        for topic, payload in discovery_messages(
            Topics("earshot", DEVICE), "homeassistant", labels, MODEL, "0.1.0"
        )
    }


def test_item5_discovery_uses_the_current_schema() -> None:
    for topic, config in _messages().items():
        platform = topic.split("/")[1]
        assert set(config) <= PLATFORM_KEYS[platform], (topic, set(config) - PLATFORM_KEYS[platform])
        assert set(config["device"]) <= DEVICE_KEYS
        assert config["origin"]["name"] == "earshot" and config["origin"]["sw_version"] == "0.1.0"
        assert config["origin"]["support_url"].startswith("https://")
        assert "object_id" not in config  # deprecated in HA 2025.10, gone in 2026.4
        assert ENTITY_ID.match(config["default_entity_id"]), config["default_entity_id"]
        assert config["default_entity_id"].startswith(f"{platform}.earshot_test_device_")


def _render(template: str, payload: str) -> str:
    """Render a value template as Home Assistant does for a message (``value`` and ``value_json``)."""
    jinja2 = pytest.importorskip("jinja2")
    return jinja2.Environment().from_string(template).render(value=payload, value_json=json.loads(payload))


def test_item6_an_event_entity_per_alert_label() -> None:
    configs = _messages()
    for label in ("siren", "gun_shot"):
        config = configs[f"homeassistant/event/{NODE}/{label}/config"]
        assert config["event_types"] == ["start", "end"]
        assert config["state_topic"] == f"earshot/{DEVICE}/event/{label}"
        for kind in ("start", "end"):
            event = contract_event(label=label, kind=kind, score=0.8)
            rendered = json.loads(_render(config["value_template"], json.dumps(event)))
            assert rendered["event_type"] == kind and rendered["score"] == 0.8
            assert rendered["event_id"] == event["event_id"]


def test_item6_diagnostic_entities_read_the_agent_status(
    mosquitto_broker: Mosquitto, watcher: Subscriber, tmp_path: Path
) -> None:
    publisher = _started(_publisher(mosquitto_broker, tmp_path / "queue"))
    publisher.publish_state(
        "agent",
        {
            "healthy": False,
            "reason": "audio stalled: no samples for 6.0 s",
            "audio_stalled": True,
            "model": MODEL,
        },
    )
    wanted = {
        f"homeassistant/{platform}/{NODE}/{name}/config"
        for platform, name in (
            ("binary_sensor", "connectivity"),
            ("binary_sensor", "audio_stalled"),
            ("sensor", "model"),
            ("sensor", "queue_depth"),
        )
    }
    configs = _configs(watcher.wait_for(lambda ms: wanted <= set(_configs(ms))))
    diagnostic = {
        topic.split("/")[-2]: config
        for topic, config in configs.items()
        if config.get("entity_category") == "diagnostic"
    }
    assert set(diagnostic) == {"connectivity", "audio_stalled", "model", "queue_depth"}
    connectivity = diagnostic["connectivity"]
    assert connectivity["device_class"] == "connectivity" and "availability_topic" not in connectivity
    assert connectivity["state_topic"] == f"earshot/{DEVICE}/availability"
    assert (connectivity["payload_on"], connectivity["payload_off"]) == ("online", "offline")
    status_topic = diagnostic["model"]["state_topic"]
    status = watcher.wait_for(lambda ms: _index(ms, status_topic, bool) >= 0)[
        _index(watcher.messages, status_topic, bool)
    ]
    assert json.loads(status.payload)["queue_depth"] == 0
    rendered = {
        name: _render(diagnostic[name]["value_template"], status.payload.decode())
        for name in ("audio_stalled", "model", "queue_depth")
    }
    assert rendered == {"audio_stalled": "ON", "model": "tiny 1", "queue_depth": "0"}
    assert diagnostic["audio_stalled"]["device_class"] == "problem"
    late = Subscriber(mosquitto_broker.port, status_topic, client_id="late")
    assert late.wait_for(lambda ms: bool(ms))[0].retain  # a restarted HA reads the status too
    late.close()
    publisher.close(2)


def _login_client(port: int, user: str, password: str, seen: list[tuple[str, bytes]]) -> paho.Client:
    """A connected paho client logged in as ``user`` that records every message it receives."""
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=f"test-{user}")
    client.username_pw_set(user, password)
    client.on_message = lambda _c, _u, message: seen.append((message.topic, message.payload))
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    return client


def test_the_deploy_acl_lets_a_sensor_do_all_of_this(tmp_path: Path) -> None:
    if broker_support.mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    passwords = tmp_path / "passwd"
    for n, user in enumerate((DEVICE, "homeassistant")):
        subprocess.run(
            ["mosquitto_passwd", "-b", *(["-c"] if n == 0 else []), str(passwords), user, "pw"],
            check=True,
            capture_output=True,
        )
    broker = Mosquitto(
        tmp_path / "acl-broker",
        extra_conf="allow_anonymous false\n"
        f"password_file {passwords}\nacl_file {REPO / 'deploy/mosquitto/acl'}\n",
    )
    broker.start()
    seen: list[tuple[str, bytes]] = []
    ha = _login_client(broker.port, "homeassistant", "pw", seen)
    stale = f"homeassistant/binary_sensor/{NODE}/car_horn/config"
    try:
        ha.subscribe("homeassistant/#", qos=1)
        ha.publish(stale, "{}", qos=1, retain=True).wait_for_publish(5)
        config = MqttConfig(
            url=broker.url, username=DEVICE, password="pw", reconnect_min_s=0.1, reconnect_max_s=0.5
        )
        sensor = _started(
            make_mqtt_publisher(
                config,
                QueueConfig(dir=str(tmp_path / "queue")),
                DEVICE,
                ("siren",),
                MODEL,
                AgentMetrics(CollectorRegistry()),
            )
        )
        event_config = f"homeassistant/event/{NODE}/siren/config"
        _wait(lambda: (event_config, b"") not in seen and any(t == event_config for t, _ in seen))
        _wait(lambda: (stale, b"") in seen)  # it may read its own configs, to remove stale ones
        mark = len(seen)
        ha.publish("homeassistant/status", "online", qos=1).wait_for_publish(5)
        _wait(lambda: any(t == event_config for t, _ in seen[mark:]))  # it may read HA's birth message
        sensor.close(2)
    finally:
        ha.disconnect()
        ha.loop_stop()
        broker.stop()


class StatusRecorder(Publisher):
    """Records the pipeline's state reports."""

    name = "status-recorder"

    def __init__(self) -> None:
        self.states: list[tuple[str, dict]] = []

    def publish_state(self, kind: str, state: dict) -> None:
        self.states.append((kind, state))


class SilentMic:
    """A live source whose device delivers nothing (a stalled microphone)."""

    sample_rate, channels, dtype, description, live = 16000, 1, "int16", "silent mic", True

    def start(self, ring: RingBuffer) -> None:
        self.ring = ring

    def stop(self) -> None:
        self.ring.close()


def test_item6_the_pipeline_reports_the_agent_status_every_few_seconds(tmp_path: Path) -> None:
    model = OnnxModel.load(band_energy_model(tmp_path / "tiny.onnx"), allow_ungated=True)
    recorder = StatusRecorder()
    pipeline = Pipeline(
        AgentConfig(device_id=DEVICE), model, SilentMic(), publishers=[recorder], stall_after_s=0.3
    )
    pipeline.status_every_s = 0.1
    runner = threading.Thread(target=pipeline.run)
    runner.start()
    try:
        _wait(lambda: any(state["audio_stalled"] for _, state in recorder.states))
    finally:
        pipeline.stop()
        runner.join(10)
    identity = {"name": model.metadata.name, "version": model.metadata.version, "sha256": model.sha256}
    assert recorder.states[0] == (
        "agent",
        {"healthy": True, "reason": "ok", "audio_stalled": False, "model": identity},
    )
    stalled = next(state for _, state in recorder.states if state["audio_stalled"])
    assert not stalled["healthy"] and stalled["reason"].startswith("audio stalled")
