"""The MQTT topic layout and Home Assistant discovery payloads (pure: topics and JSON, no I/O).

Home Assistant reads retained configs under ``<discovery_prefix>/<component>/<node_id>/<object_id>/config``:
one ``binary_sensor`` per listened label (ON while the sound is heard) and one ``sensor`` per label with the
score of its latest event, all tied to one device and to the agent's availability topic.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass

_UNSAFE_ID = re.compile(r"[^a-zA-Z0-9_-]")


@dataclass(frozen=True)
class Topics:
    """Where a device publishes: ``<prefix>/<device_id>/{availability,event/<label>,state/<label>}``."""

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


def node_id(device_id: str) -> str:
    """Home Assistant allows only [a-zA-Z0-9_-] in node and object ids."""
    return "earshot_" + _UNSAFE_ID.sub("_", device_id)


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


def discovery_messages(
    topics: Topics, discovery_prefix: str, labels: Sequence[str], model: dict, sw_version: str
) -> list[tuple[str, str]]:
    """(topic, retained JSON payload) for every discovery config of this device."""
    node = node_id(topics.device_id)
    device = _device(topics.device_id, model, sw_version)
    messages = []
    for label in labels:
        object_id = _UNSAFE_ID.sub("_", label)
        heard = {
            "name": _title(label),
            "unique_id": f"{node}_{object_id}",
            "object_id": f"{node}_{object_id}",
            "state_topic": topics.state(label),
            "payload_on": "ON",
            "payload_off": "OFF",
            "device_class": "sound",
            "json_attributes_topic": topics.event(label),
            "device": device,
            **_availability(topics),
        }
        score = {
            "name": f"{_title(label)} score",
            "unique_id": f"{node}_{object_id}_score",
            "object_id": f"{node}_{object_id}_score",
            "state_topic": topics.event(label),
            "value_template": "{{ value_json.score }}",
            "state_class": "measurement",
            "icon": "mdi:waveform",
            "device": device,
            **_availability(topics),
        }
        messages.append((f"{discovery_prefix}/binary_sensor/{node}/{object_id}/config", json.dumps(heard)))
        messages.append((f"{discovery_prefix}/sensor/{node}/{object_id}_score/config", json.dumps(score)))
    return messages
