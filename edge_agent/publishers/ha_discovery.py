"""The MQTT topic layout and Home Assistant discovery payloads (pure: topics and JSON, no I/O).

Home Assistant reads retained configs under ``<discovery_prefix>/<component>/<node_id>/<object_id>/config``.
Per listened label: a ``binary_sensor`` (ON while the sound is heard, the latest event as attributes), a
``sensor`` with that event's score and an ``event`` entity that fires on each start and end. Per device, the
diagnostic entities: connectivity, audio stalled, model and queue depth; and, when levels are metered, a
sound-level sensor (LAeq,1min; ``sound_pressure`` in dBA when calibrated, else plain dBFS). All belong to
one device.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

_UNSAFE_ID = re.compile(r"[^a-zA-Z0-9_-]")
SUPPORT_URL = "https://github.com/earshot/earshot#home-assistant-and-node-red"
EVENT_TYPES = ("start", "end")  # an event's ``kind``
# The event entity needs ``event_type``; the rest of the payload becomes the entity's attributes.
EVENT_TEMPLATE = (
    '{{ {"event_type": value_json.kind, "score": value_json.score, "event_id": value_json.event_id, '
    '"started_at": value_json.started_at, "ended_at": value_json.ended_at} | tojson }}'
)


@dataclass(frozen=True)
class Topics:
    """Where a device publishes: ``<prefix>/<device_id>/...``, one topic per kind of message."""

    prefix: str
    device_id: str

    @property
    def availability(self) -> str:
        """Retained ``online``/``offline`` (the Last Will)."""
        return f"{self.prefix}/{self.device_id}/availability"

    def event(self, label: str) -> str:
        """QoS 1 JSON events for one label."""
        return f"{self.prefix}/{self.device_id}/event/{label}"

    def state(self, label: str) -> str:
        """Retained ``ON``/``OFF`` for one label."""
        return f"{self.prefix}/{self.device_id}/state/{label}"

    def attributes(self, label: str) -> str:
        """Retained JSON of the label's latest event: what its entities show, also after HA restarts."""
        return f"{self.prefix}/{self.device_id}/attributes/{label}"

    @property
    def status(self) -> str:
        """Retained agent status JSON: health, audio stalled, model, queue depth."""
        return f"{self.prefix}/{self.device_id}/status"

    @property
    def level(self) -> str:
        """Retained per-minute sound-level summary (``earshot.level/1``)."""
        return f"{self.prefix}/{self.device_id}/level"


def node_id(device_id: str) -> str:
    """Home Assistant allows only [a-zA-Z0-9_-] in node and object ids."""
    return "earshot_" + _UNSAFE_ID.sub("_", device_id)


def entity_slug(text: str) -> str:
    """An entity id's object part as Home Assistant makes it: lower case, other characters -> one ``_``."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_")


def config_filter(discovery_prefix: str, device_id: str) -> str:
    """The topic filter matching every discovery config of this device."""
    return f"{discovery_prefix}/+/{node_id(device_id)}/+/config"


def _device(device_id: str, model: dict, sw_version: str) -> dict:
    """The device block shared by every entity, so Home Assistant groups them under one sensor."""
    return {
        "identifiers": [node_id(device_id)],
        "name": f"earshot {device_id}",
        "manufacturer": "earshot",
        "model": f"{model.get('name', 'unknown')} {model.get('version', '')}".strip(),
        "sw_version": sw_version,
    }


def _availability(topics: Topics) -> dict:
    return {
        "availability_topic": topics.availability,
        "payload_available": "online",
        "payload_not_available": "offline",
    }


def _title(label: str) -> str:
    return label.replace("_", " ").capitalize()


def _config(
    discovery_prefix: str, platform: str, node: str, object_id: str, name: str, base: dict, **keys: object
) -> tuple[str, str]:
    """One entity's (config topic, JSON payload)."""
    config = {
        "name": name,
        "unique_id": f"{node}_{object_id}",
        # default_entity_id replaces the deprecated object_id (HA 2025.10; object_id goes in 2026.4). Older
        # versions drop keys they do not know and derive the same id from the device and entity names.
        "default_entity_id": f"{platform}.{entity_slug(f'{node}_{object_id}')}",
        **base,
        **keys,
    }
    return f"{discovery_prefix}/{platform}/{node}/{object_id}/config", json.dumps(config)


