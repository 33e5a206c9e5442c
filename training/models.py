"""One configurable log-mel classifier: CNN, RNN, LSTM, GRU, CRNN and compact residual CNNs differ by config.

Every model takes log-mel (batch, 1, n_mels, frames) and returns logits (batch, classes), so export,
the agent and the gate treat them all alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

import torch
from torch import nn

from edge_agent.strict import reject_unknown
from training.heads import HEADS


@dataclass(frozen=True)
class ModelConfig:
    """Architecture description; stored in every checkpoint so export can rebuild the model from it alone."""

    arch: str
    conv_channels: tuple[int, ...] = ()  # empty: no convolutional stem (pure recurrent model)
    conv_kind: str = "standard"  # "standard" 3x3 conv, or "separable" (depthwise 3x3 + pointwise 1x1)
    residual: bool = False  # skip connection around each separable block
    convs_per_block: int = 1  # 3x3 convs before each 2x2 pool (VGG-style depth at the same resolution)
    recurrent: str | None = None  # None, "rnn", "lstm" or "gru"
    rnn_hidden: int = 64
    rnn_layers: int = 1
    bidirectional: bool = False
    pooling: str = "mean"  # over time (and frequency for CNNs): "mean", "meanmax" or "attention"
    # How a conv stem's remaining mel bins become per-step features: "mean" averages them away,
    # "flatten" keeps where in frequency the energy sits (channels x bins), which tones need.
    freq_reduce: str = "mean"
    dropout: float = 0.2
    head: str = "softmax"  # how logits become scores: see training/heads.py

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {', '.join(HEADS)}, got {self.head!r}")
        if self.conv_kind not in ("standard", "separable"):
            raise ValueError(f"conv_kind must be 'standard' or 'separable', got {self.conv_kind!r}")
        if self.recurrent not in (None, "rnn", "lstm", "gru"):
            raise ValueError(f"recurrent must be None, 'rnn', 'lstm' or 'gru', got {self.recurrent!r}")
        if self.pooling not in ("mean", "meanmax", "attention"):
            raise ValueError(f"pooling must be 'mean', 'meanmax' or 'attention', got {self.pooling!r}")
        if self.freq_reduce not in ("mean", "flatten"):
            raise ValueError(f"freq_reduce must be 'mean' or 'flatten', got {self.freq_reduce!r}")
        if self.convs_per_block < 1:
            raise ValueError(f"convs_per_block must be at least 1, got {self.convs_per_block}")
        if not self.conv_channels and self.recurrent is None:
            raise ValueError("a model needs a convolutional stem, a recurrent layer, or both")

    def to_dict(self) -> dict:
        """Plain dict for checkpoints and reports."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        """Inverse of ``to_dict``; unknown keys are an error, not silently dropped."""
        known = [f.name for f in fields(cls)]
        reject_unknown(data, known, lambda keys: f"unknown model config keys: {keys}")
        values = dict(data)
        values["conv_channels"] = tuple(values.get("conv_channels", ()))
        return cls(**values)


# The seed study's five families, and stronger compact CNNs. Sizes are chosen for a Pi: see report MACs.
ARCHITECTURES: dict[str, ModelConfig] = {
    "cnn": ModelConfig("cnn", conv_channels=(12, 24, 48, 96), freq_reduce="flatten"),
    "rnn": ModelConfig("rnn", recurrent="rnn", rnn_hidden=128, rnn_layers=2),
    "lstm": ModelConfig("lstm", recurrent="lstm", rnn_hidden=96, rnn_layers=2),
    "gru": ModelConfig("gru", recurrent="gru", rnn_hidden=96, rnn_layers=2),
    "crnn": ModelConfig(
        "crnn", conv_channels=(12, 24, 48), recurrent="gru", rnn_hidden=64, freq_reduce="flatten"
    ),
    # Stronger compact CNNs (the study's future work): residual blocks and mean+max time pooling.
    "rescnn": ModelConfig(
        "rescnn", conv_channels=(12, 24, 48, 96), residual=True, pooling="meanmax", freq_reduce="flatten"
    ),
    "dsresnet": ModelConfig(
        "dsresnet",
        conv_channels=(32, 64, 128, 128),
        conv_kind="separable",
        residual=True,
        pooling="attention",
        freq_reduce="flatten",
    ),
}


def architecture(name: str, **overrides: object) -> ModelConfig:
    """Named preset, optionally with fields replaced (e.g. smaller channels for tests)."""
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; choose from {', '.join(ARCHITECTURES)}")
    return replace(ARCHITECTURES[name], **overrides)


class MelNorm(nn.Module):
    """Per-mel-bin normalisation learned from data, so the model owns its input scaling."""

    def __init__(self, n_mels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(n_mels)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        x = logmel.squeeze(1)  # (batch, n_mels, frames)
        return self.norm(x).unsqueeze(1)  # (batch, 1, n_mels, frames)


def _conv_unit(c_in: int, c_out: int, kind: str) -> nn.Sequential:
    """One 3x3 conv (standard, or depthwise-separable when it sees more than one channel) + BN."""
    if kind == "separable" and c_in > 1:
        return nn.Sequential(
            nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False),
            nn.BatchNorm2d(c_in),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
    # The first block sees one channel: a depthwise conv there would learn almost nothing.
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out))


class ConvBlock(nn.Module):
    """``convs`` 3x3 conv units (ReLU between them), optional residual, ReLU, then 2x2 max-pool."""

    def __init__(self, c_in: int, c_out: int, kind: str, residual: bool, convs: int = 1) -> None:
        super().__init__()
        units: list[nn.Module] = [_conv_unit(c_in, c_out, kind)]
        for _ in range(convs - 1):
            units += [nn.ReLU(inplace=True), _conv_unit(c_out, c_out, kind)]
        # A single unit is stored bare, so checkpoints from before convs_per_block keep their keys.
        self.conv = units[0] if convs == 1 else nn.Sequential(*units)
        self.skip: nn.Module | None = None
        if residual and c_in > 1:
            self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1, bias=False)
        self.act = nn.ReLU(inplace=True)
        self.pool = nn.MaxPool2d(2, ceil_mode=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)  # (batch, c_out, mels, frames)
        if self.skip is not None:
            y = y + self.skip(x)
        return self.pool(self.act(y))  # (batch, c_out, ceil(mels/2), ceil(frames/2))


class TemporalPool(nn.Module):
    """Summarise a sequence (batch, steps, features) into (batch, features')."""

    def __init__(self, features: int, mode: str) -> None:
        super().__init__()
        self.mode = mode
        self.score = nn.Linear(features, 1) if mode == "attention" else None
        self.out_features = features * 2 if mode == "meanmax" else features

    def forward(self, seq: torch.Tensor) -> torch.Tensor:
        if self.mode == "mean":
            return seq.mean(dim=1)  # (batch, features)
        if self.mode == "meanmax":
            return torch.cat([seq.mean(dim=1), seq.amax(dim=1)], dim=1)  # (batch, 2 * features)
        weights = torch.softmax(self.score(seq), dim=1)  # (batch, steps, 1)
        return (weights * seq).sum(dim=1)  # (batch, features)


def _pooled_size(size: int, blocks: int) -> int:
    """Length left after ``blocks`` ceil-mode 2x2 max-pools."""
    for _ in range(blocks):
        size = -(-size // 2)
    return size


_RNN_TYPES = {"rnn": nn.RNN, "lstm": nn.LSTM, "gru": nn.GRU}


class AudioClassifier(nn.Module):
    """Log-mel (batch, 1, n_mels, frames) -> logits (batch, n_classes), shaped by a ModelConfig."""

    def __init__(self, config: ModelConfig, n_mels: int, n_classes: int) -> None:
        super().__init__()
        self.config = config
        self.input_norm = MelNorm(n_mels)
        channels = (1, *config.conv_channels)
        self.stem = nn.Sequential(
            *[
                ConvBlock(c_in, c_out, config.conv_kind, config.residual, config.convs_per_block)
                for c_in, c_out in zip(channels[:-1], channels[1:], strict=True)
            ]
        )
        # Features per time step seen by the recurrent layer or the pooling head.
        step_features = channels[-1] if config.conv_channels else n_mels
        if config.conv_channels and config.freq_reduce == "flatten":
            step_features *= _pooled_size(n_mels, len(config.conv_channels))
        self.rnn: nn.Module | None = None
        if config.recurrent is not None:
            self.rnn = _RNN_TYPES[config.recurrent](
                step_features,
                config.rnn_hidden,
                num_layers=config.rnn_layers,
                batch_first=True,
                bidirectional=config.bidirectional,
                dropout=config.dropout if config.rnn_layers > 1 else 0.0,
            )
            step_features = config.rnn_hidden * (2 if config.bidirectional else 1)
        self.pool = TemporalPool(step_features, config.pooling)
        self.dropout = nn.Dropout(config.dropout)
        self.head = nn.Linear(self.pool.out_features, n_classes)

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        x = self.input_norm(logmel)  # (batch, 1, n_mels, frames)
        if len(self.stem):
            x = self.stem(x)  # (batch, channels, mels', frames')
            if self.config.freq_reduce == "flatten":
                seq = x.flatten(1, 2).transpose(1, 2)  # (batch, frames', channels * mels')
            else:
                seq = x.mean(dim=2).transpose(1, 2)  # (batch, frames', channels)
        else:
            seq = x.squeeze(1).transpose(1, 2)  # (batch, frames, n_mels)
        if self.rnn is not None:
            seq, _ = self.rnn(seq)  # (batch, steps, hidden * directions)
        pooled = self.pool(seq)  # (batch, features)
        return self.head(self.dropout(pooled))  # (batch, n_classes)


def build_model(config: ModelConfig | dict, n_mels: int, n_classes: int) -> AudioClassifier:
    """Build a classifier from a config or its dict form (as stored in a checkpoint)."""
    if isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    return AudioClassifier(config, n_mels=n_mels, n_classes=n_classes)
