"""Build deploy/grafana/earshot-dashboard.json from the agent's metric names (run after changing a panel).

    python deploy/grafana/make_dashboard.py        # rewrites earshot-dashboard.json beside this file

Panels are described as (title, kind, queries, unit) rows; the JSON Grafana wants is generated, so that
twenty panels do not repeat forty lines of boilerplate each.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "earshot-dashboard.json"
SEL = 'instance=~"$instance"'
DS = {"type": "prometheus", "uid": "${datasource}"}
WIDTH, HEIGHT = 24, 8


def q(expr: str, legend: str = "{{instance}}") -> dict[str, str]:
    """One PromQL query and its legend."""
    return {"expr": expr, "legend": legend}


def quantiles(metric: str, per: str = "") -> list[dict[str, str]]:
    """p50/p95/p99 of a histogram over 5 minutes, per instance (and per label ``per``, e.g. output)."""
    by = f"le, instance, {per}" if per else "le, instance"
    legend = f"{{{{{per}}}}} {{{{instance}}}}" if per else "{{instance}}"
    return [
        q(
            f"histogram_quantile({p}, sum by ({by}) (rate({metric}_bucket{{{SEL}}}[5m])))",
            f"p{int(p * 100)} {legend}",
        )
        for p in (0.5, 0.95, 0.99)
    ]


def level(weighting: str, stat: str) -> str:
    """One sound-level gauge series."""
    return f'earshot_sound_level_db{{weighting="{weighting}", stat="{stat}", {SEL}}}'


# (title, panel type, queries, unit, width, thresholds): rows are laid out left to right, top to bottom.
PANELS: list[tuple[str, str, list[dict[str, str]], str, int, list[tuple[float, str]]]] = [
    ("Agent up", "stat", [q(f'up{{job="earshot", {SEL}}}')], "none", 4, [(0, "red"), (1, "green")]),
    (
        "Real-time factor",
        "stat",
        [q(f"earshot_realtime_factor{{{SEL}}}")],
        "percentunit",
        4,
        [(0, "green"), (0.5, "orange"), (0.8, "red")],
    ),
    (
        "Seconds since last audio",
        "stat",
        [q(f"time() - earshot_audio_last_sample_timestamp_seconds{{{SEL}}}")],
        "s",
        4,
        [(0, "green"), (10, "orange"), (60, "red")],
    ),
    (
        "MQTT connected",
        "stat",
        [q(f"earshot_mqtt_connected{{{SEL}}}")],
        "none",
        4,
        [(0, "red"), (1, "green")],
    ),
    (
        "Queue depth",
        "stat",
        [q(f"earshot_queue_depth{{{SEL}}}", "{{output}} {{instance}}")],
        "short",
        4,
        [(0, "green"), (10, "orange"), (1000, "red")],
    ),
    ("Model ungated", "stat", [q(f"earshot_model_ungated{{{SEL}}}")], "none", 4, [(0, "green"), (1, "red")]),
    (
        "Real-time factor over time",
        "timeseries",
        [q(f"earshot_realtime_factor{{{SEL}}}")],
        "percentunit",
        12,
        [(0, "green"), (0.8, "red")],
    ),
    (
        "Inference latency per window",
        "timeseries",
        quantiles("earshot_inference_latency_seconds"),
        "s",
        12,
        [],
    ),
    (
        "Detections per class (per 5 min)",
        "timeseries",
        [q(f"sum by (label) (increase(earshot_detections_total{{{SEL}}}[5m]))", "{{label}}")],
        "short",
        12,
        [],
    ),
    (
        "Last score per class",
        "timeseries",
        [q(f"earshot_last_score{{{SEL}}}", "{{label}} {{instance}}")],
        "percentunit",
        12,
        [],
    ),
    (
        "Last heard per class",
        "table",
        [
            q(
                f"max by (instance, label) (earshot_last_detection_timestamp_seconds{{{SEL}}}) * 1000",
                "{{label}}",
            )
        ],
        "dateTimeFromNow",
        8,
        [],
    ),
    (
        "Detections per class (total, range)",
        "bargauge",
        [q(f"sum by (label) (increase(earshot_detections_total{{{SEL}}}[$__range]))", "{{label}}")],
        "short",
        8,
        [],
    ),
    (
        "Audio processed (s/s)",
        "timeseries",
        [q(f"rate(earshot_audio_seconds_total{{{SEL}}}[5m])")],
        "none",
        8,
        [],
    ),
    (
        "Delivery latency per output",
        "timeseries",
        quantiles("earshot_delivery_latency_seconds", per="output"),
        "s",
        8,
        [],
    ),
    (
        "Events delivered, dropped and failed attempts per output (per 5 min)",
        "timeseries",
        [
            q(f"increase(earshot_events_delivered_total{{{SEL}}}[5m])", "delivered {{output}} {{instance}}"),
            q(f"increase(earshot_queue_dropped_total{{{SEL}}}[5m])", "dropped {{output}} {{instance}}"),
            q(
                f"increase(earshot_delivery_failures_total{{{SEL}}}[5m])",
                "failed attempts {{output}} {{instance}}",
            ),
        ],
        "short",
        8,
        [],
    ),
    (
        "MQTT connection and queue depth per output",
        "timeseries",
        [
            q(f"earshot_mqtt_connected{{{SEL}}}", "mqtt connected {{instance}}"),
            q(f"earshot_queue_depth{{{SEL}}}", "queued {{output}} {{instance}}"),
        ],
        "short",
        8,
        [],
    ),
    (
        "Ring-buffer overruns and audio errors (per 5 min)",
        "timeseries",
        [
            q(f"increase(earshot_ring_buffer_overruns_total{{{SEL}}}[5m])", "overruns {{instance}}"),
            q(f"increase(earshot_audio_source_errors_total{{{SEL}}}[5m])", "source errors {{instance}}"),
        ],
        "short",
        12,
        [],
    ),
    (
        "Model",
        "table",
        [
            q(f"max by (instance, name, version, sha256) (earshot_model_info{{{SEL}}})", "{{name}}"),
            q(f"sum by (instance, result) (earshot_model_reloads_total{{{SEL}}})", "reloads {{result}}"),
        ],
        "none",
        12,
        [],
    ),
    (
        "Sound level, 1 s (dB SPL when calibrated, else dBFS)",
        "timeseries",
        [q(level("A", "eq_1s"), "LAeq,1s {{instance}}"), q(level("A", "fmax_1s"), "LAFmax {{instance}}")],
        "dB",
        12,
        [],
    ),
    (
        "Sound level per minute",
        "timeseries",
        [
            q(level("A", "eq_1min"), "LAeq,1min {{instance}}"),
            q(level("A", "l10_1min"), "LA10 {{instance}}"),
            q(level("A", "l90_1min"), "LA90 {{instance}}"),
            q(level("C", "eq_1min"), "LCeq,1min {{instance}}"),
        ],
        "dB",
        12,
        [],
    ),
    (
        "Level distribution (1-s LAeq per 5 min)",
        "heatmap",
        [q(f"sum by (le) (increase(earshot_sound_level_laeq_1s_db_bucket{{{SEL}}}[5m]))", "{{le}}")],
        "short",
        18,
        [],
    ),
    (
        "Levels calibrated",
        "stat",
        [q(f"earshot_sound_level_calibrated{{{SEL}}}")],
        "none",
        6,
        [(0, "orange"), (1, "green")],
    ),
]


def thresholds(steps: list[tuple[float, str]]) -> dict[str, Any]:
    """Grafana threshold steps; the first step's value is the base (null)."""
    if not steps:
        steps = [(0, "green")]
    built = [{"color": color, "value": None if i == 0 else value} for i, (value, color) in enumerate(steps)]
    return {"mode": "absolute", "steps": built}


