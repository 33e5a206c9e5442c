"""Parameter and multiply-accumulate counts per input window, for reports and model cards."""

from __future__ import annotations

import torch
from torch import nn

_GATES = {nn.RNN: 1, nn.GRU: 3, nn.LSTM: 4}


def count_params(model: nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _rnn_macs(module: nn.RNNBase, steps: int) -> int:
    gates = _GATES[type(module)]
    directions = 2 if module.bidirectional else 1
    total, features = 0, module.input_size
    for _ in range(module.num_layers):
        per_step = gates * (features * module.hidden_size + module.hidden_size * module.hidden_size)
        total += per_step * steps * directions
        features = module.hidden_size * directions
    return total


def count_macs(model: nn.Module, input_shape: tuple[int, ...]) -> int:
    """MACs of convolutions, linear and recurrent layers for one input of ``input_shape`` (no batch)."""
    total = 0

    def on_forward(module: nn.Module, inputs: tuple, output: object) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
            total += output.numel() * kernel  # type: ignore[union-attr]
        elif isinstance(module, nn.Linear):
            total += inputs[0].numel() // module.in_features * module.in_features * module.out_features
        elif isinstance(module, (nn.RNN, nn.GRU, nn.LSTM)):
            steps = inputs[0].shape[1] if module.batch_first else inputs[0].shape[0]
            total += _rnn_macs(module, steps)

    hooks = [m.register_forward_hook(on_forward) for m in model.modules()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for hook in hooks:
            hook.remove()
        model.train(was_training)
    return total
