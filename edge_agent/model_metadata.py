"""What an earshot ONNX file says about itself (``metadata_props``): written by export, read by the agent.

Values are strings in ONNX; structured ones are JSON. The agent hard-codes none of them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from edge_agent.frontend import FrontendParams

METADATA_SCHEMA = "earshot-model/1"
INPUT_NAME = "logmel"  # (batch, 1, n_mels, frames) float32 log-mel
OUTPUT_NAME = "logits"  # (batch, n_classes) float32, before the scoring activation
# How logits become label scores: one softmax over the labels, or an independent sigmoid per label.
# A model written before this key existed has no ``earshot.scoring``: it is softmax.
SCORINGS = ("softmax", "sigmoid")


@dataclass(frozen=True)
class ModelMetadata:
    """Labels, front-end and provenance carried inside the ONNX file."""

    name: str
    version: str
    labels: tuple[str, ...]
    frontend: FrontendParams
    thresholds: dict[str, float] = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    scoring: str = "softmax"

    def __post_init__(self) -> None:
        if self.scoring not in SCORINGS:
            raise ValueError(f"earshot.scoring must be one of {', '.join(SCORINGS)}, got {self.scoring!r}")

    def to_props(self) -> dict[str, str]:
        """Flatten to ONNX ``metadata_props`` (string -> string)."""
        return {
            "earshot.schema": METADATA_SCHEMA,
            "earshot.name": self.name,
            "earshot.version": self.version,
            "earshot.labels": json.dumps(list(self.labels)),
            "earshot.frontend": self.frontend.to_json(),
            "earshot.thresholds": json.dumps(self.thresholds, sort_keys=True),
            "earshot.metrics": json.dumps(self.metrics, sort_keys=True),
            "earshot.scoring": self.scoring,
        }

    @classmethod
    def from_props(cls, props: dict[str, str]) -> ModelMetadata:
        """Parse ``metadata_props``; ValueError naming the missing or bad key for a foreign model."""
        if props.get("earshot.schema") != METADATA_SCHEMA:
            raise ValueError(
                f"model has no earshot metadata (earshot.schema={props.get('earshot.schema')!r}); "
                "export it with 'earshot export'"
            )
        try:
            return cls(
                name=props["earshot.name"],
                version=props["earshot.version"],
                labels=tuple(json.loads(props["earshot.labels"])),
                frontend=FrontendParams.from_json(props["earshot.frontend"]),
                thresholds=json.loads(props.get("earshot.thresholds", "{}")),
                metrics=json.loads(props.get("earshot.metrics", "{}")),
                scoring=props.get("earshot.scoring", "softmax"),
            )
        except (KeyError, ValueError, TypeError) as error:
            raise ValueError(f"model metadata is incomplete or malformed: {error}") from error
