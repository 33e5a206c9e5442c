"""The versioned event (``earshot.event/1``, edge_agent/schemas/event.schema.json) built from a detection."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from edge_agent.detector import Detection

EVENT_SCHEMA = "earshot.event/1"


@dataclass(frozen=True)
class ModelRef:
    """Which model produced an event."""

    name: str
    version: str
    sha256: str


def utc_iso(timestamp: float) -> str:
    """Unix seconds -> UTC ISO-8601 with milliseconds and a Z suffix."""
    moment = datetime.fromtimestamp(timestamp, tz=timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def make_event(detection: Detection, device_id: str, model: ModelRef, clock_origin: float) -> dict[str, Any]:
    """A JSON-ready event; detector times are stream seconds, ``clock_origin`` is their Unix time zero."""
    return {
        "schema": EVENT_SCHEMA,
        "event_id": str(uuid.uuid4()),
        "device_id": device_id,
        "label": detection.label,
        "kind": detection.kind,
        "score": round(min(1.0, max(0.0, detection.score)), 6),
        "top_k": [
            {"label": label, "score": round(min(1.0, max(0.0, score)), 6)} for label, score in detection.top_k
        ],
        "started_at": utc_iso(clock_origin + detection.started_at),
        "ended_at": None if detection.ended_at is None else utc_iso(clock_origin + detection.ended_at),
        "model": {"name": model.name, "version": model.version, "sha256": model.sha256},
    }


def to_json_line(event: dict[str, Any]) -> str:
    """One compact JSON line (no newline), as printed on stdout and sent over MQTT."""
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)
