"""The one output interface: what make_publishers builds from the config, in which order, and how the
pipeline treats its outputs (every output gets every event, a failing output costs the others nothing,
an unhealthy output makes /healthz unhealthy)."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from test_pipeline import street

from edge_agent.config import (
    AgentConfig,
    AudioConfig,
    CaptureConfig,
    DetectorConfig,
    MqttConfig,
    QueueConfig,
    StdoutConfig,
    WebhookConfig,
)
from edge_agent.metrics import AgentMetrics
from edge_agent.onnx_model import OnnxModel
from edge_agent.pipeline import Pipeline
from edge_agent.publishers import Publisher, make_publishers
from edge_agent.sources import open_source

MODEL = {"name": "tiny", "version": "1", "sha256": "0" * 64}


class Recording(Publisher):
    """Keeps what the pipeline hands it."""

    name = "recording"

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self.samples_heard = 0
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def hear(self, samples: Any) -> None:
        self.samples_heard += len(samples)

    def publish_event(self, event: dict[str, Any], stream_sample: int) -> None:
        self.events.append(dict(event))

    def close(self, timeout: float = 5.0) -> None:
        self.calls.append("close")


class Broken(Recording):
    """An output whose every publish fails, and that reports itself unhealthy."""

    name = "broken"

    def publish_event(self, event: dict[str, Any], stream_sample: int) -> None:
        raise OSError("disk on fire")

    def health(self) -> tuple[bool, str]:
        return False, "cannot store events"


def test_make_publishers_builds_every_configured_output_capture_first(tmp_path: Path) -> None:
    config = AgentConfig(
        device_id="pole-7",
        mqtt=MqttConfig(url="mqtt://127.0.0.1:1"),
        webhook=WebhookConfig(url="http://127.0.0.1:1/hook"),
        queue=QueueConfig(dir=str(tmp_path / "queue")),
        capture=CaptureConfig(enabled=True, dir=str(tmp_path / "clips")),
    )
    publishers = make_publishers(config, 16000, MODEL, AgentMetrics(CollectorRegistry()))
    assert [p.name for p in publishers] == ["capture", "stdout", "mqtt", "webhook"]
    assert sorted(p.name for p in (tmp_path / "queue").glob("*.sqlite3")) == [
        "earshot_pole-7.mqtt.sqlite3",
        "earshot_pole-7.webhook.sqlite3",
    ]
    for publisher in publishers:
        publisher.close(0.1)


def test_defaults_are_stdout_only_and_stdout_can_be_turned_off() -> None:
    metrics = AgentMetrics(CollectorRegistry())
    assert [p.name for p in make_publishers(AgentConfig(), 16000, MODEL, metrics)] == ["stdout"]
    quiet = AgentConfig(stdout=StdoutConfig(enabled=False))
    assert make_publishers(quiet, 16000, MODEL, metrics) == []


def test_a_failing_output_costs_the_others_nothing_and_turns_health_red(
    tmp_path: Path, siren_model: Path
) -> None:
    config = AgentConfig(
        device_id="test-pole",
        audio=AudioConfig(source=str(street(tmp_path)), fast=True),
        detector=DetectorConfig(end_after_s=1.0, cooldown_s=5.0),
    )
    out, broken, recording = io.StringIO(), Broken(), Recording()
    publishers = [broken, *make_publishers(config, 16000, MODEL, AgentMetrics(), out=out), recording]
    pipeline = Pipeline(
        config, OnnxModel.load(siren_model), open_source(config.audio, 16000), publishers=publishers
    )
    assert pipeline.run() == 0
    printed = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["kind"] for e in recording.events] == ["start", "end"] and recording.events == printed
    assert recording.calls == ["start", "close"] and broken.calls == ["start", "close"]
    assert recording.samples_heard == pipeline.windower.samples_received
    assert pipeline.health() == (False, "broken: cannot store events")
