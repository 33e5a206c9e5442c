"""torchaudio log-mel built from the shared FrontendParams (edge_agent/frontend.py holds the numpy twin)."""

from __future__ import annotations

import torch
import torchaudio
from torch import nn

from edge_agent.frontend import FrontendParams


class TorchLogMel(nn.Module):
    """Waveform (batch, samples) -> log-mel (batch, 1, n_mels, frames); differentiable, for attacks too."""

    def __init__(self, params: FrontendParams) -> None:
        super().__init__()
        self.params = params
        self.mel_power = torchaudio.transforms.MelSpectrogram(
            sample_rate=params.sample_rate,
            n_fft=params.n_fft,
            hop_length=params.hop_length,
            n_mels=params.n_mels,
            f_min=params.f_min,
            f_max=params.f_max,
            center=False,
            power=2.0,
        )

    def power(self, waveform: torch.Tensor) -> torch.Tensor:
        """(batch, samples) -> linear mel power (batch, n_mels, frames); training caches this."""
        return self.mel_power(waveform)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        mel = self.mel_power(waveform)  # (batch, n_mels, frames)
        return torch.log(mel + self.params.log_offset).unsqueeze(1)  # (batch, 1, n_mels, frames)


class WaveformClassifier(nn.Module):
    """Front-end + classifier in one differentiable model: waveform in, logits out (for foolbox)."""

    def __init__(self, frontend: TorchLogMel, classifier: nn.Module) -> None:
        super().__init__()
        self.frontend = frontend
        self.classifier = classifier

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.frontend(waveform))  # (batch, classes)
