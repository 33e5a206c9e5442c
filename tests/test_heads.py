"""Sigmoid heads: the loss that trains them, the scores the agent reads, and the metadata that says which."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edge_agent.frontend import FrontendParams
from edge_agent.model_metadata import ModelMetadata
from edge_agent.onnx_model import label_scores
from training.heads import anchor_loss, label_loss
from training.heads import label_scores as torch_label_scores
from training.models import ModelConfig

LOGITS = torch.tensor([[2.0, -1.0, 0.5], [-3.0, 4.0, 0.0]])  # (batch, classes)


def test_sigmoid_loss_is_binary_cross_entropy_per_label_on_the_mixed_targets() -> None:
    soft = torch.tensor([[0.7, 0.3, 0.0], [0.0, 1.0, 0.0]])  # a mixup pair and a plain one-hot row
    expected = -(soft * torch.log(torch.sigmoid(LOGITS)) + (1 - soft) * torch.log(1 - torch.sigmoid(LOGITS)))
    torch.testing.assert_close(label_loss(LOGITS, soft, "sigmoid"), expected.mean())
    smoothed = soft * 0.9 + 0.1 / 3
    torch.testing.assert_close(
        label_loss(LOGITS, soft, "sigmoid", smoothing=0.1),
        torch.nn.functional.binary_cross_entropy_with_logits(LOGITS, smoothed),
    )
    torch.testing.assert_close(
        label_loss(LOGITS, soft, "softmax"), torch.nn.functional.cross_entropy(LOGITS, soft)
    )


@pytest.mark.parametrize("head", ["softmax", "sigmoid"])
def test_anchor_loss_is_smallest_where_the_tuned_scores_equal_the_anchors(head: str) -> None:
    logits = LOGITS.clone().requires_grad_(True)
    anchor_loss(logits, LOGITS, head).backward()
    assert logits.grad is not None
    torch.testing.assert_close(logits.grad, torch.zeros_like(LOGITS), atol=1e-6, rtol=0)
    moved = anchor_loss(LOGITS + torch.tensor([[1.0, 0.0, -1.0]]), LOGITS, head)
    assert moved > anchor_loss(LOGITS, LOGITS, head)


def test_agent_and_training_score_logits_alike() -> None:
    for head in ("softmax", "sigmoid"):
        np.testing.assert_allclose(
            label_scores(LOGITS.numpy(), head), torch_label_scores(LOGITS, head).numpy(), rtol=1e-6
        )
    sigmoid = label_scores(np.array([[-200.0, 0.0, 200.0]], dtype=np.float32), "sigmoid")
    np.testing.assert_allclose(sigmoid, [[0.0, 0.5, 1.0]], atol=1e-7)  # no overflow warning at the ends


def test_metadata_says_how_to_score_and_older_files_are_softmax() -> None:
    meta = ModelMetadata("m", "1", ("a", "b"), FrontendParams(), scoring="sigmoid")
    props = meta.to_props()
    assert ModelMetadata.from_props(props).scoring == "sigmoid"
    del props["earshot.scoring"]  # a model exported before the key existed
    assert ModelMetadata.from_props(props).scoring == "softmax"
    with pytest.raises(ValueError, match="earshot.scoring"):
        ModelMetadata.from_props({**props, "earshot.scoring": "relu"})


def test_an_unknown_head_is_refused_and_old_checkpoints_load_as_softmax() -> None:
    with pytest.raises(ValueError, match="head must be one of softmax, sigmoid"):
        ModelConfig("cnn", conv_channels=(4,), head="tanh")
    assert ModelConfig.from_dict({"arch": "cnn", "conv_channels": [4]}).head == "softmax"
