"""The MQTT output: events at QoS 1 through its on-disk queue, retained state and availability, HA discovery.

Threads: the audio consumer calls ``publish_event`` (a fsync'd local write, never network I/O); paho's
network thread connects, reconnects with exponential backoff and reports PUBACKs; our sender thread moves
events from the disk queue to paho in order and deletes each from the queue only once it is acknowledged.

What Home Assistant reads (attributes, state, the agent status) is retained and published directly, always
the attributes before the state and every state before ``online``, so HA never shows a state without its
attributes or a stale ``ON`` as live. HA's birth message (``<discovery_prefix>/status`` ``online``) gets
discovery and every retained topic again, and discovery configs of this device that are no longer announced
(a label dropped from the listen list) are removed.
"""

from __future__ import annotations

import json
import logging
import ssl
import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as mqtt

from edge_agent import __version__
from edge_agent.config import MqttConfig, QueueConfig
from edge_agent.events import to_json_line
from edge_agent.metrics import AgentMetrics
from edge_agent.publishers.base import OutputSetupError, Publisher, drain
from edge_agent.publishers.disk_queue import DiskQueue, QueuedEvent, open_output_queue
from edge_agent.publishers.ha_discovery import Topics, config_filter, discovery_messages
from edge_agent.publishers.mqtt_connection_log import ConnectionLog

logger = logging.getLogger(__name__)

# Events handed to paho but not yet acknowledged; the rest wait on disk, so memory stays bounded.
SEND_WINDOW = 32
_POLL_S = 1.0  # the sender re-reads the queue at least this often even without a wake-up


