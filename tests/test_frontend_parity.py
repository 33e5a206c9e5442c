"""The agent's numpy log-mel equals training's torchaudio log-mel (the definition the model learnt on)."""

from __future__ import annotations

import numpy as np
import pytest
from support.onnx_models import noise, silence, siren_sweep, tone

from edge_agent.frontend import FrontendParams, LogMel, StreamingLogMel
from edge_agent.windowing import Windower, hop_samples

torch = pytest.importorskip("torch", reason="parity needs the training extras (torch, torchaudio)")
pytest.importorskip("torchaudio")
from training.frontend import TorchLogMel  # noqa: E402

# float32 on both sides; the largest gaps are in near-empty mel bands, where log() magnifies rounding.
ATOL_LOG = 2e-3

SIGNALS = {
    "noise": lambda: noise(1.0, amplitude=0.3),
    "tone": lambda: tone(1000, 1.0),
    "siren sweep": lambda: siren_sweep(1.0),
    "silence": lambda: silence(1.0),
    "very quiet": lambda: noise(1.0, amplitude=1e-4),
    "full scale": lambda: np.clip(noise(1.0, amplitude=1.0), -1, 1),
}


@pytest.mark.parametrize("name", list(SIGNALS))
def test_numpy_matches_torchaudio(name: str) -> None:
    params = FrontendParams()
    signal = SIGNALS[name]()
    ours = LogMel(params)(signal)  # (1, 1, n_mels, n_frames)
    theirs = TorchLogMel(params)(torch.from_numpy(signal)[None]).numpy()  # (1, 1, n_mels, n_frames)
    assert ours.shape == theirs.shape == (1, 1, params.n_mels, params.n_frames)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=ATOL_LOG)


@pytest.mark.parametrize(
    "params",
    [FrontendParams(), FrontendParams(n_mels=40, n_fft=400, hop_length=160, f_min=20.0, window_seconds=0.96)],
)
def test_the_streaming_front_end_matches_torchaudio_window_by_window(params: FrontendParams) -> None:
    stream = np.concatenate([noise(1.5, amplitude=0.1), siren_sweep(1.5)])
    hop = hop_samples(0.25, params.sample_rate, params.hop_length)
    streaming, reference = StreamingLogMel(params, hop), TorchLogMel(params)
    windower = Windower(params.window_samples, hop)
    windows = windower.push(stream) + windower.flush()
    assert len(windows) >= 8
    for window in windows:
        theirs = reference(torch.from_numpy(window.samples)[None]).numpy()
        np.testing.assert_allclose(streaming(window), theirs, rtol=0, atol=ATOL_LOG)
