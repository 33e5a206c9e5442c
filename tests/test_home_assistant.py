"""A real Home Assistant (2024.3.3, its MQTT integration, a real mosquitto) watching the sensor as a user
would (issue 11, items 1-4, 6 and 7): one Home Assistant session, restarted once, to keep it short.

Runs when Home Assistant is installed (scripts/install-home-assistant puts it in /opt/ha; EARSHOT_HASS
points elsewhere), and is skipped otherwise.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import mosquitto as broker_support
from support.home_assistant import HASS, INSTALL, HomeAssistant
from support.mosquitto import Mosquitto, contract_event
from support.publisher_process import PublisherProcess

REPO = Path(__file__).resolve().parents[1]
mosquitto_broker = broker_support.mosquitto_broker  # the fixture: a real broker per test
pytestmark = pytest.mark.skipif(not HASS.is_file(), reason=f"Home Assistant is not installed: run {INSTALL}")

ENTITY = "earshot_test_device"  # entity ids are <platform>.earshot_<device id as a slug>_<object>
SIREN, GUN_SHOT = f"binary_sensor.{ENTITY}_siren", f"binary_sensor.{ENTITY}_gun_shot"
SOUND_LEVEL = f"sensor.{ENTITY}_sound_level"
LEVEL_SUMMARY = {
    "schema": "earshot.level/1",
    "device_id": "test-device",
    "started_at": "2026-11-30T21:59:00.000Z",
    "ended_at": "2026-11-30T22:00:00.000Z",
    "period": "minute",
    "laeq": 61.24,
    "lamax": 78.1,
    "la10": 64.0,
    "la90": 48.5,
    "lceq": 70.3,
    "calibrated": True,
    "unit": "dB",
}


def readme_automation(heading: str) -> str:
    """The README's example automation whose first line is ``# <heading>``."""
    blocks = re.findall(r"```yaml\n(.*?)```", (REPO / "README.md").read_text(), re.S)
    found = [block for block in blocks if block.startswith(f"# {heading}")]
    assert len(found) == 1, f"README has no yaml block starting '# {heading}'"
    return found[0]


@pytest.fixture()
def home_assistant(mosquitto_broker: Mosquitto, tmp_path: Path) -> Iterator[HomeAssistant]:
    """A started Home Assistant with the README's automation for its version."""
    ha = HomeAssistant(
        tmp_path / "ha", mosquitto_broker.port, automations=readme_automation("Home Assistant before 2024.10")
    )
    try:
        ha.start()
        yield ha
    finally:
        ha.close()


def _state(snapshot: dict[str, dict], entity_id: str) -> str | None:
    return snapshot.get(entity_id, {}).get("state")


def test_home_assistant_sees_the_sensor_right(
    home_assistant: HomeAssistant, mosquitto_broker: Mosquitto, tmp_path: Path
) -> None:
    ha, began = home_assistant, time.monotonic()
    queue = str(tmp_path / "queue")
    crashed = PublisherProcess(mosquitto_broker.url, queue, ("siren", "gun_shot", "car_horn"))
    ha.wait_for(lambda s: _state(s, SIREN) == _state(s, f"binary_sensor.{ENTITY}_car_horn") == "off")
    siren = contract_event(kind="start", score=0.93)
    crashed.publish(siren)
    # Item 2: when the state turns on, the attributes are already there (what an automation reads).
    on = ha.wait_for_change(SIREN, "on")
    turned_on = ha.changes()[on]
    assert turned_on["attributes"].get("event_id") == siren["event_id"], turned_on
    assert turned_on["attributes"]["score"] == 0.93
    # Item 7: the README's automation (the syntax this version reads) fired on that event.
    automation = "automation.earshot_siren_or_gunshot_heard"
    ha.wait_for(lambda s: s[automation]["attributes"]["last_triggered"] != "None")
    # Item 1: killed during the siren, restarted: HA goes unavailable -> off, never back to on.
    crashed.kill()
    mark = ha.wait_for_change(SIREN, "unavailable", after=on) + 1
    restarted = PublisherProcess(mosquitto_broker.url, queue, ("siren", "gun_shot"))
    ha.wait_for_change(SIREN, "off", after=mark)
    transitions = [(c["old"], c["new"]) for c in ha.changes()[mark:] if c["entity_id"] == SIREN]
    assert [(old, new) for old, new in transitions if old != new] == [("unavailable", "off")], transitions
    # Item 4: car_horn left the listen list, and its entities left Home Assistant.
    ha.wait_for(lambda s: not [entity for entity in s if "car_horn" in entity])
    # Item 6: the event entity and the diagnostic entities.
    restarted.publish(contract_event(label="gun_shot", kind="start", score=0.77))
    restarted.publish(contract_event(label="gun_shot", kind="end", score=0.77))
    snapshot = ha.wait_for(
        lambda s: s.get(f"event.{ENTITY}_gun_shot", {}).get("attributes", {}).get("event_type") == "end"
    )
    assert snapshot[f"event.{ENTITY}_gun_shot"]["attributes"]["score"] == 0.77
    diagnostics = {
        f"binary_sensor.{ENTITY}_connectivity": "on",
        f"binary_sensor.{ENTITY}_audio_stalled": "off",
        f"sensor.{ENTITY}_model": "tiny 1",
        f"sensor.{ENTITY}_queue_depth": "0",
    }
    ha.wait_for(lambda s: {entity: _state(s, entity) for entity in diagnostics} == diagnostics)
    # Issue 13: the per-minute level summary is a sound_pressure sensor in dBA, the rest its attributes.
    restarted.publish_level(LEVEL_SUMMARY)
    snapshot = ha.wait_for(lambda s: _state(s, SOUND_LEVEL) == "61.24")
    attributes = snapshot[SOUND_LEVEL]["attributes"]
    assert attributes["device_class"] == "sound_pressure" and attributes["unit_of_measurement"] == "dBA"
    assert attributes["la90"] == 48.5 and attributes["calibrated"] is True
    # Item 3: Home Assistant restarts; scores and attributes come back.
    ha.stop()
    restart_s = ha.start()
    snapshot = ha.wait_for(
        lambda s: (
            _state(s, f"sensor.{ENTITY}_gun_shot_score") == "0.77"
            and s[GUN_SHOT]["attributes"].get("score") == 0.77
        )
    )
    assert _state(snapshot, SIREN) == "off"
    assert {entity: _state(snapshot, entity) for entity in diagnostics} == diagnostics
    assert _state(snapshot, SOUND_LEVEL) == "61.24"  # retained: back after the restart
    restarted.close()
    ha.wait_for(
        lambda s: (
            _state(s, f"binary_sensor.{ENTITY}_connectivity") == "off" and _state(s, SIREN) == "unavailable"
        )
    )
    errors = [line for line in ha.log().splitlines() if " ERROR " in line and "notify" not in line]
    assert not errors, errors
    print(f"Home Assistant session {time.monotonic() - began:.1f} s, restart {restart_s:.1f} s")
