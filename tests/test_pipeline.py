"""The whole pipeline on real files and a real model: events on stdout (schema-valid), publisher calls,
metrics, end-of-stream flush, graceful stop, stalled-audio health and source failures."""

from __future__ import annotations

import io
import json
import os
import threading
import time
from datetime import datetime
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from support.onnx_models import noise, siren_sweep, write_audio

from edge_agent.config import AgentConfig, AudioConfig, DetectorConfig
from edge_agent.metrics import AgentMetrics
from edge_agent.onnx_model import OnnxModel
from edge_agent.pipeline import Pipeline
from edge_agent.publishers.base import Publisher
from edge_agent.publishers.stdout import StdoutPublisher
from edge_agent.ring_buffer import RingBuffer
from edge_agent.sources import StdinSource, open_source

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "edge_agent/schemas/event.schema.json"
SCHEMA = json.loads(SCHEMA_PATH.read_text())


class RecordingPublisher(Publisher):
    """Stands in for MQTT here (the real broker path is tested in test_agent_cli and test_mqtt*)."""

    name = "recording"

    def __init__(self) -> None:
        self.events: list[dict] = []
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def publish_event(self, event: dict, stream_sample: int) -> None:
        self.events.append(event)

    def close(self, timeout: float = 5.0) -> None:
        self.calls.append("close")


class SilentDevice:
    """A live source whose device delivers nothing (a stalled microphone)."""

    sample_rate, channels, dtype, description, live = 16000, 1, "int16", "silent device", True

    def start(self, ring: RingBuffer) -> None:
        self.ring = ring

    def stop(self) -> None:
        self.ring.close()


def street(tmp_path: Path, siren_at: float = 2.0, siren_s: float = 3.0, total: float = 8.0) -> Path:
    signal = noise(total, amplitude=0.05)
    start = int(siren_at * 16000)
    signal[start : start + int(siren_s * 16000)] += siren_sweep(siren_s)
    return write_audio(tmp_path / "street.wav", signal)


def make_pipeline(
    model_path: Path, source_path: str, fast: bool = True, publisher: Publisher | None = None, **kwargs
):
    """A pipeline whose stdout output writes to the returned buffer; ``publisher`` is a second output."""
    config = AgentConfig(
        device_id="test-pole",
        audio=AudioConfig(source=source_path, fast=fast),
        detector=DetectorConfig(end_after_s=1.0, cooldown_s=5.0),
    )
    model = OnnxModel.load(model_path)
    out = io.StringIO()
    publishers = [StdoutPublisher(out)] + ([publisher] if publisher is not None else [])
    pipeline = Pipeline(config, model, open_source(config.audio, 16000), publishers=publishers, **kwargs)
    return pipeline, out


def test_a_siren_gives_schema_valid_start_and_end_on_stdout_and_to_the_publisher(
    tmp_path: Path, siren_model: Path
) -> None:
    publisher, metrics = RecordingPublisher(), AgentMetrics()
    pipeline, out = make_pipeline(siren_model, str(street(tmp_path)), publisher=publisher, metrics=metrics)
    assert pipeline.run() == 0
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["label"], e["kind"]) for e in events] == [("siren", "start"), ("siren", "end")]
    for event in events:
        jsonschema.validate(event, SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        assert event["device_id"] == "test-pole" and event["model"]["sha256"] == pipeline.model.sha256
        assert event["top_k"][0]["label"] == "siren"
    assert publisher.events == events  # exactly what was printed, in order
    assert publisher.calls == ["start", "close"]  # the pipeline started and closed its outputs
    start, end = events
    assert start["started_at"] == end["started_at"] and end["ended_at"] > end["started_at"]
    registry = metrics.registry
    assert registry.get_sample_value("earshot_audio_seconds_total") == pytest.approx(8.0)
    assert registry.get_sample_value("earshot_detections_total", {"label": "siren"}) == 1.0
    windows = registry.get_sample_value("earshot_inference_latency_seconds_count")
    assert windows == pytest.approx((8.0 - 1.0) / 0.256 + 1, abs=1.5)
    assert 0 <= registry.get_sample_value("earshot_last_score", {"label": "siren"}) < 0.5  # noise at the end


def test_start_time_is_close_to_the_sound_onset(tmp_path: Path, siren_model: Path) -> None:
    pipeline, out = make_pipeline(siren_model, str(street(tmp_path, siren_at=2.0)))
    pipeline.run()
    start = json.loads(out.getvalue().splitlines()[0])
    started = datetime.fromisoformat(start["started_at"].replace("Z", "+00:00")).timestamp()
    delay = started - pipeline.clock_origin - 2.0  # stream seconds after the onset
    assert 0 < delay <= 1.0 + 0.256 * 2  # window + N-of-M confirmation hops


def test_end_of_stream_ends_an_open_episode(tmp_path: Path, siren_model: Path) -> None:
    pipeline, out = make_pipeline(siren_model, str(street(tmp_path, siren_at=5.0, siren_s=3.0, total=8.0)))
    assert pipeline.run() == 0
    kinds = [json.loads(line)["kind"] for line in out.getvalue().splitlines()]
    assert kinds == ["start", "end"]


def test_stop_mid_stream_is_graceful(tmp_path: Path, siren_model: Path) -> None:
    pipeline, out = make_pipeline(siren_model, str(street(tmp_path, siren_at=0.0, siren_s=8.0)), fast=False)
    runner = threading.Thread(target=lambda: setattr(pipeline, "code", pipeline.run()))
    runner.start()
    deadline = time.monotonic() + 10
    while "start" not in out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.05)
    pipeline.stop()
    runner.join(5.0)
    assert not runner.is_alive() and pipeline.code == 0
    kinds = [json.loads(line)["kind"] for line in out.getvalue().splitlines()]
    assert kinds == ["start", "end"]  # the open episode is closed on shutdown
    assert pipeline.windower.samples_received < 8 * 16000  # it stopped before the file's end


