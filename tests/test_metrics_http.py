"""The metrics registry and a real HTTP scrape of /metrics and /healthz."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from edge_agent.http_server import start_http_server
from edge_agent.metrics import AgentMetrics

CONTRACT_METRICS = {
    "earshot_audio_seconds": "counter",
    "earshot_inference_latency_seconds": "histogram",
    "earshot_realtime_factor": "gauge",
    "earshot_ring_buffer_overruns": "counter",
    "earshot_audio_last_sample_timestamp_seconds": "gauge",
    "earshot_audio_source_errors": "counter",
    "earshot_detections": "counter",
    "earshot_last_score": "gauge",
    "earshot_last_detection_timestamp_seconds": "gauge",
    "earshot_mqtt_connected": "gauge",
    "earshot_delivery_latency_seconds": "histogram",
    "earshot_queue_depth": "gauge",
    "earshot_queue_dropped": "counter",
    "earshot_events_delivered": "counter",
    "earshot_delivery_failures": "counter",
    "earshot_model": "info",
    "earshot_model_ungated": "gauge",
    "earshot_model_reloads": "counter",
    "earshot_clip_write_failures": "counter",
    "earshot_sound_level_db": "gauge",
    "earshot_sound_level_calibrated": "gauge",
}


def _get(url: str) -> tuple[int, str, str]:
    """GET url; (status, content type, body) also for error statuses."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read().decode()


@pytest.fixture()
def metrics() -> AgentMetrics:
    """A fresh registry per test, so values never leak between cases."""
    return AgentMetrics(CollectorRegistry())


def test_every_contract_metric_is_defined_once_with_its_type(metrics: AgentMetrics) -> None:
    families = {family.name: family.type for family in metrics.registry.collect()}
    assert families == CONTRACT_METRICS


def test_scrape_over_http_reports_values(metrics: AgentMetrics) -> None:
    metrics.audio_seconds.inc(2.5)
    metrics.detections.labels(label="siren").inc()
    metrics.last_score.labels(label="siren").set(0.91)
    metrics.inference_latency.observe(0.003)
    metrics.model_info.info({"name": "tiny", "version": "1", "sha256": "ab" * 32})
    server = start_http_server(metrics, "127.0.0.1", 0, lambda: (True, "ok"))
    try:
        status, content_type, body = _get(f"http://127.0.0.1:{server.port}/metrics")
    finally:
        server.shutdown()
    assert status == 200 and content_type.startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(body)
        for s in family.samples
    }
    assert samples[("earshot_audio_seconds_total", ())] == 2.5
    assert samples[("earshot_detections_total", (("label", "siren"),))] == 1.0
    assert samples[("earshot_last_score", (("label", "siren"),))] == pytest.approx(0.91)
    assert samples[("earshot_inference_latency_seconds_count", ())] == 1.0
    assert samples[("earshot_model_info", (("name", "tiny"), ("sha256", "ab" * 32), ("version", "1")))] == 1.0
    assert not any(name.endswith("_created") for name, _ in samples)


def test_an_output_s_delivery_series_exist_at_zero_once_it_is_set_up(metrics: AgentMetrics) -> None:
    """Dashboards show 0, not "no data", for an output that has not delivered anything yet."""
    metrics.init_output("webhook")
    metrics.events_delivered.labels(output="mqtt").inc()
    value = metrics.registry.get_sample_value
    webhook = {"output": "webhook"}
    for name in (
        "earshot_queue_depth",
        "earshot_queue_dropped_total",
        "earshot_events_delivered_total",
        "earshot_delivery_failures_total",
        "earshot_delivery_latency_seconds_count",
    ):
        assert value(name, webhook) == 0, name
    assert value("earshot_events_delivered_total", {"output": "mqtt"}) == 1


def test_healthz_follows_the_health_check(metrics: AgentMetrics) -> None:
    state = {"healthy": True, "reason": "ok"}
    server = start_http_server(metrics, "127.0.0.1", 0, lambda: (state["healthy"], state["reason"]))
    try:
        assert _get(f"http://127.0.0.1:{server.port}/healthz")[::2] == (200, "ok\n")
        state.update(healthy=False, reason="audio stalled for 12.0 s")
        assert _get(f"http://127.0.0.1:{server.port}/healthz")[::2] == (503, "audio stalled for 12.0 s\n")
        assert _get(f"http://127.0.0.1:{server.port}/nope")[0] == 404
    finally:
        server.shutdown()


def test_a_crashing_health_check_is_a_503_not_a_dead_server(metrics: AgentMetrics) -> None:
    def broken() -> tuple[bool, str]:
        raise RuntimeError("boom")

    server = start_http_server(metrics, "127.0.0.1", 0, broken)
    try:
        status, _, body = _get(f"http://127.0.0.1:{server.port}/healthz")
        assert status == 503 and "boom" in body
        assert _get(f"http://127.0.0.1:{server.port}/metrics")[0] == 200
    finally:
        server.shutdown()


def test_binds_only_the_configured_host(metrics: AgentMetrics) -> None:
    server = start_http_server(metrics, "127.0.0.1", 0, lambda: (True, "ok"))
    try:
        assert server.server_address[0] == "127.0.0.1"
        other = _non_loopback_address()
        if other is None:
            pytest.skip("no non-loopback address on this machine")
        with pytest.raises(OSError):
            socket.create_connection((other, server.port), timeout=1).close()
    finally:
        server.shutdown()


def test_port_in_use_is_an_oserror(metrics: AgentMetrics) -> None:
    server = start_http_server(metrics, "127.0.0.1", 0, lambda: (True, "ok"))
    try:
        with pytest.raises(OSError):
            start_http_server(metrics, "127.0.0.1", server.port, lambda: (True, "ok"))
    finally:
        server.shutdown()


def _non_loopback_address() -> str | None:
    """This host's outward IPv4 address, if it has one (no packet is sent)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: connect() on UDP only picks a route
        except OSError:
            return None
        address = probe.getsockname()[0]
    return None if address.startswith("127.") else address
