"""The model card beside an ONNX file: tamper check and release-gate check, before the model is loaded.

``<name>.card.json`` sits next to ``<name>.onnx``. A card whose ``sha256`` differs from the file's is
refused outright (the file was changed after export). A model runs only with a ``gate`` record that
passed for exactly this sha256, unless the operator allows ungated models; no card means ungated.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class ModelCardError(ValueError):
    """The card refuses the model (tampered, ungated, unreadable); one-line message."""


@dataclass(frozen=True)
class CardCheck:
    """The verdict on one model file."""

    sha256: str
    card: dict[str, Any] | None
    gated: bool
    reason: str  # why it is ungated ("" when gated)


def file_sha256(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (OSError when it cannot be read)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def card_path(model_path: str | Path) -> Path:
    """``<name>.card.json`` beside ``<name>.onnx``."""
    model_path = Path(model_path)
    return model_path.with_name(model_path.stem + ".card.json")


def read_card(model_path: str | Path) -> dict[str, Any] | None:
    """The parsed card, or None when there is none; ModelCardError when it is unreadable."""
    path = card_path(model_path)
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelCardError(f"model card {path} is unreadable: {error}") from None
    if not isinstance(card, dict):
        raise ModelCardError(f"model card {path} is not a JSON object")
    return card


def gate_problem(card: dict[str, Any] | None, sha256: str) -> str:
    """Why the card does not show a passing gate for ``sha256`` ("" when it does)."""
    if card is None:
        return "no model card"
    gate = card.get("gate")
    if not isinstance(gate, dict):
        return "the card has no gate record"
    if gate.get("passed") is not True:
        return "the release gate did not pass"
    if gate.get("sha256") != sha256:
        return "the gate record is for a different file (sha256 mismatch)"
    return ""


def verified_card(model_path: str | Path, sha256: str) -> dict[str, Any] | None:
    """The card (None when there is none), refused when it was written for other bytes than ``sha256``."""
    card = read_card(model_path)
    if card is not None and card.get("sha256") != sha256:
        raise ModelCardError(
            f"model {model_path} does not match its card {card_path(model_path).name}: file sha256 "
            f"{sha256[:12]}..., card says {str(card.get('sha256'))[:12]}...; refusing a modified model"
        )
    return card


def check_card(model_path: str | Path, sha256: str, allow_ungated: bool) -> CardCheck:
    """Refuse a tampered model always, and an ungated one unless allowed (then warn)."""
    card = verified_card(model_path, sha256)
    problem = gate_problem(card, sha256)
    if problem and not allow_ungated:
        raise ModelCardError(
            f"model {model_path} is not cleared to run: {problem}; "
            "run 'earshot gate' on it, or pass --allow-ungated to run it anyway"
        )
    if problem:
        logger.warning(
            "running ungated model %s (%s) because ungated models are allowed", model_path, problem
        )
    return CardCheck(sha256=sha256, card=card, gated=not problem, reason=problem)