def panel(index: int, row: tuple, x: int, y: int) -> dict[str, Any]:
    """One Grafana panel at grid position (x, y)."""
    title, kind, queries, unit, width, steps = row
    targets = [
        {
            "refId": chr(ord("A") + i),
            "datasource": DS,
            "expr": t["expr"],
            "legendFormat": t["legend"],
            "instant": kind in ("table", "bargauge"),
            "range": kind not in ("table", "bargauge"),
        }
        for i, t in enumerate(queries)
    ]
    result: dict[str, Any] = {
        "id": index + 1,
        "type": kind,
        "title": title,
        "datasource": DS,
        "targets": targets,
        "gridPos": {"x": x, "y": y, "w": width, "h": 4 if kind == "stat" else HEIGHT},
        "fieldConfig": {"defaults": {"unit": unit, "thresholds": thresholds(steps)}, "overrides": []},
        "options": {},
    }
    if kind == "stat":
        result["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "colorMode": "background"}
    if kind == "table":
        result["transformations"] = [{"id": "merge"}]
    if kind == "heatmap":  # Prometheus' cumulative buckets, drawn as a distribution over time
        for target in targets:
            target["format"] = "heatmap"
        result["options"] = {"calculate": False, "yAxis": {"unit": "dB"}, "cellGap": 1}
    return result


def layout(rows: list[tuple]) -> list[dict[str, Any]]:
    """Place panels left to right, wrapping at the grid width."""
    panels, x, y, row_height = [], 0, 0, 0
    for index, row in enumerate(rows):
        if x + row[4] > WIDTH:
            x, y, row_height = 0, y + row_height, 0
        built = panel(index, row, x, y)
        panels.append(built)
        x += row[4]
        row_height = max(row_height, built["gridPos"]["h"])
    return panels


def dashboard() -> dict[str, Any]:
    """The whole dashboard, with datasource and instance variables."""
    instance = {
        "name": "instance",
        "type": "query",
        "datasource": DS,
        "label": "Sensor",
        "query": {"query": 'label_values(up{job="earshot"}, instance)', "refId": "instance"},
        "definition": 'label_values(up{job="earshot"}, instance)',
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"text": "All", "value": "$__all"},
    }
    source = {"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}
    return {
        "uid": "earshot-agent",
        "title": "earshot sensors",
        "tags": ["earshot", "audio", "edge"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "30s",
        "timezone": "utc",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": [source, instance]},
        "annotations": {"list": []},
        "panels": layout(PANELS),
    }


def main() -> int:
    """Write the dashboard JSON."""
    OUT.write_text(json.dumps(dashboard(), indent=2) + "\n", encoding="utf-8")
    print(f"wrote {OUT}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
