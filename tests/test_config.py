"""The config tree: TOML -> env -> CLI precedence, one-line errors naming the key, secrets kept out."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from edge_agent.agent_cli import main as agent_main
from edge_agent.config import (
    AgentConfig,
    ConfigError,
    DetectorConfig,
    MqttConfig,
    QueueConfig,
    WebhookConfig,
    load_config,
)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "earshot.toml"
    path.write_text(text)
    return path


def test_defaults_match_the_documented_contract() -> None:
    config = load_config(environ={})
    assert config.audio.hop_seconds == 0.25
    assert config.model.threads == 1 and config.model.allow_ungated is False
    assert config.detector.listen == ("siren", "gun_shot")
    assert config.mqtt.url == "none" and not config.mqtt.enabled
    assert config.mqtt.qos == 1 and config.queue.max_events == 10000
    assert config.queue.dir == "~/.local/state/earshot/queue"
    assert config.webhook.url == "none" and not config.webhook.enabled and config.webhook.token is None
    assert config.stdout.enabled is True
    assert config.metrics.port is None and config.capture.enabled is False
    assert config.device_id


def test_toml_then_env_then_cli(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
device_id = "pole-17"
[audio]
hop_seconds = 0.5
block_size = 512
[detector]
listen = ["siren", "dog_bark"]
cooldown_s = 30
thresholds = { siren = 0.7 }
[mqtt]
url = "mqtt://broker.local:1884"
""",
    )
    env = {
        "EARSHOT_AUDIO_HOP_SECONDS": "0.1",
        "EARSHOT_DETECTOR_THRESHOLDS": "dog_bark=0.4",
        "EARSHOT_MQTT_DISCOVERY": "off",
        "EARSHOT_METRICS_PORT": "9108",
    }
    config = load_config(path, environ=env, overrides={"audio": {"hop_seconds": 0.2, "block_size": None}})
    assert config.device_id == "pole-17"
    assert config.audio.hop_seconds == 0.2  # CLI beats env beats TOML
    assert config.audio.block_size == 512  # a flag left out (None) does not override
    assert config.detector.listen == ("siren", "dog_bark")
    assert config.detector.cooldown_s == 30.0
    assert dict(config.detector.thresholds) == {"dog_bark": 0.4}  # env replaces the whole table
    assert config.mqtt.discovery is False and config.metrics.port == 9108
    assert (config.mqtt.host, config.mqtt.port, config.mqtt.tls) == ("broker.local", 1884, False)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[detector]\ncooldown_s = -1", "detector.cooldown_s: must be >= 0, got -1"),
        ("[detector]\ncooldwn_s = 1", "detector.cooldwn_s: unknown setting"),
        ("[audio]\nhop_seconds = 0", "audio.hop_seconds: must be in 0.01..60, got 0"),
        ("[audio]\nblock_size = 'big'", "audio.block_size: must be an integer, got 'big'"),
        (
            "[detector]\nconfirm_n = 3\nconfirm_m = 2",
            "detector.confirm_m: must be in confirm_n (3)..1000, got 2",
        ),
        ("[detector]\nthresholds = { siren = 1.5 }", "detector.thresholds.siren: must be in 0..1, got 1.5"),
        ("[mqtt]\nurl = 'http://x'", "mqtt.url: must be"),
        ("[mqtt]\nqos = 3", "mqtt.qos: must be 0, 1 or 2, got 3"),
        (
            "[mqtt]\nreconnect_min_s = 5.0\nreconnect_max_s = 1.0",
            "mqtt.reconnect_max_s: must be >= reconnect_min_s",
        ),
        ("[metrics]\nport = 70000", "metrics.port: must be in 0..65535, got 70000"),
        ("[queue]\nmax_events = 0", "queue.max_events: must be in 1..10000000, got 0"),
        ("[queue]\ndir = ' '", "queue.dir: must not be empty"),
        ("[queue]\nmax_event = 5", "queue.max_event: unknown setting"),
        ("[webhook]\nurl = 'ftp://hooks.local/earshot'", 'webhook.url: must be "none" or http(s)://'),
        ("[webhook]\nurl = 'https://hooks.local/a b'", "webhook.url: must be"),
        ("[webhook]\ntimeout_s = 0", "webhook.timeout_s: must be in 0..300, got 0"),
        ("[webhook]\nretry_min_s = 5.0\nretry_max_s = 1.0", "webhook.retry_max_s: must be >= retry_min_s"),
        ("[stdout]\nenabled = 'yes please'", "stdout.enabled: must be"),
        ("[tuning]\nx = 1", "tuning: unknown setting"),
        ("device_id = 'a/b'", "device_id: must be non-empty without"),
        ("[audio\n", "invalid TOML"),
    ],
)
def test_bad_values_give_one_line_naming_the_key(tmp_path: Path, toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, toml), environ={})
    assert message in str(caught.value)
    assert "\n" not in str(caught.value)


def test_bad_environment_values_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"^audio\.hop_seconds: must be a number, got 'fast'$"):
        load_config(environ={"EARSHOT_AUDIO_HOP_SECONDS": "fast"})
    with pytest.raises(ConfigError, match=r"^audio\.hopseconds: unknown setting"):
        load_config(environ={"EARSHOT_AUDIO_HOPSECONDS": "1"})
    with pytest.raises(ConfigError, match=r"^mqtt\.discovery: must be true or false"):
        load_config(environ={"EARSHOT_MQTT_DISCOVERY": "maybe"})
    # EARSHOT_* variables that name no section belong to other tools and are left alone.
    assert load_config(environ={"EARSHOT_DATA_DIR": "/x"}).audio.hop_seconds == 0.25


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="config file .*nope.toml"):
        load_config(tmp_path / "nope.toml", environ={})


