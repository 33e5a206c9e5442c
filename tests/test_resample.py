"""The streaming resampler: block size never changes the output, and tones survive the rate change."""

from __future__ import annotations

import numpy as np
import pytest
import soxr

from edge_agent.resample import QUALITY, StreamResampler, downmix


def resample_in_blocks(signal: np.ndarray, in_rate: int, out_rate: int, block: int) -> np.ndarray:
    resampler = StreamResampler(in_rate, out_rate)
    parts = [resampler.process(signal[i : i + block]) for i in range(0, len(signal), block)]
    return np.concatenate(parts + [resampler.flush()])


def tone(freq: float, rate: int, seconds: float = 1.0) -> np.ndarray:
    return np.sin(2 * np.pi * freq * np.arange(int(seconds * rate)) / rate).astype(np.float32)


@pytest.mark.parametrize("in_rate", [8000, 22050, 44100, 48000])
def test_output_is_bit_identical_whatever_the_block_size(in_rate: int) -> None:
    signal = np.random.default_rng(in_rate).standard_normal(in_rate).astype(np.float32)
    reference = resample_in_blocks(signal, in_rate, 16000, len(signal))
    assert len(reference) == 16000 and reference.dtype == np.float32
    for block in (1, 256, 1000, 4000, 4096):
        np.testing.assert_array_equal(resample_in_blocks(signal, in_rate, 16000, block), reference)


@pytest.mark.parametrize("in_rate", [22050, 44100, 48000])
def test_streaming_equals_one_shot(in_rate: int) -> None:
    """The tail comes out at flush, and the stream is neither delayed nor cut: same as one call."""
    signal = np.random.default_rng(1).standard_normal(3 * in_rate + 17).astype(np.float32)
    one_shot = soxr.resample(signal, in_rate, 16000, quality=QUALITY)
    np.testing.assert_array_equal(resample_in_blocks(signal, in_rate, 16000, 1024), one_shot)


@pytest.mark.parametrize(
    ("in_rate", "freq"),
    [(8000, 1000.0), (8000, 3500.0), (44100, 1000.0), (44100, 7000.0), (48000, 3500.0), (48000, 7000.0)],
)
def test_a_tone_keeps_its_frequency_phase_and_level(in_rate: int, freq: float) -> None:
    out = resample_in_blocks(tone(freq, in_rate, 2.0), in_rate, 16000, 1024)
    expected = tone(freq, 16000, 2.0)
    assert len(out) == len(expected)
    np.testing.assert_allclose(out[200:-200], expected[200:-200], atol=2e-3)  # 0.02 dB, no delay


@pytest.mark.parametrize("freq", [8500.0, 12000.0, 20000.0])
def test_content_above_the_new_nyquist_is_removed(freq: float) -> None:
    out = resample_in_blocks(tone(freq, 48000), 48000, 16000, 4096)  # would alias to 16000 - freq, ...
    assert np.sqrt(np.mean(out[200:-200] ** 2)) < 1e-5  # below -100 dB of the 0.7 rms input


def test_same_rate_passes_samples_through() -> None:
    signal = np.arange(10, dtype=np.float32)
    resampler = StreamResampler(16000, 16000)
    np.testing.assert_array_equal(resampler.process(signal), signal)
    assert len(resampler.flush()) == 0


def test_flush_twice_gives_nothing_more() -> None:
    resampler = StreamResampler(48000, 16000)
    resampler.process(tone(1000.0, 48000))
    assert len(resampler.flush()) > 0 and len(resampler.flush()) == 0


def test_rates_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        StreamResampler(0, 16000)


def test_downmix_scales_int16() -> None:
    np.testing.assert_array_equal(downmix(np.array([[-32768, 16384]], dtype=np.int16)), [-0.25])


def test_downmix_averages_channels() -> None:
    stereo = np.array([[1.0, 0.0], [0.5, 0.5], [-1.0, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(downmix(stereo), [0.5, 0.5, 0.0])
    np.testing.assert_array_equal(downmix(stereo[:, :1]), [1.0, 0.5, -1.0])
