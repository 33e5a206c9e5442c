"""The model card: ``<name>.card.json`` beside ``<name>.onnx``, the file release tooling and the gate read."""

from __future__ import annotations

import json
import os
from datetime import datetime, timezone
from pathlib import Path

from edge_agent.model_card import card_path, file_sha256

LICENSE_NOTE = (  # a checkpoint that records no sources was trained on UrbanSound8K
    "Model weights trained on UrbanSound8K (Salamon, Jacoby & Bello, ACM MM 2014), "
    "licensed CC BY-NC 3.0: non-commercial use only, with attribution."
)
CARD_SCHEMA = "earshot-card/1"


def file_facts(path: Path) -> dict:
    """sha256 and size of a model file: what the agent re-checks before trusting a card."""
    return {"sha256": file_sha256(path), "size_bytes": path.stat().st_size}


def created_at() -> str:
    """UTC timestamp, second precision, ISO-8601 with Z."""
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def write_card(model_path: Path, card: dict) -> dict:
    """Write the card atomically beside the model; the file's own sha256/size are filled in here."""
    full = {
        "schema": CARD_SCHEMA,
        **file_facts(model_path),
        **card,
        "license": card.get("license") or LICENSE_NOTE,  # built from the training sources when known
        "created_at": created_at(),
    }
    full.pop("gate", None)  # the release gate adds its own record; an export never vouches for itself
    target = card_path(model_path)
    partial = target.with_name(target.name + f".{os.getpid()}.partial")
    partial.write_text(json.dumps(full, indent=2, sort_keys=False) + "\n")
    partial.replace(target)
    return full
