"""Thresholds chosen after training, shipped in the model: a TOML file as ``earshot evaluate --calibrate``
writes it (``[detector.thresholds]``, each line's comment saying how many hours it rests on)."""

from __future__ import annotations

from pathlib import Path

import tomllib

from edge_agent.model_card import file_sha256


def read_thresholds(path: Path, labels: tuple[str, ...]) -> dict[str, float]:
    """``{label: threshold}`` from ``path``; ValueError naming the file for a bad label or value."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise ValueError(f"cannot read thresholds from {path}: {error}") from None
    table = data.get("detector", {}).get("thresholds", data.get("thresholds"))
    if not isinstance(table, dict) or not table:
        raise ValueError(f"{path} has no [detector.thresholds] table")
    thresholds = {}
    for label, value in table.items():
        if label not in labels:
            raise ValueError(f"{path}: {label!r} is not one of the model's labels ({', '.join(labels)})")
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 < value <= 1.0:
            raise ValueError(f"{path}: threshold of {label} must be a number in (0, 1], got {value!r}")
        thresholds[label] = float(value)
    return thresholds


def threshold_provenance(path: Path) -> dict:
    """Where shipped thresholds came from: the file, its sha256 and its comment lines (the hours)."""
    notes = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if "#" in line]
    return {"file": str(path), "sha256": file_sha256(path), "notes": notes}
