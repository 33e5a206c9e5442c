"""Log-mel front-end: one parameter set, and a numpy implementation that matches training's torchaudio one.

Training (training/frontend.py) builds ``torchaudio.transforms.MelSpectrogram`` from the same
``FrontendParams``; tests/test_frontend_parity.py proves the two agree. The agent never imports torch.

Hand-written in numpy on purpose: the Pi's install has no librosa or torch (numpy and onnxruntime are the
agent's whole compute stack), and a log-mel is a few lines of numpy.

Measured on this project's 2-core x86 box, the front-end of one 1 s window costs ~0.6 ms while a small
model costs ~0.01-1 ms, so it is worth streaming: consecutive windows on a hop that is a whole number of
STFT hops share all but ``hop / stft_hop`` frames, and ``StreamingLogMel`` computes only those new ones.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields

import numpy as np

from edge_agent.strict import reject_unknown
from edge_agent.windowing import Window


@dataclass(frozen=True)
class FrontendParams:
    """Everything needed to turn a mono waveform window into the model's log-mel input."""

    sample_rate: int = 16000
    window_seconds: float = 1.0
    n_fft: int = 512
    hop_length: int = 256
    n_mels: int = 64
    f_min: float = 50.0
    f_max: float = 8000.0
    log_offset: float = 1e-6

    def __post_init__(self) -> None:
        if self.sample_rate <= 0 or self.n_fft <= 0 or self.hop_length <= 0 or self.n_mels <= 0:
            raise ValueError("front-end sizes must be positive")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= sample_rate/2, got {self.f_min}, {self.f_max}")
        if self.window_samples < self.n_fft:
            raise ValueError("window must hold at least one FFT frame")

    @property
    def window_samples(self) -> int:
        """Samples in one model input window."""
        return int(round(self.window_seconds * self.sample_rate))

    @property
    def n_frames(self) -> int:
        """STFT frames in one window (no centre padding, so a window's features depend on it alone)."""
        return 1 + (self.window_samples - self.n_fft) // self.hop_length

    def to_json(self) -> str:
        """Serialise for ONNX metadata and checkpoints."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> FrontendParams:
        """Build from a dict, rejecting unknown keys so a newer model fails loudly on an older agent."""
        known = [f.name for f in fields(cls)]
        reject_unknown(data, known, lambda keys: f"unknown front-end parameters: {keys}")
        return cls(**data)

    @classmethod
    def from_json(cls, text: str) -> FrontendParams:
        """Inverse of ``to_json``."""
        return cls.from_dict(json.loads(text))


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + hz / 700.0)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def _mel_edges_hz(params: FrontendParams) -> np.ndarray:
    """(n_mels + 2,) HTK mel points in Hz: each filter rises from point i, peaks at i+1, ends at i+2."""
    mel_points = np.linspace(
        _hz_to_mel(np.array(params.f_min)), _hz_to_mel(np.array(params.f_max)), params.n_mels + 2
    )
    return _mel_to_hz(mel_points)


def mel_centres(params: FrontendParams) -> np.ndarray:
    """(n_mels,) centre frequency of each mel filter in Hz."""
    return _mel_edges_hz(params)[1:-1]


def mel_filterbank(params: FrontendParams) -> np.ndarray:
    """Triangular HTK mel filters, unnormalised: torchaudio.functional.melscale_fbanks' defaults.

    Returns (n_freqs, n_mels) float64.
    """
    n_freqs = params.n_fft // 2 + 1
    all_freqs = np.linspace(0.0, params.sample_rate // 2, n_freqs)
    hz_points = _mel_edges_hz(params)
    hz_gaps = np.diff(hz_points)
    slopes = hz_points[None, :] - all_freqs[:, None]  # (n_freqs, n_mels + 2)
    falling = -slopes[:, :-2] / hz_gaps[:-1]
    rising = slopes[:, 2:] / hz_gaps[1:]
    return np.maximum(0.0, np.minimum(falling, rising))


class LogMel:
    """numpy log-mel of one or more fixed-length windows; float32, allocation-light for the Pi."""

    def __init__(self, params: FrontendParams) -> None:
        self.params = params
        # Periodic Hann, as torch.hann_window(n_fft) builds it.
        self._window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(params.n_fft) / params.n_fft)).astype(
            np.float32
        )
        self._filters = mel_filterbank(params).astype(np.float32)  # (n_freqs, n_mels)

    def _log_mel(self, frames: np.ndarray) -> np.ndarray:
        """(..., n_fft) float32 frames -> (..., n_mels) log-mel: the one definition of the numpy front-end."""
        spectrum = np.fft.rfft(frames * self._window, axis=-1)  # (..., n_freqs) complex64
        power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32, copy=False)  # (..., n_freqs)
        return np.log(power @ self._filters + np.float32(self.params.log_offset))  # (..., n_mels)

    def frames(self, samples: np.ndarray) -> np.ndarray:
        """(samples,) float32 -> (frames, n_mels) log-mel of every whole STFT frame in it (streaming)."""
        p = self.params
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        count = 1 + (len(samples) - p.n_fft) // p.hop_length
        # A strided view (no copy); as_strided directly, since sliding_window_view's checks cost more
        # than the FFT of the 16 new frames of a streaming hop.
        step = samples.strides[0]
        frames = np.lib.stride_tricks.as_strided(
            samples, (count, p.n_fft), (p.hop_length * step, step), writeable=False
        )  # (frames, n_fft)
        return self._log_mel(frames)

    def __call__(self, window: np.ndarray) -> np.ndarray:
        """(samples,) or (batch, samples) float32 -> (batch, 1, n_mels, n_frames) float32 log-mel."""
        batch = np.atleast_2d(np.asarray(window, dtype=np.float32))
        p = self.params
        if batch.shape[-1] != p.window_samples:
            raise ValueError(f"window has {batch.shape[-1]} samples, model expects {p.window_samples}")
        frames = np.lib.stride_tricks.sliding_window_view(batch, p.n_fft, axis=-1)[:, :: p.hop_length]
        logmel = self._log_mel(frames)  # (batch, n_frames, n_mels)
        return np.ascontiguousarray(logmel.transpose(0, 2, 1)[:, None])  # (batch, 1, n_mels, n_frames)


class StreamingLogMel:
    """Log-mel of successive windows on one hop grid, reusing the STFT frames they share.

    Frames come from ``LogMel.frames``, the one numpy definition of the front-end;
    tests/test_frontend_parity.py checks it against torchaudio.
    """

    def __init__(self, params: FrontendParams, hop_samples: int) -> None:
        self.params = params
        self.frames = LogMel(params).frames  # (samples,) -> (frames, n_mels)
        aligned = hop_samples % params.hop_length == 0 and hop_samples < params.window_samples
        self.new_frames = hop_samples // params.hop_length if aligned else params.n_frames
        self._previous: np.ndarray | None = None  # (n_frames, n_mels) of the last window
        self._previous_index = -2

    def __call__(self, window: Window) -> np.ndarray:
        """One window -> (1, 1, n_mels, n_frames) float32 model input."""
        p, previous = self.params, self._previous
        if (
            previous is not None
            and not window.padded
            and self.new_frames < p.n_frames
            and window.index == self._previous_index + 1
        ):
            tail = window.samples[(p.n_frames - self.new_frames) * p.hop_length :]
            kept = previous[self.new_frames :]  # (n_frames - new_frames, n_mels)
            logmel = np.concatenate([kept, self.frames(tail)])  # (n_frames, n_mels)
        else:
            logmel = self.frames(window.samples)  # (n_frames, n_mels)
        self._previous, self._previous_index = (None, -2) if window.padded else (logmel, window.index)
        return np.ascontiguousarray(logmel.T)[None, None]  # (1, 1, n_mels, n_frames)
