"""Smoke test on the real shared UrbanSound8K subset and ESC-10 (skipped when ../shared/data is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edge_agent.frontend import FrontendParams
from edge_agent.labels import URBANSOUND8K_LABELS
from training.data import compute_features, folds_present, read_esc10_negatives, read_urbansound8k
from training.models import architecture
from training.train import TrainConfig, fit, predict_clips

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
US8K, ESC10 = SHARED / "urbansound8k-subset", SHARED / "esc10"
PARAMS = FrontendParams()

pytestmark = [
    pytest.mark.shared_data,
    pytest.mark.skipif(
        not (US8K / "metadata").is_dir() or not ESC10.is_dir(),
        reason="shared data not present at ../shared/data",
    ),
]


def _every_nth(records: list, fold: int, n: int) -> list:
    return [r for r in records if r.fold == fold][::n]


def test_shared_subset_layout_folds_and_classes() -> None:
    records = read_urbansound8k(US8K)
    assert folds_present(records) == [1, 2, 3, 10]
    assert len(records) == 2985
    assert {r.label for r in records} == set(range(len(URBANSOUND8K_LABELS)))
    negatives = read_esc10_negatives(ESC10)
    assert len(negatives) == 360 and "dog_bark" not in {r.group for r in negatives}


def test_real_clips_train_and_score_end_to_end() -> None:
    records = read_urbansound8k(US8K)
    train = compute_features(_every_nth(records, 1, 12) + _every_nth(records, 2, 12), PARAMS)
    test = compute_features(_every_nth(records, 10, 25), PARAMS)
    four_seconds = 1 + (4 * PARAMS.sample_rate - PARAMS.n_fft) // PARAMS.hop_length
    assert train.clip(0).shape == (PARAMS.n_mels, four_seconds)
    noise = compute_features(read_esc10_negatives(ESC10)[::40], PARAMS)
    cfg = TrainConfig(epochs=2, batch_size=16, crops_per_clip=1)
    fitted = fit(architecture("cnn", conv_channels=(4, 8)), train, test, noise, PARAMS, cfg, n_classes=10)
    scores = predict_clips(fitted.model, test, PARAMS, cfg.hop_frames, torch.device("cpu"))
    assert scores.shape == (len(test.records), 10)
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, atol=1e-5)
    assert len(fitted.history) == 2 and all(np.isfinite(h["train_loss"]) for h in fitted.history)
