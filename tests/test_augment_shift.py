"""Pitch shift, time stretch and multi-crop epochs on cached mel power, checked against real signals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from edge_agent.frontend import FrontendParams, mel_centres
from training.augment import PitchShift
from training.checkpoint import load_checkpoint
from training.data import ClipFeatures, ClipRecord, RandomCropDataset
from training.frontend import TorchLogMel
from training.models import architecture, build_model
from training.train import TrainConfig

PARAMS = FrontendParams()


def _tone_power(hz: float) -> torch.Tensor:
    t = torch.arange(PARAMS.window_samples) / PARAMS.sample_rate
    wave = (0.1 * torch.sin(2 * torch.pi * hz * t)).unsqueeze(0)  # (1, samples)
    return TorchLogMel(PARAMS).power(wave)[0]  # (n_mels, frames)


def _features(power: torch.Tensor, clips: int = 1) -> ClipFeatures:
    frames = power.shape[1]
    records = [ClipRecord(path=None, label=c % 10, fold=1, group=str(c)) for c in range(clips)]  # type: ignore[arg-type]
    return ClipFeatures(power.repeat(1, clips), torch.arange(clips + 1) * frames, records)


@pytest.mark.parametrize("semitones", [-3.0, 2.0, 4.0])
def test_pitch_shift_moves_a_tone_to_the_band_of_the_really_shifted_tone(semitones: float) -> None:
    ratio = 2 ** (semitones / 12)
    shifted = PitchShift(None, PARAMS, semitones=4.0, p=1.0).shift(_tone_power(1500.0), ratio)  # type: ignore[arg-type]
    real = _tone_power(1500.0 * ratio)
    peak_shifted = int(shifted.mean(dim=1).argmax())
    peak_real = int(real.mean(dim=1).argmax())
    assert abs(peak_shifted - peak_real) <= 1
    assert peak_shifted != int(_tone_power(1500.0).mean(dim=1).argmax())


def test_pitch_shift_by_ratio_one_is_the_identity() -> None:
    power = torch.rand(PARAMS.n_mels, PARAMS.n_frames)
    assert torch.allclose(PitchShift(None, PARAMS, 2.0, 1.0).shift(power, 1.0), power)  # type: ignore[arg-type]


def test_mel_centres_rise_between_the_band_edges() -> None:
    centres = mel_centres(PARAMS)
    assert centres.shape == (PARAMS.n_mels,)
    assert PARAMS.f_min < centres[0] and centres[-1] < PARAMS.f_max and np.all(np.diff(centres) > 0)


def test_time_stretch_reads_a_longer_span_into_one_window() -> None:
    ramp = torch.arange(400, dtype=torch.float32).repeat(PARAMS.n_mels, 1)  # (mels, frames): value = frame
    window = PARAMS.n_frames
    plain, _ = RandomCropDataset(_features(ramp), window)[0]
    slow, _ = RandomCropDataset(_features(ramp), window, stretch=(2.0, 2.0))[0]
    assert plain.shape == slow.shape == (PARAMS.n_mels, window)
    assert float(plain[0, -1] - plain[0, 0]) == window - 1
    assert float(slow[0, -1] - slow[0, 0]) == pytest.approx(2 * window - 2, abs=2)


def test_multi_crop_epochs_visit_every_clip_crops_times() -> None:
    features = _features(torch.rand(PARAMS.n_mels, 200), clips=5)
    data = RandomCropDataset(features, PARAMS.n_frames, crops=3)
    assert len(data) == 15
    assert [data[i][1] for i in range(15)] == [i % 5 for i in range(15)]


def test_bad_augmentation_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="crops_per_clip"):
        TrainConfig(crops_per_clip=0)
    with pytest.raises(ValueError, match="stretch"):
        TrainConfig(stretch=(1.2, 0.8))
    with pytest.raises(ValueError, match="pitch_p"):
        TrainConfig(pitch_p=1.5)


def test_deeper_blocks_add_convolutions_and_keep_single_conv_checkpoint_keys() -> None:
    single = build_model(architecture("cnn"), PARAMS.n_mels, 10)
    double = build_model(architecture("cnn", convs_per_block=2), PARAMS.n_mels, 10)
    assert "stem.0.conv.0.weight" in single.state_dict()  # the layout committed checkpoints use
    assert sum(p.numel() for p in double.parameters()) > sum(p.numel() for p in single.parameters())
    logmel = torch.randn(2, 1, PARAMS.n_mels, PARAMS.n_frames)
    assert double(logmel).shape == (2, 10)


def test_the_committed_default_checkpoint_still_builds_and_loads() -> None:
    path = Path(__file__).resolve().parents[1] / "training" / "results" / "default" / "crnn.pt"
    model = load_checkpoint(path).build()  # strict state-dict load: a renamed layer fails here
    assert model(torch.zeros(1, 1, PARAMS.n_mels, PARAMS.n_frames)).shape == (1, 10)
