"""Band-limit augmentation on cached mel power matches low-passing the waveform (8 kHz-rate audio)."""

from __future__ import annotations

import numpy as np
import torch
import torchaudio

from edge_agent.frontend import FrontendParams
from training.augment import BandLimit
from training.frontend import TorchLogMel


class _One(torch.utils.data.Dataset):
    def __init__(self, power: torch.Tensor) -> None:
        self.power = power

    def __len__(self) -> int:
        return 1

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.power, 0


def test_band_limit_matches_a_real_4khz_low_pass() -> None:
    params = FrontendParams()
    torch.manual_seed(0)
    wave = torch.randn(1, params.window_samples) * 0.1  # white noise: power in every band
    frontend = TorchLogMel(params)
    full = frontend.power(wave)[0]  # (n_mels, frames)
    narrow = torchaudio.functional.resample(torchaudio.functional.resample(wave, 16000, 8000), 8000, 16000)
    expected = frontend.power(narrow)[0]  # (n_mels, frames)
    augment = BandLimit(_One(full), params, cutoff_hz=(3950.0, 3950.0), p=1.0)
    limited, _ = augment[0]
    log_error = torch.log(limited + 1e-6) - torch.log(expected + 1e-6)  # (n_mels, frames)
    # Bands well below and well above the cut-off agree within ~1 log unit (10^0.4 in power); the
    # resampler's transition band around 4 kHz is where the two differ most.
    centres = np.linspace(0, 8000, full.shape[0] + 2)[1:-1]
    assert log_error[torch.from_numpy(centres < 3000)].abs().mean() < 0.1
    assert limited[-10:].mean() < 1e-3 * full[-10:].mean()


def test_band_limit_is_applied_with_probability_p() -> None:
    params = FrontendParams()
    power = torch.ones(params.n_mels, params.n_frames)
    assert torch.equal(BandLimit(_One(power), params, (3000.0, 7000.0), p=0.0)[0][0], power)
    limited = BandLimit(_One(power), params, (3000.0, 7000.0), p=1.0)[0][0]
    assert limited[0].eq(1).all() and limited[-1].lt(1e-6).all()
