"""Natural corruptions of a 1-s window: pure numpy, so the same code judges PyTorch and ONNX models.

Each corruption maps (clip, window start, rng) -> one corrupted window, because a time shift needs the
audio around the window, and background noise needs a random draw.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

GAIN_DB = 12.0
SHIFT_SECONDS = 0.25  # a quarter window: the event sits off-centre, as when the detector fires early or late
CLIP_LEVEL = 0.25  # clip at a quarter of the window's peak: 12 dB of hard clipping, an overloaded mic
MU = 255  # 8-bit mu-law, the G.711 telephone codec


@dataclass(frozen=True)
class Window:
    """One held-out clip and where its judged window starts."""

    clip: np.ndarray  # (samples,) float32 in [-1, 1]
    start: int
    length: int

    def at(self, start: int) -> np.ndarray:
        """The window starting at ``start``, clamped inside the clip: (length,)."""
        start = int(np.clip(start, 0, len(self.clip) - self.length))
        return self.clip[start : start + self.length]

    @property
    def audio(self) -> np.ndarray:
        """The judged window, (length,)."""
        return self.at(self.start)


def mix_at_snr(signal: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``signal`` plus ``noise`` scaled to ``snr_db`` below it (window powers), clipped to [-1, 1]."""
    signal_power = float(np.mean(signal**2)) + 1e-12
    noise_power = float(np.mean(noise**2)) + 1e-12
    scale = np.sqrt(signal_power / (noise_power * 10 ** (snr_db / 10)))
    return np.clip(signal + scale * noise, -1.0, 1.0).astype(np.float32)


def apply_gain(signal: np.ndarray, gain_db: float) -> np.ndarray:
    """Scale by ``gain_db``; a hot input saturates at full scale as a real ADC does."""
    return np.clip(signal * 10 ** (gain_db / 20), -1.0, 1.0).astype(np.float32)


def hard_clip(signal: np.ndarray, level: float = CLIP_LEVEL) -> np.ndarray:
    """Clip at ``level`` times the window's peak."""
    limit = level * float(np.max(np.abs(signal)) + 1e-12)
    return np.clip(signal, -limit, limit).astype(np.float32)


def band_limit(signal: np.ndarray, sample_rate: int, cutoff_hz: float) -> np.ndarray:
    """Remove everything above ``cutoff_hz`` (brick-wall in the FFT domain): a narrow-band recording."""
    spectrum = np.fft.rfft(signal)
    freqs = np.fft.rfftfreq(len(signal), 1.0 / sample_rate)
    spectrum[freqs > cutoff_hz] = 0
    return np.clip(np.fft.irfft(spectrum, n=len(signal)), -1.0, 1.0).astype(np.float32)


def mu_law_8bit(signal: np.ndarray, mu: int = MU) -> np.ndarray:
    """Encode to 8-bit mu-law and decode back: the quantisation noise of a low-bitrate link."""
    x = np.clip(signal, -1.0, 1.0)
    encoded = np.sign(x) * np.log1p(mu * np.abs(x)) / np.log1p(mu)
    codes = np.round((encoded + 1) / 2 * mu)  # 0..255
    decoded = codes / mu * 2 - 1
    return (np.sign(decoded) * np.expm1(np.abs(decoded) * np.log1p(mu)) / mu).astype(np.float32)


Corruption = Callable[[Window, np.random.Generator], np.ndarray]


def corruption_suite(noise_bank: list[np.ndarray], sample_rate: int) -> dict[str, Corruption]:
    """Name -> corruption, matching policy.CORRUPTIONS; noise comes from real non-target recordings."""
    if not noise_bank:
        raise ValueError("the background-noise bank is empty")
    shift = int(SHIFT_SECONDS * sample_rate)

    def noise(snr_db: float) -> Corruption:
        def corrupt(window: Window, rng: np.random.Generator) -> np.ndarray:
            clip = noise_bank[int(rng.integers(len(noise_bank)))]
            start = int(rng.integers(0, len(clip) - window.length + 1))
            return mix_at_snr(window.audio, clip[start : start + window.length], snr_db)

        return corrupt

    def time_shift(window: Window, rng: np.random.Generator) -> np.ndarray:
        starts = [
            s
            for s in (window.start - shift, window.start + shift)
            if 0 <= s <= len(window.clip) - window.length
        ]
        if not starts:  # a clip no longer than the window: it loops, so rotate it
            return np.roll(window.audio, shift)
        return window.at(starts[int(rng.integers(len(starts)))])

    return {
        "noise_20db": noise(20.0),
        "noise_10db": noise(10.0),
        "noise_0db": noise(0.0),
        "gain_plus12db": lambda w, rng: apply_gain(w.audio, GAIN_DB),
        "gain_minus12db": lambda w, rng: apply_gain(w.audio, -GAIN_DB),
        "time_shift": time_shift,
        "clipping": lambda w, rng: hard_clip(w.audio),
        "bandlimit_4khz": lambda w, rng: band_limit(w.audio, sample_rate, 4000.0),
        "mulaw_8bit": lambda w, rng: mu_law_8bit(w.audio),
    }


def loudest_start(clip: np.ndarray, length: int, hop: int) -> int:
    """Start of the highest-energy window: where the sound event is, and where the sensor would fire."""
    if len(clip) <= length:
        return 0
    energy = np.cumsum(np.concatenate([[0.0], clip.astype(np.float64) ** 2]))
    starts = np.arange(0, len(clip) - length + 1, hop)
    return int(starts[np.argmax(energy[starts + length] - energy[starts])])
