"""The agent's Prometheus metrics, defined once; names follow docs/CONTRACTS.md."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, disable_created_metrics

# The *_created series double the scrape size on a Pi and no dashboard or alert rule uses them.
disable_created_metrics()

# Per-window inference on a Pi takes a few ms; the tail past 100 ms means the model cannot keep up.
INFERENCE_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0)
# Delivery latency is event creation -> PUBACK or HTTP 2xx; minutes-long outages drain from the disk queue.
PUBLISH_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
# 1-s LAeq distribution: 5 dB steps over a street's range, in dB SPL when calibrated, else in dBFS.
LEVEL_BUCKETS_SPL_DB = tuple(float(db) for db in range(30, 125, 5))
LEVEL_BUCKETS_DBFS = tuple(float(db) for db in range(-100, 5, 5))
# (weighting, stat) of every sound-level gauge: exported as NaN until the meter has measured it. The
# order is that of the values level_reporting sets: (LAeq, LAFmax) a second, (LAeq, LAmax, LA10, LA90,
# LCeq) a minute.
SECOND_LEVEL_STATS = (("A", "eq_1s"), ("A", "fmax_1s"))
MINUTE_LEVEL_STATS = (
    ("A", "eq_1min"),
    ("A", "max_1min"),
    ("A", "l10_1min"),
    ("A", "l90_1min"),
    ("C", "eq_1min"),
)
LEVEL_STATS = SECOND_LEVEL_STATS + MINUTE_LEVEL_STATS


class AgentMetrics:
    """Every earshot_* metric, registered in one registry (a fresh one per test)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.audio_seconds = Counter("earshot_audio_seconds_total", "Seconds of audio processed", registry=r)
        self.inference_latency = Histogram(
            "earshot_inference_latency_seconds",
            "Per-window front-end + model time",
            buckets=INFERENCE_BUCKETS_S,
            registry=r,
        )
        self.realtime_factor = Gauge(
            "earshot_realtime_factor", "Processing time / audio time (recent)", registry=r
        )
        self.overruns = Counter(
            "earshot_ring_buffer_overruns_total",
            "Audio blocks dropped because the ring buffer was full",
            registry=r,
        )
        self.audio_last_sample_ts = Gauge(
            "earshot_audio_last_sample_timestamp_seconds",
            "Unix time of the last audio block received",
            registry=r,
        )
        self.audio_source_errors = Counter(
            "earshot_audio_source_errors_total",
            "Audio source failures (device lost, read errors)",
            registry=r,
        )
        self.clip_write_failures = Counter(
            "earshot_clip_write_failures_total",
            "Clips that could not be written (read-only or full disk)",
            registry=r,
        )
        self.detections = Counter("earshot_detections_total", "Detection start events", ["label"], registry=r)
        self.last_score = Gauge("earshot_last_score", "Most recent score per label", ["label"], registry=r)
        self.last_detection_ts = Gauge(
            "earshot_last_detection_timestamp_seconds",
            "Unix time of the last detection start per label",
            ["label"],
            registry=r,
        )
        self._define_delivery(r)
        self._define_model(r)
        self._define_levels(r)

    def _define_delivery(self, r: CollectorRegistry) -> None:
        """Per output (``output`` label: mqtt, webhook): the durable queue, deliveries and their latency."""
        self.mqtt_connected = Gauge(
            "earshot_mqtt_connected", "1 while connected to the MQTT broker", registry=r
        )
        self.delivery_latency = Histogram(
            "earshot_delivery_latency_seconds",
            "Event creation to the output's acknowledgement",
            ["output"],
            buckets=PUBLISH_BUCKETS_S,
            registry=r,
        )
        self.queue_depth = Gauge(
            "earshot_queue_depth", "Events waiting in the output's on-disk queue", ["output"], registry=r
        )
        self.queue_dropped = Counter(
            "earshot_queue_dropped_total",
            "Events lost (queue full, disk full, or refused for good)",
            ["output"],
            registry=r,
        )
        self.events_delivered = Counter(
            "earshot_events_delivered_total", "Events acknowledged by the output", ["output"], registry=r
        )
        self.delivery_failures = Counter(
            "earshot_delivery_failures_total",
            "Delivery attempts that failed and will be retried",
            ["output"],
            registry=r,
        )

    def init_labels(self, labels: Sequence[str]) -> None:
        """Create every class's series at 0, so dashboards show 0 rather than no data before a detection."""
        for label in labels:
            for metric in (self.detections, self.last_score, self.last_detection_ts):
                metric.labels(label=label)

    def init_output(self, output: str) -> None:
        """Create an output's series at 0, so dashboards show 0 rather than no data before the first event."""
        for metric in (
            self.queue_depth,
            self.queue_dropped,
            self.events_delivered,
            self.delivery_failures,
            self.delivery_latency,
        ):
            metric.labels(output=output)

    def _define_model(self, r: CollectorRegistry) -> None:
        """Which model runs, whether it passed the gate, and reloads."""
        # Info "earshot_model" is exposed as earshot_model_info{name,version,sha256} 1.
        self.model_info = Info("earshot_model", "The loaded model", registry=r)
        self.model_ungated = Gauge(
            "earshot_model_ungated", "1 when the model runs without a passing gate record", registry=r
        )
        self.model_reloads = Counter(
            "earshot_model_reloads_total", "Model reload attempts", ["result"], registry=r
        )
        for result in ("ok", "failed"):
            self.model_reloads.labels(result=result)

    def _define_levels(self, r: CollectorRegistry) -> None:
        """Sound levels (edge_agent/levels.py); ``define_level_histogram`` adds the 1-s LAeq histogram."""
        self.sound_level = Gauge(
            "earshot_sound_level_db",
            "Latest sound level: dB SPL when calibrated, else dBFS",
            ["weighting", "stat"],
            registry=r,
        )
        for weighting, stat in LEVEL_STATS:
            self.sound_level.labels(weighting=weighting, stat=stat).set(float("nan"))
        self.sound_level_calibrated = Gauge(
            "earshot_sound_level_calibrated",
            "1 when levels are dB SPL (calibrated), 0 when dBFS-relative",
            registry=r,
        )
        self.level_histogram: Histogram | None = None

    def define_level_histogram(self, calibrated: bool) -> Histogram:
        """The 1-s LAeq histogram, with buckets for dB SPL or dBFS (known once the config is): once."""
        if self.level_histogram is None:
            buckets = LEVEL_BUCKETS_SPL_DB if calibrated else LEVEL_BUCKETS_DBFS
            self.level_histogram = Histogram(
                "earshot_sound_level_laeq_1s_db",
                "Distribution of 1-s LAeq (dB SPL when calibrated, else dBFS)",
                buckets=buckets,
                registry=self.registry,
            )
            self.sound_level_calibrated.set(1 if calibrated else 0)
        return self.level_histogram
