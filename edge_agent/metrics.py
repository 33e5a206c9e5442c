"""The agent's Prometheus metrics, defined once; names follow docs/CONTRACTS.md."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

# The *_created series double the scrape size on a Pi and no dashboard or alert rule uses them.
disable_created_metrics()

# Per-window inference on a Pi takes a few ms; the tail past 100 ms means the model cannot keep up.
INFERENCE_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
# Publish latency is event creation -> PUBACK; minutes-long outages are drained from the disk queue.
PUBLISH_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class AgentMetrics:
    """Every earshot_* metric, registered in one registry (a fresh one per test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.audio_seconds = Counter(
            "earshot_audio_seconds_total", "Seconds of audio processed", registry=r)
        self.inference_latency = Histogram(
            "earshot_inference_latency_seconds", "Per-window front-end + model time",
            buckets=INFERENCE_BUCKETS_S, registry=r)
        self.realtime_factor = Gauge(
            "earshot_realtime_factor", "Processing time / audio time (recent)", registry=r)
        self.overruns = Counter(
            "earshot_ring_buffer_overruns_total", "Audio blocks dropped because the ring buffer was full",
            registry=r)
        self.audio_last_sample_ts = Gauge(
            "earshot_audio_last_sample_timestamp_seconds", "Unix time of the last audio block received",
            registry=r)
        self.audio_source_errors = Counter(
            "earshot_audio_source_errors_total", "Audio source failures (device lost, read errors)",
            registry=r)
        self.detections = Counter(
            "earshot_detections_total", "Detection start events", ["label"], registry=r)
        self.last_score = Gauge(
            "earshot_last_score", "Most recent score per label", ["label"], registry=r)
        self.last_detection_ts = Gauge(
            "earshot_last_detection_timestamp_seconds", "Unix time of the last detection start per label",
            ["label"], registry=r)
        self._define_mqtt(r)
        self._define_model(r)

    def _define_mqtt(self, r: CollectorRegistry) -> None:
        """MQTT connection, latency and the on-disk queue."""
        self.mqtt_connected = Gauge(
            "earshot_mqtt_connected", "1 while connected to the MQTT broker", registry=r)
        self.mqtt_publish_latency = Histogram(
            "earshot_mqtt_publish_latency_seconds", "Event creation to broker acknowledgement",
            buckets=PUBLISH_BUCKETS_S, registry=r)
        self.mqtt_queue_depth = Gauge(
            "earshot_mqtt_queue_depth", "Events waiting in the on-disk queue", registry=r)
        self.mqtt_queue_dropped = Counter(
            "earshot_mqtt_queue_dropped_total", "Events dropped (queue full or disk full)", registry=r)
        self.mqtt_events_published = Counter(
            "earshot_mqtt_events_published_total", "Events acknowledged by the broker", registry=r)

    def _define_model(self, r: CollectorRegistry) -> None:
        """Which model runs, whether it passed the gate, and reloads."""
        # Info "earshot_model" is exposed as earshot_model_info{name,version,sha256} 1.
        self.model_info = Info("earshot_model", "The loaded model", registry=r)
        self.model_ungated = Gauge(
            "earshot_model_ungated", "1 when the model runs without a passing gate record", registry=r)
        self.model_reloads = Counter(
            "earshot_model_reloads_total", "Model reload attempts", ["result"], registry=r)
        for result in ("ok", "failed"):
            self.model_reloads.labels(result=result)
