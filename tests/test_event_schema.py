"""The event JSON Schema (draft 2020-12) accepts contract events and rejects malformed ones."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from support.mosquitto import contract_event

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "edge_agent/schemas/event.schema.json"


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    return jsonschema.Draft202012Validator(schema, format_checker=checker)


def test_schema_is_draft_2020_12_and_versioned() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["schema"] == {"const": "earshot.event/1"}


@pytest.mark.parametrize("kind", ["start", "end"])
def test_contract_events_are_valid(validator: jsonschema.Draft202012Validator, kind: str) -> None:
    validator.validate(contract_event(kind=kind))


def _mutations() -> dict[str, tuple[str, object]]:
    """name -> (key, bad value); a value of ... deletes the key."""
    return {
        "missing model": ("model", ...),
        "unknown version": ("schema", "earshot.event/2"),
        "not a uuid4": ("event_id", "1234"),
        "kind": ("kind", "middle"),
        "score above 1": ("score", 1.2),
        "empty top_k": ("top_k", []),
        "naive time": ("started_at", "2026-01-01T00:00:00"),
        "local offset": ("started_at", "2026-01-01T01:00:00+01:00"),
        "start with an end": ("ended_at", "2026-01-01T00:00:02Z"),
        "topic chars in label": ("label", "siren/#"),
        "short sha256": ("model", {"name": "m", "version": "1", "sha256": "abc"}),
        "extra field": ("raw_audio", "AAAA"),
    }


@pytest.mark.parametrize("name", list(_mutations()))
def test_malformed_events_are_rejected(validator: jsonschema.Draft202012Validator, name: str) -> None:
    key, value = _mutations()[name]
    event = contract_event(kind="start")
    if value is ...:
        del event[key]
    else:
        event[key] = value
    assert not validator.is_valid(event), name


def test_end_event_needs_its_end_time(validator: jsonschema.Draft202012Validator) -> None:
    event = contract_event(kind="end")
    event["ended_at"] = None
    assert not validator.is_valid(event)
