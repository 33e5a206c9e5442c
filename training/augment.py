"""Training-only augmentation, stacked as dataset wrappers over mel-power windows, plus batch mixup.

The stack for training is crop (time shift) -> background noise -> gain -> band limit -> log ->
SpecAugment; evaluation uses crop-free sliding windows -> log and nothing else (``ToLogMel`` alone).

Background noise is mixed in the LINEAR MEL POWER domain: power(s + n) ~= power(s) + power(n) when the
signal and noise are uncorrelated (the cross term averages out over a mel band), so mixing cached
features is a sound, cheap stand-in for mixing waveforms and re-running the front-end.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from edge_agent.frontend import FrontendParams, mel_centres, mel_filterbank
from training.data import ClipFeatures


class _Wrapper(Dataset):
    """Dataset that transforms the (window, target) items of an inner dataset."""

    def __init__(self, inner: Dataset) -> None:
        self.inner = inner

    def __len__(self) -> int:
        return len(self.inner)  # type: ignore[arg-type]


class _Sometimes(_Wrapper):
    """Applies ``apply`` to a window's mel power with probability ``p``; otherwise passes it through."""

    def __init__(self, inner: Dataset, p: float) -> None:
        super().__init__(inner)
        self.p = p

    def apply(self, power: torch.Tensor) -> torch.Tensor:
        """(n_mels, frames) -> (n_mels, frames), drawing its own random parameters."""
        raise NotImplementedError

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        power, target = self.inner[index]  # (n_mels, frames)
        if float(torch.rand(())) >= self.p:
            return power, target
        return self.apply(power), target


