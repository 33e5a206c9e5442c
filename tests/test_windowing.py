"""The frame contract: windows at fixed absolute positions, a padded tail, hops on the STFT grid."""

from __future__ import annotations

import numpy as np

from edge_agent.frontend import FrontendParams, LogMel, StreamingLogMel
from edge_agent.windowing import Window, Windower, hop_samples


def windows_for(signal: np.ndarray, window: int, hop: int, block: int) -> list[Window]:
    windower = Windower(window, hop)
    out = []
    for i in range(0, len(signal), block):
        out += windower.push(signal[i : i + block])
    return out + windower.flush()


def test_windows_sit_at_multiples_of_the_hop() -> None:
    signal = np.arange(100, dtype=np.float32)
    windows = windows_for(signal, window=40, hop=20, block=7)
    assert [w.start for w in windows] == [0, 20, 40, 60]
    for w in windows:
        np.testing.assert_array_equal(w.samples, signal[w.start : w.start + 40])
    assert not any(w.padded for w in windows)  # 60 + 40 = 100 covers the end exactly


def test_chunking_never_changes_the_windows() -> None:
    signal = np.random.default_rng(1).standard_normal(5000).astype(np.float32)
    reference = windows_for(signal, 1000, 256, 5000)
    for block in (1, 256, 999, 4000):
        got = windows_for(signal, 1000, 256, block)
        assert [(w.index, w.start, w.padded) for w in got] == [
            (w.index, w.start, w.padded) for w in reference
        ]
        for a, b in zip(got, reference, strict=True):
            np.testing.assert_array_equal(a.samples, b.samples)


def test_the_uncovered_tail_gets_one_zero_padded_window() -> None:
    windows = windows_for(np.ones(110, dtype=np.float32), window=40, hop=20, block=50)
    last = windows[-1]
    assert last.padded and last.start == 80
    np.testing.assert_array_equal(last.samples, np.r_[np.ones(30), np.zeros(10)])


def test_a_stream_shorter_than_one_window_still_gets_scored() -> None:
    windows = windows_for(np.ones(10, dtype=np.float32), window=40, hop=20, block=3)
    assert len(windows) == 1 and windows[0].padded and windows[0].samples[:10].sum() == 10


def test_hop_larger_than_window_skips_samples() -> None:
    windows = windows_for(np.arange(100, dtype=np.float32), window=10, hop=30, block=13)
    assert [w.start for w in windows] == [0, 30, 60, 90]
    np.testing.assert_array_equal(windows[2].samples, np.arange(60, 70))


def test_hop_is_rounded_to_whole_stft_hops() -> None:
    assert hop_samples(0.25, 16000, 256) == 4096  # 0.256 s: 16 STFT frames
    assert hop_samples(0.5, 16000, 256) == 7936  # 31 frames
    assert hop_samples(0.001, 16000, 256) == 256  # at least one frame
    assert hop_samples(0.25, 16000) == 4000


def test_frame_sharing_front_end_equals_the_reference_log_mel() -> None:
    params = FrontendParams()
    signal = np.random.default_rng(2).standard_normal(4 * params.sample_rate).astype(np.float32)
    hop = hop_samples(0.25, params.sample_rate, params.hop_length)
    streaming, reference = StreamingLogMel(params, hop), LogMel(params)
    assert streaming.new_frames == 16
    for window in windows_for(signal, params.window_samples, hop, 3000):
        np.testing.assert_allclose(streaming(window), reference(window.samples), rtol=0, atol=1e-5)
