"""How a model's logits become label scores, and the losses that train them: one home for the head.

- ``softmax``: one distribution over the labels (an open-set model's ``other`` competes with the rest);
  trained with cross-entropy.
- ``sigmoid``: an independent yes/no per label, trained with binary cross-entropy on the same (mixup)
  targets. A clip of ``other`` teaches every alert head "not me" without taking score away from a
  sound that is a siren *and* something else; scores need not sum to 1.

The agent applies the same activation (``edge_agent.onnx_model.label_scores``), told by the model's
metadata (``earshot.scoring``).
"""

from __future__ import annotations

import torch
from torch import nn

HEADS = ("softmax", "sigmoid")


def label_scores(logits: torch.Tensor, head: str) -> torch.Tensor:
    """(batch, classes) logits -> (batch, classes) scores in [0, 1]."""
    return torch.sigmoid(logits) if head == "sigmoid" else torch.softmax(logits, dim=1)


def label_loss(logits: torch.Tensor, soft: torch.Tensor, head: str, smoothing: float = 0.0) -> torch.Tensor:
    """Mean loss of (batch, classes) logits against (batch, classes) soft targets (rows sum to 1)."""
    if head == "sigmoid":
        # The same smoothing as cross-entropy's: each label keeps smoothing / classes of the mass.
        target = soft * (1.0 - smoothing) + smoothing / soft.shape[1]
        return nn.functional.binary_cross_entropy_with_logits(logits, target)
    return nn.functional.cross_entropy(logits, soft, label_smoothing=smoothing)


def hard_label_loss(logits: torch.Tensor, labels: torch.Tensor, head: str) -> torch.Tensor:
    """Mean loss of (batch, classes) logits against (batch,) class indices."""
    return label_loss(logits, nn.functional.one_hot(labels, logits.shape[1]).float(), head)


def anchor_loss(logits: torch.Tensor, anchor_logits: torch.Tensor, head: str) -> torch.Tensor:
    """How far the tuned model's scores moved from the anchor's, for the same inputs (batch, classes).

    Softmax: KL(anchor || tuned), batch mean. Sigmoid: binary cross-entropy against the anchor's scores
    (KL per label up to a constant), mean over labels.
    """
    anchor = label_scores(anchor_logits, head)
    if head == "sigmoid":
        return nn.functional.binary_cross_entropy_with_logits(logits, anchor)
    return nn.functional.kl_div(nn.functional.log_softmax(logits, dim=1), anchor, reduction="batchmean")
