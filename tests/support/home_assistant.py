"""A real Home Assistant for tests: ``hass`` from its own virtual environment (see
scripts/install-home-assistant), its MQTT integration on the test's mosquitto, no onboarding, loopback HTTP.

Home Assistant tells the test what it sees over MQTT, through automations the test installs: every state
change of an ``earshot`` entity goes to ``hatest/change`` (in order), and a message on ``hatest/dump`` is
answered on ``hatest/snapshot`` with every such entity's state and attributes. No token or REST client needed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.publish as mqtt_publish

from support.mosquitto import Subscriber, free_port

HASS = Path(os.environ.get("EARSHOT_HASS", "/opt/ha/bin/hass"))
INSTALL = "scripts/install-home-assistant"  # the install command, for skip messages
PREFIX = "json:"  # keeps HA from parsing the rendered JSON into a Python object before publishing it
# The probes use HA's own ``to_json`` filter, and show an automation's ``last_triggered`` (a datetime, which
# no JSON filter writes) as a string.

CONFIGURATION = """\
homeassistant:
  name: earshot-test
  latitude: 52.0
  longitude: 4.0
  elevation: 0
  unit_system: metric
  time_zone: UTC
  country: NL
  currency: EUR
http:
  server_host: 127.0.0.1
  server_port: {http_port}
logger:
  default: warning
automation: !include automations.yaml
"""

# Home Assistant 2024.3 syntax (trigger/platform, action/service), which later versions still accept.
PROBES = """\
- id: earshot_test_ready
  alias: test probe ready
  trigger:
    - platform: homeassistant
      event: start
  action:
    - service: mqtt.publish
      data: {topic: hatest/ready, payload: "started"}
- id: earshot_test_mirror
  alias: test probe mirror
  mode: queued
  max: 10000
  trigger:
    - platform: event
      event_type: state_changed
  condition:
    - condition: template
      value_template: "{{ 'earshot' in trigger.event.data.entity_id }}"
  action:
    - service: mqtt.publish
      data:
        topic: hatest/change
        qos: 1
        payload: >-
          {% set old, new = trigger.event.data.old_state, trigger.event.data.new_state %}json:{{
          {'entity_id': trigger.event.data.entity_id, 'old': old.state if old else None,
           'new': new.state if new else None,
           'attributes': ({'last_triggered': new.attributes.last_triggered | string}
                          if new.domain == 'automation' else new.attributes) if new else {}}
          | to_json }}
- id: earshot_test_dump
  alias: test probe dump
  mode: queued
  trigger:
    - platform: mqtt
      topic: hatest/dump
  action:
    - service: mqtt.publish
      data:
        topic: hatest/snapshot
        qos: 1
        payload: >-
          json:{% set ns = namespace(items=[]) %}{% for s in states if 'earshot' in s.entity_id %}{%
          set ns.items = ns.items + [{'entity_id': s.entity_id, 'state': s.state, 'attributes':
            {'last_triggered': s.attributes.last_triggered | string} if s.domain == 'automation'
            else s.attributes}] %}{% endfor %}{{ {'request': trigger.payload, 'states': ns.items} | to_json }}
"""


def mqtt_entry(broker_port: int) -> dict:
    """``.storage/core.config_entries`` with one MQTT entry (set up through the UI in real life)."""
    entry = {
        "entry_id": "earshottestmqtt0000000000000001",
        "version": 1,
        "minor_version": 1,
        "domain": "mqtt",
        "title": "test broker",
        "data": {"broker": "127.0.0.1", "port": broker_port, "discovery": True},
        "options": {},
        "pref_disable_new_entities": False,
        "pref_disable_polling": False,
        "source": "user",
        "unique_id": None,
        "disabled_by": None,
    }
    return {"version": 1, "minor_version": 1, "key": "core.config_entries", "data": {"entries": [entry]}}


class HomeAssistant:
    """One ``hass -c DIR`` process on the broker at ``broker_port``; ``automations`` is added YAML."""

    def __init__(self, directory: Path, broker_port: int, automations: str = "") -> None:
        self.directory, self.broker_port = directory, broker_port
        self.log_path = directory / "hass.log"
        self.process: subprocess.Popen[bytes] | None = None
        (directory / ".storage").mkdir(parents=True, exist_ok=True)
        (directory / "configuration.yaml").write_text(CONFIGURATION.format(http_port=free_port()))
        (directory / "automations.yaml").write_text(PROBES + automations)
        (directory / ".storage/core.config_entries").write_text(json.dumps(mqtt_entry(broker_port)))
        self.probe = Subscriber(broker_port, ["hatest/#", "homeassistant/status"], client_id="ha-probe")
        self._dumps = 0

    def start(self, timeout: float = 90.0) -> float:
        """Start hass and wait until its automations run and it sent its birth message; seconds taken."""
        started, mark = time.monotonic(), len(self.probe.messages)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(HASS), "-c", str(self.directory), "--skip-pip"], stdout=log, stderr=subprocess.STDOUT
            )
        self.probe.wait_for(
            lambda ms: (
                {(m.topic, m.payload) for m in ms[mark:]}
                >= {("hatest/ready", b"started"), ("homeassistant/status", b"online")}
            ),
            timeout=timeout,
        )
        return time.monotonic() - started

    def stop(self) -> None:
        """SIGTERM, as systemd stops it; HA saves its registries and says ``offline``."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def close(self) -> None:
        """Stop HA and the probe."""
        self.stop()
        self.probe.close()

    def changes(self) -> list[dict]:
        """Every state change of an earshot entity so far, in order."""
        return [json.loads(m.payload.decode()[len(PREFIX) :]) for m in self.probe.on("hatest/change")]

    def wait_for_change(self, entity_id: str, new: str, after: int = 0) -> int:
        """Index in ``changes()`` of the first change of ``entity_id`` to ``new`` from ``after`` on."""

        def found() -> list[int]:
            return [
                n
                for n, c in enumerate(self.changes())
                if n >= after and c["entity_id"] == entity_id and c["new"] == new
            ]

        self.probe.wait_for(lambda _: bool(found()))
        return found()[0]

    def snapshot(self) -> dict[str, dict]:
        """entity_id -> {state, attributes} of every earshot entity, as HA holds them now."""
        self._dumps += 1
        request = str(self._dumps)
        mqtt_publish.single("hatest/dump", request, qos=1, hostname="127.0.0.1", port=self.broker_port)
        reply = self.probe.wait_for(
            lambda ms: any(self._answer(m.payload) == request for m in ms if m.topic == "hatest/snapshot")
        )
        payload = next(
            m.payload for m in reply if m.topic == "hatest/snapshot" and self._answer(m.payload) == request
        )
        return {s["entity_id"]: s for s in json.loads(payload.decode()[len(PREFIX) :])["states"]}

    @staticmethod
    def _answer(payload: bytes) -> str:
        return str(json.loads(payload.decode()[len(PREFIX) :])["request"])

    def wait_for(
        self, predicate: Callable[[dict[str, dict]], bool], timeout: float = 20.0
    ) -> dict[str, dict]:
        """Poll snapshots until predicate(snapshot) holds; AssertionError with the last one otherwise."""
        deadline = time.monotonic() + timeout
        while True:
            snapshot = self.snapshot()
            if predicate(snapshot):
                return snapshot
            if time.monotonic() > deadline:
                raise AssertionError(f"Home Assistant never got there: {snapshot}\nlog: {self.log()}")
            time.sleep(0.3)

    def log(self) -> str:
        """Home Assistant's log so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
