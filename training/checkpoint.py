"""Self-describing checkpoints: weights plus everything needed to rebuild, export and judge the model."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from edge_agent.frontend import FrontendParams
from training.models import AudioClassifier, ModelConfig, build_model

CHECKPOINT_FORMAT = "earshot-checkpoint/1"


@dataclass
class Checkpoint:
    """A trained model and its provenance; ``save``/``load_checkpoint`` round-trip it."""

    model_config: ModelConfig
    frontend: FrontendParams
    labels: tuple[str, ...]
    state_dict: dict
    fold: int | None = None  # held-out test fold, None when trained on every fold
    metrics: dict = field(default_factory=dict)
    train_config: dict = field(default_factory=dict)
    thresholds: dict[str, float] = field(default_factory=dict)  # suggested per-class score thresholds
    sources: list[dict] = field(default_factory=list)  # training sources and licences (training/licences.py)
    # Recordings (group ids) of an all-folds model's validation split: export and the gate judge on them.
    # Recorded because a split drawn over several sources cannot be rebuilt from UrbanSound8K alone.
    validation_groups: list[str] = field(default_factory=list)

    def build(self) -> AudioClassifier:
        """Rebuild the classifier with its weights, in eval mode."""
        model = build_model(self.model_config, n_mels=self.frontend.n_mels, n_classes=len(self.labels))
        model.load_state_dict(self.state_dict)
        return model.eval()

    def save(self, path: str | Path) -> None:
        """Write atomically, so an interrupted run never leaves a half-written checkpoint behind."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": CHECKPOINT_FORMAT,
            "model_config": self.model_config.to_dict(),
            "frontend": self.frontend.to_json(),
            "labels": list(self.labels),
            "state_dict": self.state_dict,
            "fold": self.fold,
            "metrics": self.metrics,
            "train_config": self.train_config,
            "thresholds": self.thresholds,
            "sources": self.sources,
            "validation_groups": self.validation_groups,
        }
        partial = path.with_suffix(path.suffix + ".partial")
        torch.save(payload, partial)
        partial.replace(path)


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by ``Checkpoint.save``; a clear ValueError for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a corrupt or foreign file
        raise ValueError(f"{path} is not a readable checkpoint: {error}") from error
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not an earshot checkpoint (expected format {CHECKPOINT_FORMAT})")
    return Checkpoint(
        model_config=ModelConfig.from_dict(payload["model_config"]),
        frontend=FrontendParams.from_json(payload["frontend"]),
        labels=tuple(payload["labels"]),
        state_dict=payload["state_dict"],
        fold=payload.get("fold"),
        metrics=payload.get("metrics", {}),
        train_config=payload.get("train_config", {}),
        thresholds=payload.get("thresholds", {}),
        sources=payload.get("sources", []),
        validation_groups=payload.get("validation_groups", []),
    )
