"""Sources and the ring buffer: files in every container, raw stdin, back-pressure, counted overruns."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from support.onnx_models import noise, to_s16le, tone, write_audio

from edge_agent.config import AudioConfig
from edge_agent.resample import downmix
from edge_agent.ring_buffer import RingBuffer
from edge_agent.sources import FileSource, SourceError, StdinSource, open_source


def drain(source, capacity: int = 1 << 16) -> tuple[np.ndarray, RingBuffer]:
    """Run a source to the end; return everything it wrote and the ring."""
    ring = RingBuffer(capacity, source.channels, source.dtype)
    source.start(ring)
    parts = []
    while (block := ring.read(1000, timeout=5.0)) is not None:
        parts.append(block)
    source.stop()
    return np.concatenate(parts) if parts else np.zeros((0, source.channels)), ring


def test_ring_buffer_wraps_and_keeps_order() -> None:
    ring = RingBuffer(10, 1)
    data = np.arange(40, dtype=np.float32)[:, None]
    got = []
    for i in range(0, 40, 4):
        assert ring.write(data[i : i + 4])
        got.append(ring.read(3))
        got.append(ring.read(1))
    np.testing.assert_array_equal(np.concatenate(got), data)


def test_ring_buffer_counts_overruns_instead_of_blocking() -> None:
    ring = RingBuffer(8, 2)
    assert ring.write(np.ones((6, 2), np.float32))
    assert not ring.write(np.ones((4, 2), np.float32))  # does not fit: dropped and counted
    ring.note_overrun()  # what the device reported as lost
    assert (ring.overruns, ring.dropped_frames) == (2, 4)
    assert len(ring.read(100)) == 6


def test_ring_buffer_back_pressure_and_close() -> None:
    ring = RingBuffer(4, 1)
    ring.write(np.zeros((4, 1), np.float32))
    results = []
    block = np.ones((2, 1), np.float32)
    writer = threading.Thread(target=lambda: results.append(ring.write(block, wait=True)))
    writer.start()
    time.sleep(0.05)
    assert results == []  # waiting for room
    assert len(ring.read(2)) == 2
    writer.join(2.0)
    assert results == [True] and ring.overruns == 0
    ring.close(error="device gone")
    assert len(ring.read(10)) == 4 and ring.read(10) is None and ring.error == "device gone"


@pytest.mark.parametrize("suffix", ["wav", "flac", "ogg"])
def test_file_source_reads_every_container(tmp_path: Path, suffix: str) -> None:
    signal = np.stack([tone(440, 1.0, 22050), noise(1.0, 22050)], axis=1)  # stereo 22.05 kHz
    path = write_audio(tmp_path / f"clip.{suffix}", signal, 22050)
    source = FileSource(str(path), block_size=1000, fast=True)
    assert (source.sample_rate, source.channels) == (22050, 2)
    samples, ring = drain(source)
    assert samples.shape == (22050, 2) and ring.error is None
    if suffix != "ogg":  # lossless containers give the samples back
        np.testing.assert_allclose(samples, signal, atol=1e-4)


def test_file_source_paces_in_real_time_unless_fast(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "half.wav", tone(440, 0.5))
    started = time.monotonic()
    drain(FileSource(str(path), block_size=800, fast=False))
    assert time.monotonic() - started >= 0.45  # paced: not before the audio could have been heard


def test_missing_and_corrupt_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="^audio file not found: .*nope.wav$"):
        FileSource(str(tmp_path / "nope.wav"), 1024, True)
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunkjunk")
    with pytest.raises(SourceError, match="^cannot read audio file .*corrupt.wav: ") as caught:
        FileSource(str(corrupt), 1024, True)
    assert "\n" not in str(caught.value)


def test_a_file_that_breaks_mid_stream_closes_the_ring_with_the_error(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "cut.flac", noise(3.0, amplitude=0.3))
    data = path.read_bytes()
    garbage = bytes(range(256)) * 16
    path.write_bytes(data[: len(data) // 2] + garbage + data[len(data) // 2 :])  # libsndfile fails mid-read
    samples, ring = drain(FileSource(str(path), 1024, fast=True))
    assert ring.error is not None and ring.error.startswith(f"cannot read file {path}: ")
    assert 0 < len(samples) < 48000  # what came before the damage was delivered


def test_stdin_source_decodes_s16le_and_drops_a_partial_frame() -> None:
    stereo = np.stack([tone(1000, 0.5), -tone(1000, 0.5)], axis=1)
    stream = io.BytesIO(to_s16le(stereo) + b"\x01")  # one stray byte at the end
    samples, _ = drain(StdinSource(16000, 2, block_size=333, stream=stream))
    assert samples.shape == (8000, 2) and samples.dtype == np.int16  # copied as they came
    np.testing.assert_allclose(downmix(samples[:, :1]), stereo[:, 0], atol=1 / 32768 + 1e-6)


def test_factory_picks_the_source_by_spec(tmp_path: Path) -> None:
    path = write_audio(tmp_path / "a.wav", tone(440, 0.1))
    assert isinstance(open_source(AudioConfig(source=str(path)), 16000), FileSource)
    stdin = open_source(AudioConfig(source="-", stdin_rate=8000, stdin_channels=2), 16000, io.BytesIO())
    assert isinstance(stdin, StdinSource) and (stdin.sample_rate, stdin.channels) == (8000, 2)