class MqttPublisher(Publisher):
    """Publishes events reliably (disk queue + PUBACK) and keeps availability and state topics current."""

    name = "mqtt"

    def __init__(
        self,
        config: MqttConfig,
        client: mqtt.Client,
        queue: DiskQueue,
        topics: Topics,
        labels: Sequence[str],
        model: dict,
        metrics: AgentMetrics,
        level_unit: str | None = None,
    ) -> None:
        self.config = config
        self.client = client
        self.queue = queue
        self.topics = topics
        self.labels = tuple(labels)
        self.model = dict(model)
        self.metrics = metrics
        self._states: dict[str, str] = {label: "OFF" for label in self.labels}
        self._attributes: dict[str, str] = {}  # label -> its latest event's JSON
        self._status: dict[str, Any] | None = None  # the latest agent status report
        self._status_sent = ""  # its JSON as last published
        self._level: str | None = None  # the latest per-minute level summary's JSON
        # Held while retained topics are written: a state change cannot slip between (re)connect's
        # snapshot and its ``online``.
        self._retained_lock = threading.Lock()
        self._discovery = (
            discovery_messages(
                topics, config.discovery_prefix, self.labels, self.model, __version__, level_unit
            )
            if config.discovery
            else []
        )
        self._announced = {topic for topic, _ in self._discovery}
        self._acks: deque[tuple[int, bool]] = deque()  # (mid, refused) from paho's thread to the sender's
        self._inflight: dict[int, QueuedEvent] = {}  # mid -> event; touched by the sender thread only
        self._last_handed = 0  # highest queue seq handed to paho in this process
        self._connected = threading.Event()
        self._drain_first = False  # after a reconnect, paho resends older in-flight events before new ones
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._sender = threading.Thread(target=self._run_sender, name="earshot-mqtt-sender", daemon=True)
        self._connection_log = ConnectionLog(
            str(config.host),
            int(config.port or 0),
            client_id_for(config, topics.device_id),
            config.tls,
            config.reconnect_max_s,
        )  # WARNINGs, rate-limited
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        metrics.init_output(self.name)

    def start(self) -> None:
        """Connect in the background (retrying with backoff) and start delivering queued events."""
        host, port = self.config.host, self.config.port
        logger.info("MQTT: connecting to %s:%s (tls %s)", host, port, "on" if self.config.tls else "off")
        self.client.connect_async(str(host), int(port or 0), keepalive=self.config.keepalive_s)
        self.client.loop_start()
        self._sender.start()

    def publish_event(self, event: dict[str, Any], stream_sample: int) -> None:
        """Queue one event durably and wake the sender; never raises for broker or disk trouble."""
        label, kind, payload = str(event["label"]), str(event["kind"]), to_json_line(event)
        self.queue.put(self.topics.event(label), payload)
        with self._retained_lock:
            self._attributes[label] = payload
            self._states[label] = "ON" if kind == "start" else "OFF"
            if self._connected.is_set():
                self._publish_label(label)
        self._wake.set()

    def publish_state(self, kind: str, state: dict[str, Any]) -> None:
        """``agent``: the pipeline's status, retained with this output's queue depth, when it changes;
        ``level``: the per-minute sound-level summary, retained."""
        if kind == "level":
            with self._retained_lock:
                self._level = json.dumps(state)
                if self._connected.is_set():
                    self._publish_retained(self.topics.level, self._level)
            return
        if kind != "agent":
            return
        with self._retained_lock:
            self._status = {**state, "queue_depth": self.queue.depth()}
            if self._connected.is_set():
                self._publish_status(force=False)

    def close(self, timeout: float = 5.0) -> None:
        """Try to deliver what is queued within ``timeout`` s, then go ``offline``; the rest stays on disk."""
        deadline = time.monotonic() + timeout
        drain(
            lambda: self._connected.is_set() and bool(self.queue.depth() or self._inflight),
            deadline,
            self._wake,
        )
        self._stop.set()
        self._wake.set()
        if self._sender.is_alive():
            self._sender.join(max(0.1, deadline - time.monotonic()))
        if self._connected.is_set():
            info = self.client.publish(self.topics.availability, "offline", qos=1, retain=True)
            info.wait_for_publish(max(0.1, min(2.0, deadline - time.monotonic())))
        self.client.disconnect()
        self.client.loop_stop()
        self.metrics.mqtt_connected.set(0)
        self.queue.close()
        logger.info("MQTT: closed with %d events left in the disk queue", self.queue.depth())

    def health(self) -> tuple[bool, str]:
        """Unhealthy while the disk queue cannot store events (read-only, disk full): they are being lost."""
        return self.queue.health()

    # --- paho's network thread: keep these short and never touch the disk here ---

    def _on_connect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: mqtt.ConnectFlags,
        reason_code: mqtt.ReasonCode,
        properties: object,
    ) -> None:
        if reason_code.is_failure:
            self._connection_log.refused(reason_code)
            return
        logger.info("MQTT: connected to %s:%s", self.config.host, self.config.port)
        self._connection_log.connected()
        if self.config.discovery:  # a clean session: subscriptions are made on every connect
            client.subscribe(
                [
                    (f"{self.config.discovery_prefix}/status", 1),
                    (config_filter(self.config.discovery_prefix, self.topics.device_id), 1),
                ]
            )
        self._drain_first = True
        with self._retained_lock:
            self._publish_all()
            self.metrics.mqtt_connected.set(1)
            self._connected.set()
        self._wake.set()

    def _on_message(self, client: mqtt.Client, userdata: object, message: mqtt.MQTTMessage) -> None:
        if message.topic == f"{self.config.discovery_prefix}/status":
            if message.payload == b"online":  # Home Assistant (re)started: tell it everything again
                logger.info("MQTT: Home Assistant is online; publishing discovery and state again")
                with self._retained_lock:
                    self._publish_all()
        elif message.payload and message.topic not in self._announced:
            logger.info("MQTT: removing the stale Home Assistant config %s", message.topic)
            self._publish_retained(message.topic, "")

    def _on_connect_fail(self, client: mqtt.Client, userdata: object) -> None:
        # paho calls this inside its ``except OSError``: the exception in flight is the reason (refused, TLS).
        self._connection_log.unreachable(sys.exc_info()[1])

    def _on_disconnect(
        self,
        client: mqtt.Client,
        userdata: object,
        flags: object,
        reason_code: mqtt.ReasonCode,
        properties: object,
    ) -> None:
        was_connected = self._connected.is_set()
        self._connected.clear()
        self.metrics.mqtt_connected.set(0)
        if not self._stop.is_set():
            self._connection_log.disconnected(was_connected, reason_code)

    def _on_publish(
        self,
        client: mqtt.Client,
        userdata: object,
        mid: int,
        reason_code: mqtt.ReasonCode,
        properties: object,
    ) -> None:
        self._acks.append((mid, reason_code.is_failure))
        self._wake.set()

    def _publish_retained(self, topic: str, payload: str) -> None:
        self.client.publish(topic, payload, qos=1, retain=True)

    def _publish_all(self) -> None:
        """Discovery, every label's attributes and state, then ``online`` and the status (lock held)."""
        for topic, payload in self._discovery:
            self._publish_retained(topic, payload)
        for label in self.labels:
            self._publish_label(label)
        # Only now: after a crash the broker still holds the old ON, and HA must not show it as live.
        self._publish_retained(self.topics.availability, "online")
        self._publish_status(force=True)
        if self._level is not None:
            self._publish_retained(self.topics.level, self._level)

    def _publish_label(self, label: str) -> None:
        """Attributes before state, on one connection at one QoS: HA has them when the state changes."""
        if label in self._attributes:
            self._publish_retained(self.topics.attributes(label), self._attributes[label])
        self._publish_retained(self.topics.state(label), self._states[label])

    def _publish_status(self, force: bool) -> None:
        """The agent status, when there is one and it changed (or ``force``)."""
        if self._status is None:
            return
        payload = json.dumps(self._status, sort_keys=True)
        if force or payload != self._status_sent:
            self._publish_retained(self.topics.status, payload)
            self._status_sent = payload

    # --- the sender thread ---

    def _run_sender(self) -> None:
        """Loop: settle acknowledgements, then hand the next queued events to paho, until stopped."""
        while not self._stop.is_set():
            self._wake.wait(_POLL_S)
            self._wake.clear()
            try:
                self._settle_acks()
                self._hand_off()
            except Exception:  # the loop must survive anything; the events stay on disk meanwhile
                logger.exception("MQTT sender: unexpected error; retrying")
                self._stop.wait(1.0)
        self._settle_acks()

    def _settle_acks(self) -> None:
        """Delete acknowledged events from the disk queue and record their latency."""
        while self._acks:
            mid, refused = self._acks.popleft()
            event = self._inflight.pop(mid, None)
            if event is None:
                continue  # a retained availability/state/discovery message
            if refused:
                self.queue.refused(event, "the broker refused it")
            else:
                self.queue.delivered(event)

    def _hand_off(self) -> None:
        """Publish the next queued events, oldest first, keeping at most SEND_WINDOW unacknowledged."""
        if self._drain_first and not self._inflight:
            self._drain_first = False
        if not self._connected.is_set() or self._drain_first:
            return
        room = SEND_WINDOW - len(self._inflight)
        if room <= 0:
            return
        for event in self.queue.read_after(self._last_handed, room):
            info = self.client.publish(event.topic, event.payload, qos=self.config.qos, retain=False)
            self._inflight[info.mid] = event
            self._last_handed = event.seq


