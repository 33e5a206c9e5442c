"""MQTT names (issue 11, items 18-20): ids, prefixes and labels that make a broker drop the connection or
discard every event are config errors naming the key; the example config pins no device id."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from edge_agent.config import ConfigError, DetectorConfig, MqttConfig, load_config

REPO = Path(__file__).resolve().parents[1]

# MQTT 3.1.1 §1.5.3: U+0000 is forbidden, C0/C1 controls and noncharacters must not be relied on
# (mosquitto drops the connection); surrogates are not UTF-8 at all.
BAD_TEXT = {
    "NUL": "pole\x00",
    "DEL": "pole\x7f",
    "C0": "pole\x1b",
    "C1": "pole\x9f",
    "U+FFFF": "pole\uffff",
    "U+FFFE": "pole\ufffe",
    "U+FDD0": "pole\ufdd0",
    "U+1FFFF": "pole\U0001ffff",
    "surrogate": "pole\ud800",
}


@pytest.mark.parametrize("name", sorted(BAD_TEXT))
@pytest.mark.parametrize("key", ["device_id", "mqtt.topic_prefix", "mqtt.discovery_prefix", "mqtt.client_id"])
def test_mqtt_forbidden_characters_are_config_errors(name: str, key: str) -> None:
    section, _, field = key.rpartition(".")
    overrides = {section: {field: BAD_TEXT[name]}} if section else {field: BAD_TEXT[name]}
    with pytest.raises(ConfigError, match=rf"^{re.escape(key)}: ") as caught:
        load_config(environ={}, overrides=overrides)
    assert "\n" not in str(caught.value)


def test_device_id_from_the_environment_is_checked_too() -> None:
    with pytest.raises(ConfigError, match=r"^device_id: .*U\+007F"):
        load_config(environ={"EARSHOT_DEVICE_ID": "pole\x7f"})


@pytest.mark.parametrize("key", ["topic_prefix", "discovery_prefix"])
def test_a_prefix_starting_with_dollar_is_refused(key: str) -> None:
    with pytest.raises(ConfigError, match=rf"^mqtt\.{key}: must not start with '\$'"):
        MqttConfig(**{key: "$SYS"})


@pytest.mark.parametrize("label", ["siren/loud", "car+horn", "#", "gun shot", "siren\x00", "siren\uffff"])
def test_a_listen_label_that_makes_an_invalid_topic_is_refused(label: str) -> None:
    with pytest.raises(ConfigError, match=r"^detector\.listen: "):
        DetectorConfig(listen=("siren", label))


def test_ordinary_names_still_pass() -> None:
    config = load_config(
        environ={},
        overrides={
            "device_id": "lamppost-17.north_ÄÖ",
            "mqtt": {
                "topic_prefix": "city-sensors",
                "discovery_prefix": "homeassistant",
                "client_id": "earshot-17",
            },
        },
    )
    assert config.device_id == "lamppost-17.north_ÄÖ"
    assert DetectorConfig(listen=("siren", "car_horn", "$odd")).listen[-1] == "$odd"  # '$' only matters first


def test_example_config_does_not_pin_one_device_id_for_every_sensor() -> None:
    text = (REPO / "deploy" / "config.example.toml").read_text()
    assert not re.search(r"^device_id\s*=", text, re.MULTILINE), "the example sets one device_id for all"
    assert not re.search(r"^client_id\s*=", text, re.MULTILINE)