# (section, secret key, its file key, the other settings of a section that uses it)
SECRETS = [
    ("mqtt", "password", "password_file", "url = 'mqtt://h:1883'\nusername = 'u'"),
    ("webhook", "token", "token_file", "url = 'https://hooks.local:8443/earshot'"),
]


@pytest.mark.parametrize(("section", "key", "file_key", "settings"), SECRETS, ids=["mqtt", "webhook"])
def test_secrets_never_from_toml_in_clear(
    tmp_path: Path, section: str, key: str, file_key: str, settings: str
) -> None:
    path = write(tmp_path, f"[{section}]\n{settings}\n{key} = 'hunter2'\n")
    refusal = (
        rf"^{section}\.{key}: secrets are not read from the config file; "
        rf"set EARSHOT_{section.upper()}_{key.upper()} or {section}\.{file_key}$"
    )
    with pytest.raises(ConfigError, match=refusal) as caught:
        load_config(path, environ={})
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(("section", "key", "file_key", "settings"), SECRETS, ids=["mqtt", "webhook"])
def test_secrets_from_env_or_file_and_hidden_from_repr(
    tmp_path: Path, section: str, key: str, file_key: str, settings: str
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("from-file\n")
    path = write(tmp_path, f"[{section}]\n{settings}\n{file_key} = '{secret}'\n")
    from_file = load_config(path, environ={})
    assert getattr(getattr(from_file, section), key) == "from-file"
    from_env = load_config(path, environ={f"EARSHOT_{section.upper()}_{key.upper()}": "from-env"})
    assert getattr(getattr(from_env, section), key) == "from-env"  # the environment wins over the file
    assert "from-env" not in repr(from_env) and "from-file" not in repr(from_file)
    missing = write(tmp_path, f"[{section}]\n{file_key} = '/nonexistent/secret'\n")
    with pytest.raises(ConfigError, match=rf"^{section}\.{file_key}: cannot read"):
        load_config(missing, environ={})


def test_a_webhook_token_with_a_control_character_is_refused_without_showing_it() -> None:
    with pytest.raises(ConfigError, match=r"^webhook\.token: must be non-empty") as caught:
        load_config(environ={"EARSHOT_WEBHOOK_TOKEN": "tok-with\nnewline"})
    assert "tok-with" not in str(caught.value)


@pytest.mark.parametrize(
    ("key", "value", "target"),
    [
        ("queue_dir", "'/var/lib/earshot/mqtt-queue'", "queue.dir"),
        ("queue_max_events", "5", "queue.max_events"),
    ],
)
def test_queue_settings_under_mqtt_say_where_they_moved(
    tmp_path: Path, key: str, value: str, target: str
) -> None:
    path = write(tmp_path, f"[mqtt]\nurl = 'mqtt://h:1883'\n{key} = {value}\n")
    with pytest.raises(ConfigError, match=rf"^mqtt\.{key}: moved to {target} \(") as caught:
        load_config(path, environ={})
    assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match=rf"^mqtt\.{key}: moved to {target} \("):
        load_config(environ={f"EARSHOT_MQTT_{key.upper()}": "5"})


def test_queue_section_from_toml_and_env(tmp_path: Path) -> None:
    path = write(tmp_path, "[queue]\ndir = '/var/lib/earshot/queue'\nmax_events = 500\n")
    assert load_config(path, environ={}).queue == QueueConfig(dir="/var/lib/earshot/queue", max_events=500)
    from_env = load_config(path, environ={"EARSHOT_QUEUE_MAX_EVENTS": "7", "EARSHOT_STDOUT_ENABLED": "off"})
    assert from_env.queue.max_events == 7 and from_env.stdout.enabled is False


def test_check_config_masks_the_webhook_token(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "[webhook]\nurl = 'https://hooks.local/earshot'\n")
    monkeypatch.setenv("EARSHOT_WEBHOOK_TOKEN", "tok-s3cret")
    assert agent_main(["--check-config", str(path)]) == 0
    out = capsys.readouterr().out
    resolved = json.loads(out)
    assert (
        resolved["webhook"]["token"] == "<set>"
        and resolved["webhook"]["url"] == "https://hooks.local/earshot"
    )
    assert "tok-s3cret" not in out
    monkeypatch.delenv("EARSHOT_WEBHOOK_TOKEN")
    assert agent_main(["--check-config", str(path)]) == 0
    assert json.loads(capsys.readouterr().out)["webhook"]["token"] is None


def test_config_is_immutable() -> None:
    config = AgentConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.audio.hop_seconds = 1.0  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.detector.thresholds["siren"] = 0.1  # type: ignore[index]


def test_sections_validate_when_built_directly() -> None:
    with pytest.raises(ConfigError, match="^mqtt.tls_key: tls_cert and tls_key must be set together"):
        MqttConfig(url="mqtts://h:8883", tls_cert="c.pem")
    with pytest.raises(ConfigError, match="^detector.listen: must name at least one label"):
        DetectorConfig(listen=())
    assert MqttConfig(url="mqtt://10.0.0.2").port == 1883 and MqttConfig(url="mqtts://h").port == 8883
    with pytest.raises(ConfigError, match=r"^webhook\.url: must be"):
        WebhookConfig(url="hooks.local/earshot")
    assert WebhookConfig(url="http://10.0.0.2:8080/hook").enabled
