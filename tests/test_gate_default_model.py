"""CI's own release gate: the embedded default model must pass the shipped policy on the real data.

Runs under ``.ci/run`` (the whole suite) when ../shared/data is present, on a class-balanced sample of
the held-out clips so CI stays within minutes; the release pipeline gates on all of them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.gate.cli import DEFAULT_POLICY, main
from edge_agent.model_card import card_path

ROOT = Path(__file__).resolve().parents[1]
CI_CLIPS = "150"  # ~85 attacked clips at 58 % accuracy: above the policy's min_attacked_clips (60)


def default_models() -> list[Path]:
    """Embedded ONNX models that carry a card naming their source checkpoint."""
    models = []
    for model in sorted((ROOT / "edge_agent" / "models").glob("*.onnx")):
        card = card_path(model)
        if card.is_file() and "source_checkpoint" in json.loads(card.read_text()):
            models.append(model)
    return models


@pytest.mark.shared_data
@pytest.mark.slow
def test_default_model_passes_the_shipped_policy(shared_data, tmp_path):
    models = default_models()
    if not models:
        pytest.skip("no embedded default model with a card in edge_agent/models/")
    model = models[0]
    source = Path(json.loads(card_path(model).read_text())["source_checkpoint"].get("path", ""))
    checkpoint = source if source.is_absolute() else card_path(model).parent / source
    if not checkpoint.is_file():
        pytest.skip(f"the default model's source checkpoint {source} is not in this checkout")
    # Gate a copy: CI must not rewrite the committed card.
    for path in (model, card_path(model)):
        (tmp_path / path.name).write_bytes(path.read_bytes())
    # Judged on its held-out fold, or for a model trained on every fold on its validation split.
    code = main(
        [
            str(tmp_path / model.name),
            "--checkpoint",
            str(checkpoint),
            "--data-root",
            str(shared_data / "urbansound8k-subset"),
            "--policy",
            str(DEFAULT_POLICY),
            "--report",
            str(tmp_path / "report"),
            "--max-clips",
            CI_CLIPS,
            "--threads",
            "1",
        ]
    )
    assert code == 0, (tmp_path / "report" / "report.md").read_text()