def make_mqtt_publisher(
    config: MqttConfig,
    queue: QueueConfig,
    device_id: str,
    labels: Sequence[str],
    model: dict,
    metrics: AgentMetrics,
    level_unit: str | None = None,
) -> MqttPublisher:
    """Build (not start) the MQTT output for an enabled ``config``; OutputSetupError on bad setup.

    ``level_unit`` ("dBA" calibrated, "dBFS" not, None when levels are off) announces the level sensor.
    """
    topics = Topics(config.topic_prefix, device_id)
    client = _make_client(config, device_id, topics)
    disk_queue = open_output_queue(queue, "mqtt", device_id, metrics)
    return MqttPublisher(config, client, disk_queue, topics, labels, model, metrics, level_unit)


def client_id_for(config: MqttConfig, device_id: str) -> str:
    """``mqtt.client_id``, or ``earshot-<device_id>``: one per broker, or two agents take turns on it."""
    return config.client_id or f"earshot-{device_id}"


def _make_client(config: MqttConfig, device_id: str, topics: Topics) -> mqtt.Client:
    """A paho 2.x client with the Last Will, credentials, TLS and reconnect backoff from ``config``."""
    client_id = client_id_for(config, device_id)
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311)
    # paho reports every failed retry at ERROR; our own callbacks log state changes once, so paho's
    # lines go to debug. (paho never logs the password.)
    paho_logger = logging.getLogger(f"{__name__}.paho")
    client.on_log = lambda _client, _userdata, _level, line: paho_logger.debug("%s", line)
    client.will_set(topics.availability, "offline", qos=1, retain=True)
    # Doubles per failure. paho's hints say int, but it only multiplies and sleeps: sub-second delays work.
    client.reconnect_delay_set(config.reconnect_min_s, config.reconnect_max_s)  # type: ignore[arg-type]
    client.max_inflight_messages_set(0)  # unbounded in paho; SEND_WINDOW bounds the events we hand it
    if config.username is not None:
        client.username_pw_set(config.username, config.password)
    if config.tls:
        try:
            client.tls_set(
                ca_certs=config.tls_ca,
                certfile=config.tls_cert,
                keyfile=config.tls_key,
                tls_version=ssl.PROTOCOL_TLS_CLIENT,
            )
        except (OSError, ssl.SSLError, ValueError) as error:
            key = "mqtt.tls_cert" if config.tls_cert else "mqtt.tls_ca"
            # The error names the file, never the key material or a password.
            raise OutputSetupError(f"{key}: cannot load TLS files: {error}") from None
    return client