def _label_configs(discovery_prefix: str, topics: Topics, label: str, base: dict) -> list[tuple[str, str]]:
    """A listened label's binary sensor, score sensor and event entity."""
    node, object_id, title = node_id(topics.device_id), _UNSAFE_ID.sub("_", label), _title(label)
    live = {**base, **_availability(topics)}
    return [
        _config(
            discovery_prefix,
            "binary_sensor",
            node,
            object_id,
            title,
            live,
            state_topic=topics.state(label),
            payload_on="ON",
            payload_off="OFF",
            device_class="sound",
            json_attributes_topic=topics.attributes(label),
        ),
        _config(
            discovery_prefix,
            "sensor",
            node,
            f"{object_id}_score",
            f"{title} score",
            live,
            state_topic=topics.attributes(label),
            value_template="{{ value_json.score }}",
            state_class="measurement",
            icon="mdi:waveform",
        ),
        # Read from the live QoS 1 events, never a retained topic: a restarted HA must not fire it again.
        _config(
            discovery_prefix,
            "event",
            node,
            object_id,
            title,
            live,
            state_topic=topics.event(label),
            event_types=list(EVENT_TYPES),
            value_template=EVENT_TEMPLATE,
            icon="mdi:bullhorn",
        ),
    ]


def _diagnostic_configs(discovery_prefix: str, topics: Topics, base: dict) -> list[tuple[str, str]]:
    """The device's connectivity, audio stalled, model and queue depth entities."""
    node, diagnostic = node_id(topics.device_id), {**base, "entity_category": "diagnostic"}
    live = {**diagnostic, **_availability(topics)}
    return [
        # Reads the availability topic itself, so it shows off (not unavailable) when the agent is gone.
        _config(
            discovery_prefix,
            "binary_sensor",
            node,
            "connectivity",
            "Connectivity",
            diagnostic,
            state_topic=topics.availability,
            payload_on="online",
            payload_off="offline",
            device_class="connectivity",
        ),
        _config(
            discovery_prefix,
            "binary_sensor",
            node,
            "audio_stalled",
            "Audio stalled",
            live,
            state_topic=topics.status,
            value_template="{{ 'ON' if value_json.audio_stalled else 'OFF' }}",
            device_class="problem",
        ),
        _config(
            discovery_prefix,
            "sensor",
            node,
            "model",
            "Model",
            live,
            state_topic=topics.status,
            value_template="{{ value_json.model.name }} {{ value_json.model.version }}",
            json_attributes_topic=topics.status,
            json_attributes_template="{{ value_json.model | tojson }}",
            icon="mdi:brain",
        ),
        _config(
            discovery_prefix,
            "sensor",
            node,
            "queue_depth",
            "Queue depth",
            live,
            state_topic=topics.status,
            value_template="{{ value_json.queue_depth }}",
            state_class="measurement",
            unit_of_measurement="events",
            icon="mdi:tray-full",
        ),
    ]


def _level_config(discovery_prefix: str, topics: Topics, base: dict, unit: str) -> tuple[str, str]:
    """The sound-level sensor: LAeq,1min, with LA10/LA90/LAmax/LCeq as attributes."""
    node = node_id(topics.device_id)
    # HA's sound_pressure class takes dB or dBA only: an uncalibrated (dBFS) level is a plain measurement.
    kind = {"device_class": "sound_pressure"} if unit == "dBA" else {"icon": "mdi:volume-high"}
    return _config(
        discovery_prefix,
        "sensor",
        node,
        "sound_level",
        "Sound level",
        {**base, **_availability(topics)},
        state_topic=topics.level,
        value_template="{{ value_json.laeq }}",
        json_attributes_topic=topics.level,
        unit_of_measurement=unit,
        state_class="measurement",
        **kind,
    )


def discovery_messages(
    topics: Topics,
    discovery_prefix: str,
    labels: Sequence[str],
    model: dict,
    sw_version: str,
    level_unit: str | None = None,
) -> list[tuple[str, str]]:
    """(topic, retained JSON payload) for every discovery config of this device.

    Every config of the device comes from here: the MQTT output removes any other config it finds under the
    device's node id as stale (a label no longer listened to, an entity of an older version).
    """
    base = {
        "device": _device(topics.device_id, model, sw_version),
        "origin": {"name": "earshot", "sw_version": sw_version, "support_url": SUPPORT_URL},
        "qos": 1,  # one QoS on every topic HA reads, so the broker keeps their order (attributes, then state)
    }
    messages = _diagnostic_configs(discovery_prefix, topics, base)
    for label in labels:
        messages += _label_configs(discovery_prefix, topics, label, base)
    if level_unit is not None:  # "dBA" (calibrated) or "dBFS"; None: levels are not metered
        messages.append(_level_config(discovery_prefix, topics, base, level_unit))
    return messages