class BackgroundNoise(_Sometimes):
    """With probability ``p``, add a random window of a real noise clip at a random SNR (dB)."""

    def __init__(self, inner: Dataset, noise: ClipFeatures, snr_db: tuple[float, float], p: float) -> None:
        super().__init__(inner, p)
        self.noise, self.snr_db = noise, snr_db

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        if not len(self.noise.records):  # nothing to mix: no random draw either
            return self.inner[index]
        return super().__getitem__(index)

    def apply(self, power: torch.Tensor) -> torch.Tensor:
        """``power`` plus a random noise window at a random SNR."""
        clip = self.noise.clip(int(torch.randint(0, len(self.noise.records), ())))  # (n_mels, noise_frames)
        frames = power.shape[1]
        start = int(torch.randint(0, max(clip.shape[1] - frames, 0) + 1, ()))
        noise = clip[:, start : start + frames]  # (n_mels, frames)
        if noise.shape[1] < frames:  # a noise clip shorter than the window is looped, as clips are
            noise = noise.repeat(1, -(-frames // noise.shape[1]))[:, :frames]
        snr = float(torch.empty(()).uniform_(*self.snr_db))
        scale = power.sum() / (noise.sum() * 10 ** (snr / 10) + 1e-12)
        return power + scale * noise


class Gain(_Wrapper):
    """Random gain of +-``db`` decibels (a power scale), so loudness is not a class cue."""

    def __init__(self, inner: Dataset, db: float) -> None:
        super().__init__(inner)
        self.db = db

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        power, target = self.inner[index]  # (n_mels, frames)
        gain = float(torch.empty(()).uniform_(-self.db, self.db))
        return power * 10 ** (gain / 10), target


class BandLimit(_Sometimes):
    """With probability ``p``, remove the power above a random cut-off (Hz): a cheap mic, an 8 kHz codec.

    Each mel band keeps the share of its filter that lies below the cut-off (a flat spectrum within a
    band is assumed), which is what low-passing the waveform does to the cached mel power.
    """

    def __init__(
        self, inner: Dataset, params: FrontendParams, cutoff_hz: tuple[float, float], p: float
    ) -> None:
        super().__init__(inner, p)
        self.cutoff_hz = cutoff_hz
        filters = mel_filterbank(params)  # (n_freqs, n_mels)
        self._freqs = np.linspace(0.0, params.sample_rate / 2, filters.shape[0])
        self._filters = filters / np.maximum(filters.sum(axis=0, keepdims=True), 1e-12)

    def kept_share(self, cutoff: float) -> torch.Tensor:
        """(n_mels,) share of each mel band below ``cutoff``."""
        return torch.from_numpy(self._filters[self._freqs <= cutoff].sum(axis=0)).float()

    def apply(self, power: torch.Tensor) -> torch.Tensor:
        """``power`` low-passed at a random cut-off."""
        cutoff = float(torch.empty(()).uniform_(*self.cutoff_hz))
        return power * self.kept_share(cutoff)[:, None]  # (n_mels, frames)


class PitchShift(_Sometimes):
    """With probability ``p``, shift the spectrum by a random number of semitones along the mel axis.

    Band i (centre c_i Hz) takes the power the clip had at c_i / ratio, read by linear interpolation
    between band centres: the mel-domain image of resampling the waveform while keeping its length.
    """

    def __init__(self, inner: Dataset, params: FrontendParams, semitones: float, p: float) -> None:
        super().__init__(inner, p)
        self.semitones = semitones
        self._centres = mel_centres(params)  # (n_mels,) Hz

    def shift(self, power: torch.Tensor, ratio: float) -> torch.Tensor:
        """(n_mels, frames) power with its spectrum moved by the frequency ``ratio`` (> 1: higher)."""
        source = np.interp(self._centres / ratio, self._centres, np.arange(len(self._centres)))
        source_t = torch.from_numpy(source).float()  # (n_mels,) fractional band each band reads from
        low = source_t.floor().long()
        high = torch.clamp(low + 1, max=power.shape[0] - 1)
        frac = (source_t - low)[:, None]  # (n_mels, 1)
        return power[low] * (1 - frac) + power[high] * frac  # (n_mels, frames)

    def apply(self, power: torch.Tensor) -> torch.Tensor:
        """``power`` shifted by a random number of semitones."""
        semitones = float(torch.empty(()).uniform_(-self.semitones, self.semitones))
        return self.shift(power, 2 ** (semitones / 12))


class Reverb(_Sometimes):
    """With probability ``p``, a room's late reverberation: each frame's power decays into the next ones.

    The mel-power image of convolving with an exponentially decaying impulse response (RT60 drawn in
    ``rt60_s``, same in every band; a wet share in ``wet``), which is what a siren heard down a street
    canyon or a gunshot in a courtyard gains. Cheaper than simulated rooms, and it acts on cached power.
    """

    def __init__(
        self,
        inner: Dataset,
        params: FrontendParams,
        rt60_s: tuple[float, float],
        wet: tuple[float, float],
        p: float,
    ) -> None:
        super().__init__(inner, p)
        self.rt60_s, self.wet = rt60_s, wet
        self.frame_s = params.hop_length / params.sample_rate

    def tail(self, rt60: float, wet: float) -> torch.Tensor:
        """(taps,) power impulse response: 1 at lag 0, then ``wet`` decaying by 60 dB over ``rt60``."""
        taps = max(2, int(np.ceil(rt60 / self.frame_s)))
        decay = 10 ** (-6.0 * self.frame_s / rt60)  # power factor per frame
        response = wet * decay ** torch.arange(taps, dtype=torch.float32)
        response[0] = 1.0
        return response

    def apply(self, power: torch.Tensor) -> torch.Tensor:
        """``power`` with a random reverberant tail (causal: the tail only follows the sound)."""
        rt60 = float(torch.empty(()).uniform_(*self.rt60_s))
        wet = float(torch.empty(()).uniform_(*self.wet))
        kernel = self.tail(rt60, wet).flip(0)[None, None]  # (1, 1, taps), flipped for conv1d's correlation
        padded = torch.nn.functional.pad(
            power[:, None], (kernel.shape[-1] - 1, 0)
        )  # (n_mels, 1, frames+taps-1)
        return torch.nn.functional.conv1d(padded, kernel)[:, 0]  # (n_mels, frames)


class Colouration(_Sometimes):
    """With probability ``p``, a microphone's or enclosure's smooth frequency response: a random gain
    curve over the mel bands (a cubic in band position, within +- ``db`` dB)."""

    def __init__(self, inner: Dataset, n_mels: int, db: float, p: float) -> None:
        super().__init__(inner, p)
        self.db = db
        position = torch.linspace(-1.0, 1.0, n_mels)  # (n_mels,)
        self._basis = torch.stack([position, position**2 - 1 / 3, position**3])  # (3, n_mels)

    def apply(self, power: torch.Tensor) -> torch.Tensor:
        """``power`` through a random smooth EQ curve."""
        curve = torch.empty(3).uniform_(-1.0, 1.0) @ self._basis  # (n_mels,)
        curve = self.db * curve / curve.abs().max().clamp(min=1e-6)
        return power * 10 ** (curve[:, None] / 10)  # (n_mels, frames)


class ToLogMel(_Wrapper):
    """Mel power (n_mels, frames) -> the model's log-mel input (1, n_mels, frames), as the agent has it."""

    def __init__(self, inner: Dataset, log_offset: float) -> None:
        super().__init__(inner)
        self.log_offset = log_offset

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        power, target = self.inner[index]  # (n_mels, frames)
        return torch.log(power + self.log_offset).unsqueeze(0), target  # (1, n_mels, frames)


class SpecAugment(_Wrapper):
    """``masks`` frequency and time masks (up to ``freq_width`` bins / ``time_width`` frames) at the mean."""

    def __init__(self, inner: Dataset, freq_width: int, time_width: int, masks: int = 2) -> None:
        super().__init__(inner)
        self.freq_width, self.time_width, self.masks = freq_width, time_width, masks

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        logmel, target = self.inner[index]  # (1, n_mels, frames)
        logmel = logmel.clone()
        fill = logmel.mean()
        for _ in range(self.masks):
            _mask_axis(logmel, 1, self.freq_width, fill)
            _mask_axis(logmel, 2, self.time_width, fill)
        return logmel, target


def _mask_axis(x: torch.Tensor, axis: int, width: int, fill: torch.Tensor) -> None:
    """Fill a random band of up to ``width`` along ``axis`` in place."""
    size = int(torch.randint(0, width + 1, ()))
    if size == 0 or size >= x.shape[axis]:
        return
    start = int(torch.randint(0, x.shape[axis] - size + 1, ()))
    x.narrow(axis, start, size).fill_(fill)


def mixup(
    logmel: torch.Tensor, target: torch.Tensor, n_classes: int, alpha: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix a batch with a shuffled copy of itself; returns inputs and soft targets (batch, n_classes)."""
    soft = torch.nn.functional.one_hot(target, n_classes).float()  # (batch, n_classes)
    if alpha <= 0:
        return logmel, soft
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    lam = max(lam, 1 - lam)  # keep the first item dominant so the batch's labels stay meaningful
    order = torch.randperm(logmel.shape[0])
    mixed = lam * logmel + (1 - lam) * logmel[order]  # (batch, 1, n_mels, frames)
    return mixed, lam * soft + (1 - lam) * soft[order]