def test_health_reports_a_stalled_live_source(siren_model: Path) -> None:
    config = AgentConfig(audio=AudioConfig(source="mic"))
    pipeline = Pipeline(config, OnnxModel.load(siren_model), SilentDevice(), stall_after_s=0.2)
    runner = threading.Thread(target=pipeline.run)
    runner.start()
    assert pipeline.health() == (True, "ok")
    time.sleep(0.4)
    healthy, reason = pipeline.health()
    pipeline.stop()
    runner.join(5.0)
    assert not healthy and reason.startswith("audio stalled: no samples for")


def test_source_failure_fails_the_run_and_is_counted(tmp_path: Path, siren_model: Path) -> None:
    path = write_audio(tmp_path / "cut.flac", noise(4.0, amplitude=0.3))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] + bytes(range(256)) * 16 + data[len(data) // 2 :])
    metrics = AgentMetrics()
    pipeline, _ = make_pipeline(siren_model, str(path), metrics=metrics)
    assert pipeline.run() == 1
    assert pipeline.error.startswith(f"cannot read file {path}")
    assert pipeline.health()[0] is False
    assert metrics.registry.get_sample_value("earshot_audio_source_errors_total") == 1.0


def test_overruns_reach_the_metric(tmp_path: Path, siren_model: Path) -> None:
    metrics = AgentMetrics()
    pipeline, _ = make_pipeline(siren_model, str(street(tmp_path)), metrics=metrics)
    pipeline.ring.write(np.zeros((pipeline.ring.capacity, 1), np.float32))  # silence before the file
    pipeline.ring.write(np.zeros((1, 1), np.float32))  # full: dropped and counted
    pipeline.run()
    assert metrics.registry.get_sample_value("earshot_ring_buffer_overruns_total") == 1.0
    assert pipeline.lost_seconds == 1 / 16000  # the stream clock skips what was lost


def test_a_closed_stdout_does_not_stop_detection(tmp_path: Path, siren_model: Path) -> None:
    publisher = RecordingPublisher()
    pipeline, out = make_pipeline(siren_model, str(street(tmp_path)), publisher=publisher)
    out.close()  # like `earshot agent ... | head -1` once head has exited
    assert pipeline.run() == 0 and pipeline.error is None
    assert [e["kind"] for e in publisher.events] == ["start", "end"]


def test_a_stdin_pipe_that_stops_delivering_is_a_stall(siren_model: Path) -> None:
    """``arecord | earshot agent --source -``: a capture process that hangs turns /healthz 503."""
    read_end, write_end = os.pipe()
    os.write(write_end, np.zeros(1600, dtype="<i2").tobytes())  # 0.1 s, then nothing more
    source = StdinSource(16000, 1, 256, stream=os.fdopen(read_end, "rb", buffering=0))
    config = AgentConfig(device_id="test-pole", audio=AudioConfig(source="-"))
    pipeline = Pipeline(config, OnnxModel.load(siren_model), source, stall_after_s=0.2)
    runner = threading.Thread(target=pipeline.run)
    runner.start()
    time.sleep(0.5)
    healthy, reason = pipeline.health()
    pipeline.stop()
    os.close(write_end)  # EOF lets the reader thread finish
    runner.join(5.0)
    assert not healthy and reason.startswith("audio stalled: no samples for")
