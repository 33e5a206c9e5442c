"""The streaming resampler: block size never changes the output, and tones survive the rate change."""

from __future__ import annotations

import numpy as np
import pytest

from edge_agent.resample import StreamResampler, downmix


def resample_in_blocks(signal: np.ndarray, in_rate: int, out_rate: int, block: int) -> np.ndarray:
    resampler = StreamResampler(in_rate, out_rate)
    parts = [resampler.process(signal[i:i + block]) for i in range(0, len(signal), block)]
    return np.concatenate(parts + [resampler.flush()])


@pytest.mark.parametrize("in_rate", [8000, 22050, 44100, 48000])
def test_output_is_bit_identical_whatever_the_block_size(in_rate: int) -> None:
    signal = np.random.default_rng(in_rate).standard_normal(in_rate).astype(np.float32)
    reference = resample_in_blocks(signal, in_rate, 16000, len(signal))
    assert len(reference) == 16000
    for block in (1, 256, 1000, 4000):
        np.testing.assert_array_equal(resample_in_blocks(signal, in_rate, 16000, block), reference)


@pytest.mark.parametrize("in_rate", [8000, 44100, 48000])
def test_a_tone_keeps_its_frequency_and_level(in_rate: int) -> None:
    t = np.arange(2 * in_rate) / in_rate
    out = resample_in_blocks(np.sin(2 * np.pi * 1000 * t).astype(np.float32), in_rate, 16000, 1024)
    expected = np.sin(2 * np.pi * 1000 * np.arange(len(out)) / 16000)
    np.testing.assert_allclose(out[200:-200], expected[200:-200], atol=1e-4)


def test_content_above_the_new_nyquist_is_removed() -> None:
    t = np.arange(48000) / 48000
    out = resample_in_blocks(np.sin(2 * np.pi * 12000 * t).astype(np.float32), 48000, 16000, 4096)
    assert np.sqrt(np.mean(out[200:-200] ** 2)) < 1e-3  # 12 kHz would alias to 4 kHz if not filtered


def test_same_rate_passes_samples_through() -> None:
    signal = np.arange(10, dtype=np.float32)
    resampler = StreamResampler(16000, 16000)
    np.testing.assert_array_equal(resampler.process(signal), signal)
    assert len(resampler.flush()) == 0


def test_downmix_scales_int16() -> None:
    np.testing.assert_array_equal(downmix(np.array([[-32768, 16384]], dtype=np.int16)), [-0.25])


def test_downmix_averages_channels() -> None:
    stereo = np.array([[1.0, 0.0], [0.5, 0.5], [-1.0, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(downmix(stereo), [0.5, 0.5, 0.0])
    np.testing.assert_array_equal(downmix(stereo[:, :1]), [1.0, 0.5, -1.0])
