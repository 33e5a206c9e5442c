"""Every per-class metric exists from the start (issue 11, item 8): a real scrape of a freshly built agent
pipeline shows every model label at 0, so dashboards show 0 rather than no data before a detection."""

from __future__ import annotations

import urllib.request
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from support.onnx_models import band_energy_model

from edge_agent.config import AgentConfig
from edge_agent.http_server import start_http_server
from edge_agent.metrics import AgentMetrics
from edge_agent.onnx_model import OnnxModel
from edge_agent.pipeline import Pipeline
from edge_agent.ring_buffer import RingBuffer


class UnstartedMic:
    """A live source the test never starts: the metrics must exist before any audio."""

    sample_rate, channels, dtype, description, live = 16000, 1, "int16", "unstarted mic", True

    def start(self, ring: RingBuffer) -> None:
        raise AssertionError("not started in this test")

    def stop(self) -> None:
        """Nothing to stop."""


PER_LABEL = ("earshot_detections_total", "earshot_last_detection_timestamp_seconds", "earshot_last_score")


def test_every_label_of_the_model_is_scraped_before_any_detection(tmp_path: Path) -> None:
    model = OnnxModel.load(band_energy_model(tmp_path / "tiny.onnx"), allow_ungated=True)
    metrics = AgentMetrics(CollectorRegistry())
    Pipeline(AgentConfig(device_id="metrics-test"), model, UnstartedMic(), metrics=metrics)
    server = start_http_server(metrics, "127.0.0.1", 0)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/metrics", timeout=5) as response:
            body = response.read().decode()
    finally:
        server.shutdown()
    samples = {
        (s.name, s.labels.get("label")): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    for name in PER_LABEL:
        missing = [label for label in model.labels if (name, label) not in samples]
        assert not missing, f"{name} has no series for {missing}"
        assert all(samples[(name, label)] == 0 for label in model.labels)
