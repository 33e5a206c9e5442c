"""Sound levels in the running agent: the meter on the pipeline's audio, its Prometheus series, the
per-minute summary to the outputs, the level of each detection's window in its event, the noise alert,
and `earshot calibrate --spl` writing the offset that turns dBFS into dB SPL."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import time
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from support import mosquitto as broker_support
from support.mosquitto import Mosquitto, Subscriber, mosquitto_binary
from support.onnx_models import noise, siren_sweep, write_audio

from edge_agent.config import AgentConfig, AudioConfig, DetectorConfig, LevelsConfig, StdoutConfig
from edge_agent.levels import MinuteLevels, window_levels
from edge_agent.metrics import AgentMetrics
from edge_agent.noise_alert import NOISE_LABEL, NoiseAlert, in_window
from edge_agent.onnx_model import OnnxModel
from edge_agent.pipeline import Pipeline
from edge_agent.publishers import Publisher
from edge_agent.sources import open_source
from edge_agent.tools.spl_calibration import set_toml_value

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "edge_agent/schemas/event.schema.json").read_text())
RATE = 16000
mosquitto_broker = broker_support.mosquitto_broker  # the fixture: a real broker per test


class Recording(Publisher):
    """Keeps events and state reports."""

    name = "recording"

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.states: list[tuple[str, dict[str, Any]]] = []

    def publish_event(self, event: dict[str, Any], stream_sample: int) -> None:
        self.events.append(dict(event))

    def publish_state(self, kind: str, state: dict[str, Any]) -> None:
        self.states.append((kind, state))


def tone(seconds: float, dbfs: float, hz: float = 1000.0) -> np.ndarray:
    """A sine whose level is ``dbfs`` (a full-scale sine reads 0 dBFS)."""
    t = np.arange(int(seconds * RATE)) / RATE
    return (10 ** (dbfs / 20) * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def run(
    model: Path, audio: Path, levels: LevelsConfig, metrics: AgentMetrics | None = None
) -> tuple[Pipeline, Recording]:
    config = AgentConfig(
        device_id="level-pole",
        audio=AudioConfig(source=str(audio), fast=True),
        detector=DetectorConfig(end_after_s=1.0, cooldown_s=5.0),
        levels=levels,
        stdout=StdoutConfig(enabled=False),
    )
    recording = Recording()
    pipeline = Pipeline(
        config,
        OnnxModel.load(model),
        open_source(config.audio, RATE),
        metrics=metrics or AgentMetrics(),
        publishers=[recording],
    )
    assert pipeline.run() == 0
    return pipeline, recording


def test_a_calibrated_tone_reaches_the_gauges_histogram_and_minute_summary(
    tmp_path: Path, siren_model: Path
) -> None:
    audio = write_audio(tmp_path / "tone.flac", tone(61.5, -20.0, hz=300.0))
    metrics = AgentMetrics()
    _, recording = run(siren_model, audio, LevelsConfig(offset_db=114.0), metrics)
    sample = metrics.registry.get_sample_value
    assert sample("earshot_sound_level_calibrated") == 1
    a_300 = -7.09  # IEC 61672-1 A-weighting at 300 Hz (interpolated between 250 Hz -8.6 and 315 Hz -6.6)
    assert sample("earshot_sound_level_db", {"weighting": "A", "stat": "eq_1s"}) == pytest.approx(
        94 + a_300, abs=0.4
    )
    assert sample("earshot_sound_level_laeq_1s_db_count") == 61
    assert sample("earshot_sound_level_db", {"weighting": "C", "stat": "eq_1min"}) == pytest.approx(
        94.0, abs=0.1
    )
    ((kind, summary),) = [s for s in recording.states if s[0] == "level"]
    assert summary["schema"] == "earshot.level/1" and summary["device_id"] == "level-pole"
    assert summary["unit"] == "dB" and summary["calibrated"] is True and summary["period"] == "minute"
    assert summary["lceq"] == pytest.approx(94.0, abs=0.1)
    assert summary["la90"] <= summary["laeq"] <= summary["la10"] + 0.01 <= summary["lamax"] + 0.02
    assert summary["started_at"].endswith("Z") and summary["ended_at"] > summary["started_at"]


def test_without_calibration_levels_say_dbfs_and_gauges_start_as_nan(
    tmp_path: Path, siren_model: Path
) -> None:
    metrics = AgentMetrics()
    assert np.isnan(
        metrics.registry.get_sample_value("earshot_sound_level_db", {"weighting": "A", "stat": "eq_1s"})
    )
    audio = write_audio(tmp_path / "tone.flac", tone(2.0, -30.0))
    run(siren_model, audio, LevelsConfig(), metrics)
    assert metrics.registry.get_sample_value("earshot_sound_level_calibrated") == 0
    level = metrics.registry.get_sample_value("earshot_sound_level_db", {"weighting": "A", "stat": "eq_1s"})
    assert level == pytest.approx(-30.0, abs=0.1)


def test_each_detection_carries_the_level_of_its_window(tmp_path: Path, siren_model: Path) -> None:
    signal = noise(8.0, amplitude=0.02)
    signal[2 * RATE : 5 * RATE] += siren_sweep(3.0, amplitude=0.3)
    audio = write_audio(tmp_path / "street.wav", signal)
    windows: list[Any] = []
    config = AgentConfig(
        audio=AudioConfig(source=str(audio), fast=True),
        stdout=StdoutConfig(enabled=False),
        detector=DetectorConfig(end_after_s=1.0, cooldown_s=5.0),
    )
    recording = Recording()
    pipeline = Pipeline(
        config,
        OnnxModel.load(siren_model),
        open_source(config.audio, RATE),
        publishers=[recording],
        on_window=windows.append,
    )
    assert pipeline.run() == 0
    start = recording.events[0]
    jsonschema.validate(start, SCHEMA)
    deciding = next(w for w in windows if any(d.kind == "start" for d in w.detections))
    assert start["level"] == window_levels(deciding.window.samples, RATE).to_dict()
    assert start["level"]["unit"] == "dBFS" and start["level"]["laeq"] > -20.0  # the siren, not the noise


def test_levels_can_be_turned_off(tmp_path: Path, siren_model: Path) -> None:
    audio = write_audio(tmp_path / "tone.flac", tone(2.0, -30.0))
    pipeline, recording = run(siren_model, audio, LevelsConfig(enabled=False))
    assert pipeline.levels is None and [kind for kind, _ in recording.states if kind == "level"] == []


def test_the_noise_alert_opens_and_closes_an_episode_through_every_output(
    tmp_path: Path, siren_model: Path
) -> None:
    loud, quiet = tone(60.0, -10.0, hz=300.0), tone(60.0, -50.0, hz=300.0)
    audio = write_audio(tmp_path / "night.flac", np.concatenate([quiet, loud, loud, quiet, loud]))
    levels = LevelsConfig(alert_laeq_db=-25.0, alert_from="00:00", alert_to="00:00")  # all day
    _, recording = run(siren_model, audio, levels)
    alerts = [e for e in recording.events if e["label"] == NOISE_LABEL]
    assert [e["kind"] for e in alerts] == ["start", "end", "start", "end"]  # the last one ended by the flush
    for event in alerts:
        jsonschema.validate(event, SCHEMA)
        assert event["score"] == 1.0 and event["level"]["unit"] == "dBFS"
    assert alerts[0]["level"]["laeq"] == pytest.approx(-10.0 - 7.09, abs=0.4)


def minute(laeq: float, start_s: float = 0.0) -> MinuteLevels:
    return MinuteLevels(start_s, start_s + 60, laeq, laeq + 3, laeq + 2, laeq - 2, laeq + 1, True)


def test_the_noise_alert_only_fires_inside_its_window_which_may_wrap_midnight() -> None:
    assert in_window(time(23, 30), time(22, 0), time(7, 0)) and in_window(
        time(6, 59), time(22, 0), time(7, 0)
    )
    assert not in_window(time(7, 0), time(22, 0), time(7, 0)) and not in_window(
        time(12, 0), time(22, 0), time(7, 0)
    )
    assert in_window(time(12, 0), time(9, 0), time(17, 0)) and in_window(time(3, 0), time(0, 0), time(0, 0))
    alert = NoiseAlert(LevelsConfig(alert_laeq_db=60.0))
    assert alert.update(minute(70.0), time(12, 0)) == []  # loud, but daytime
    (start,) = alert.update(minute(70.0, 60), time(22, 1))
    assert start.kind == "start" and start.started_at == 60 and alert.active
    assert alert.update(minute(75.0, 120), time(22, 2)) == []  # still loud: the episode goes on
    (end,) = alert.update(minute(50.0, 180), time(22, 3))
    assert end.kind == "end" and (end.started_at, end.ended_at) == (60, 180) and not alert.active
    assert alert.update(minute(70.0, 240), time(7, 5)) == []  # the window closed


def test_set_toml_value_replaces_or_adds_and_keeps_the_rest() -> None:
    text = "# site 12\n[mqtt]\nurl = 'mqtt://b:1883'\n\n[levels]\nalert_laeq_db = 55\noffset_db = 100.0\n"
    updated = set_toml_value(text, "levels", "offset_db", "113.90")
    assert updated == text.replace("offset_db = 100.0", "offset_db = 113.90")
    added = set_toml_value("[mqtt]\nurl = 'none'\n", "levels", "offset_db", "113.90")
    assert added == "[mqtt]\nurl = 'none'\n\n[levels]\noffset_db = 113.90\n"
    inserted = set_toml_value(
        "[levels]\nenabled = true\n[queue]\ndir = '/q'\n", "levels", "offset_db", "1.00"
    )
    assert inserted == "[levels]\noffset_db = 1.00\nenabled = true\n[queue]\ndir = '/q'\n"


def calibrate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "calibrate", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def test_calibrate_spl_writes_the_offset_and_the_agent_then_reads_db_spl(tmp_path: Path) -> None:
    recording = write_audio(
        tmp_path / "calibrator.wav", tone(8.0, -20.0) + noise(8.0, amplitude=1e-4), sample_rate=RATE
    )
    config = tmp_path / "config.toml"
    config.write_text("[detector]\nconfirm_n = 2\n")
    result = calibrate("--spl", "94", "--source", str(recording), "--config", str(config), "--seconds", "6")
    assert result.returncode == 0, result.stderr
    assert "offset 114.0" in result.stdout
    from edge_agent.config import load_config

    assert load_config(config, environ={}).levels.offset_db == pytest.approx(114.0, abs=0.1)


def test_calibrate_spl_refuses_what_is_not_a_calibrator_in_one_line(tmp_path: Path) -> None:
    wrong = write_audio(tmp_path / "500hz.wav", tone(8.0, -20.0, hz=500.0))
    result = calibrate("--spl", "94", "--source", str(wrong), "--seconds", "6")
    assert result.returncode == 2 and result.stderr.startswith("earshot calibrate: calibration refused:")
    assert len(result.stderr.strip().splitlines()) == 1
    bad = calibrate("--spl", "500", "--source", str(wrong))
    assert bad.returncode == 2 and "--spl" in bad.stderr


@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")
def test_levels_reach_a_real_broker_with_their_home_assistant_sensor(
    tmp_path: Path, siren_model: Path, mosquitto_broker: Mosquitto
) -> None:
    audio = write_audio(tmp_path / "tone.flac", tone(61.0, -20.0))
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "EARSHOT_DEVICE_ID": "level-pole",
        "EARSHOT_QUEUE_DIR": str(tmp_path / "queue"),
        "EARSHOT_LEVELS_OFFSET_DB": "114",
    }
    agent = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "agent",
            "--source",
            str(audio),
            "--fast",
            "--model",
            str(siren_model),
            "--mqtt",
            mosquitto_broker.url,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert agent.returncode == 0, agent.stderr[-2000:]
    level_topic = "earshot/level-pole/level"
    config_topic = "homeassistant/sensor/earshot_level-pole/sound_level/config"
    subscriber = Subscriber(mosquitto_broker.port, [level_topic, config_topic], client_id="level-test")
    try:
        received = subscriber.wait_for(lambda ms: {m.topic for m in ms} == {level_topic, config_topic})
    finally:
        subscriber.close()
    by_topic = {m.topic: m for m in received}
    summary = json.loads(by_topic[level_topic].payload)
    assert by_topic[level_topic].retain and summary["schema"] == "earshot.level/1"
    assert (
        summary["laeq"] == pytest.approx(94.0, abs=0.1) and summary["unit"] == "dB" and summary["calibrated"]
    )
    sensor = json.loads(by_topic[config_topic].payload)
    assert sensor["device_class"] == "sound_pressure" and sensor["unit_of_measurement"] == "dBA"
    assert sensor["state_topic"] == level_topic and sensor["value_template"] == "{{ value_json.laeq }}"
