"""What the gate judges: an ONNX model with its card and source checkpoint, or a bare checkpoint."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from edge_agent.frontend import LogMel
from edge_agent.model_card import card_path, file_sha256, verified_card
from edge_agent.onnx_model import OnnxModel
from training.checkpoint import Checkpoint, load_checkpoint

logger = logging.getLogger(__name__)

QUANTISED_OPS = {"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DequantizeLinear"}


class OnnxClassifier:
    """The shipped model as the agent runs it: numpy log-mel, then the agent's own ``OnnxModel``."""

    def __init__(self, path: Path, threads: int = 1) -> None:
        self.model = OnnxModel.load(path, threads, verify_card=False)  # resolve_target checks the card
        self.metadata = self.model.metadata
        self.frontend = LogMel(self.metadata.frontend)
        ops = {node.op_type for node in onnx.load(str(path), load_external_data=False).graph.node}
        self.quantised = bool(ops & QUANTISED_OPS)

    def logits(self, windows: np.ndarray, batch: int = 64) -> np.ndarray:
        """(n, samples) float32 -> (n, classes) logits."""
        out = [
            self.model.logits(self.frontend(windows[i : i + batch])) for i in range(0, len(windows), batch)
        ]
        return np.concatenate(out) if out else np.zeros((0, len(self.metadata.labels)), np.float32)


@dataclass
class Target:
    """The model under judgement and the PyTorch checkpoint its adversarial examples are computed on."""

    model_path: Path
    model_sha256: str
    checkpoint_path: Path
    checkpoint: Checkpoint
    card_path: Path | None = None
    card: dict | None = None
    onnx: OnnxClassifier | None = None  # the file judged: the model that ships
    int8: OnnxClassifier | None = None  # the INT8 model: the file judged, or its INT8 twin named in the card
    int8_path: Path | None = None


def _read_card(model_path: Path, model_sha: str) -> tuple[Path, dict]:
    """The card beside the model, which must exist and match the file (the agent's own tamper check)."""
    card = verified_card(model_path, model_sha)
    if card is None:
        raise ValueError(
            f"{model_path} has no model card (expected {card_path(model_path)}); "
            "export it with 'earshot export'"
        )
    return card_path(model_path), card


def _source_checkpoint(card: dict, card_file: Path, override: Path | None) -> Path:
    source = card.get("source_checkpoint")
    if not isinstance(source, dict) or "sha256" not in source:
        raise ValueError(f"model card {card_file} lacks source_checkpoint {{path, sha256}}")
    path = override
    if path is None:
        path = Path(str(source.get("path", "")))
        if not path.is_absolute() and not path.is_file():
            path = card_file.parent / path  # a card travels with its model; resolve beside it
    if not path.is_file():
        raise ValueError(f"source checkpoint not found: {path} (pass it with --checkpoint)")
    actual = file_sha256(path)
    if actual != source["sha256"]:
        raise ValueError(
            f"checkpoint {path} is not the one this model was exported from "
            f"(sha256 {actual[:12]}..., card says {str(source['sha256'])[:12]}...)"
        )
    return path


def _check_agreement(onnx_model: OnnxClassifier, checkpoint: Checkpoint, model_path: Path) -> None:
    if tuple(onnx_model.metadata.labels) != tuple(checkpoint.labels):
        raise ValueError(f"{model_path} and its checkpoint disagree on the labels")
    if onnx_model.metadata.frontend != checkpoint.frontend:
        raise ValueError(f"{model_path} and its checkpoint disagree on the front-end parameters")


def _int8_twin(card: dict, card_file: Path) -> Path | None:
    """Export ships FP32 where INT8 is slower and names the INT8 file as ``twin``; verify it if present."""
    twin = card.get("twin")
    if not isinstance(twin, dict) or twin.get("precision") != "int8":
        return None
    path = card_file.parent / str(twin.get("path", ""))
    if not path.is_file():
        logger.warning("the card names INT8 twin %s but it is absent", path)
        return None
    if file_sha256(path) != twin.get("sha256"):
        raise ValueError(f"INT8 twin {path} does not match the sha256 in {card_file} (tampered?)")
    return path


def resolve_target(model: str | Path, checkpoint: str | Path | None = None) -> Target:
    """Load and cross-check everything the gate needs; ValueError with a one-line reason otherwise."""
    model_path = Path(model)
    if not model_path.is_file():
        raise ValueError(f"model not found: {model_path}")
    model_sha = file_sha256(model_path)
    override = Path(checkpoint) if checkpoint is not None else None
    if model_path.suffix != ".onnx":
        if override is not None:
            raise ValueError("--checkpoint is only for an ONNX model; the model given is a checkpoint itself")
        return Target(model_path, model_sha, model_path, load_checkpoint(model_path))
    card_file, card = _read_card(model_path, model_sha)
    checkpoint_path = _source_checkpoint(card, card_file, override)
    loaded = load_checkpoint(checkpoint_path)
    onnx_model = OnnxClassifier(model_path)
    _check_agreement(onnx_model, loaded, model_path)
    target = Target(model_path, model_sha, checkpoint_path, loaded, card_file, card, onnx_model)
    if onnx_model.quantised:
        target.int8, target.int8_path = onnx_model, model_path
    elif (twin := _int8_twin(card, card_file)) is not None:
        target.int8, target.int8_path = OnnxClassifier(twin), twin
        _check_agreement(target.int8, loaded, twin)
    return target
