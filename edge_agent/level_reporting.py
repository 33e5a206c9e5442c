"""Sound levels beside the detections: the level meter on the consumer thread and where its results go.

Every second: the Prometheus gauges and the 1-s LAeq histogram. Every minute: a summary for the outputs
(``publish_state("level", ...)``: MQTT's ``<prefix>/<device>/level``, Home Assistant's sound-level sensor)
and the optional noise alert. On demand: the LAeq and LAFmax of a detection's own window, for its event.
Levels run on stream time; audio lost to ring-buffer overruns is not counted in it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np

from edge_agent.config import LevelsConfig
from edge_agent.detector import Detection
from edge_agent.events import utc_iso
from edge_agent.levels import LevelMeter, Levels, MinuteLevels, SecondLevels, WindowLevels, WindowMeter
from edge_agent.metrics import MINUTE_LEVEL_STATS, SECOND_LEVEL_STATS, AgentMetrics
from edge_agent.noise_alert import NoiseAlert

LEVEL_SCHEMA = "earshot.level/1"


@dataclass
class LevelReport:
    """What one block of audio completed: minute summaries for the outputs, noise-alert detections."""

    summaries: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[tuple[Detection, dict[str, Any]]] = field(default_factory=list)  # (detection, level block)


class SoundLevels:
    """The meter, its metrics and the noise alert; ``unix_time`` maps stream seconds to Unix time."""

    def __init__(
        self,
        config: LevelsConfig,
        rate: int,
        device_id: str,
        metrics: AgentMetrics,
        unix_time: Callable[[float], float],
    ) -> None:
        self.device_id = device_id
        self.meter = LevelMeter(rate, config.offset_db)
        self.window_meter = WindowMeter(rate, config.offset_db)
        self.alert = NoiseAlert(config) if config.alert_laeq_db is not None else None
        self.unix_time = unix_time
        gauge = metrics.sound_level.labels
        self._second_gauges = tuple(gauge(weighting=w, stat=stat) for w, stat in SECOND_LEVEL_STATS)
        self._minute_gauges = tuple(gauge(weighting=w, stat=stat) for w, stat in MINUTE_LEVEL_STATS)
        self._histogram = metrics.define_level_histogram(self.meter.calibrated)
        self._last_level: dict[str, Any] = {}  # the latest minute's level block (the noise alert's)

    def hear(self, samples: np.ndarray) -> LevelReport:
        """Model-rate audio in stream order -> what it completed (mostly nothing: seconds are long)."""
        report = LevelReport()
        for result in self.meter.process(samples):
            self._observe(result, report)
        return report

    def window(self, samples: np.ndarray) -> dict[str, Any]:
        """The ``level`` block of a detection event: LAeq and LAFmax of the window that decided it."""
        return self.window_meter.measure(samples).to_dict()

    def flush(self, now: float) -> list[tuple[Detection, dict[str, Any]]]:
        """End of stream: the noise alert's open episode ends now."""
        if self.alert is None:
            return []
        return [(detection, self._last_level) for detection in self.alert.flush(now)]

    def _observe(self, result: Levels, report: LevelReport) -> None:
        """Metrics for every result; a summary (and the alert's verdict) for every minute."""
        if isinstance(result, SecondLevels):
            for gauge, value in zip(self._second_gauges, (result.laeq, result.lafmax), strict=True):
                gauge.set(value)
            self._histogram.observe(result.laeq)
            return
        for gauge, value in zip(
            self._minute_gauges,
            (result.laeq, result.lamax, result.la10, result.la90, result.lceq),
            strict=True,
        ):
            gauge.set(value)
        report.summaries.append(self.summary(result))
        # The minute's LAeq and LAmax, in the shape of a detection's window level.
        self._last_level = WindowLevels(result.laeq, result.lamax, result.calibrated).to_dict()
        if self.alert is not None:
            local = datetime.fromtimestamp(self.unix_time(result.end_s)).time()
            report.alerts.extend((d, self._last_level) for d in self.alert.update(result, local))

    def summary(self, minute: MinuteLevels) -> dict[str, Any]:
        """The per-minute JSON (``earshot.level/1``) published on the level topic."""
        levels = minute.to_dict()
        del levels["start_s"], levels["end_s"]
        return {
            "schema": LEVEL_SCHEMA,
            "device_id": self.device_id,
            "started_at": utc_iso(self.unix_time(minute.start_s)),
            "ended_at": utc_iso(self.unix_time(minute.end_s)),
            **levels,
        }
