"""Mic lost: the device disappears mid-stream; the agent reports it (503, metric, log), retries, and resumes.

PortAudio cannot unplug a device on demand, so the sounddevice module is replaced by a fake whose stream
ends the way PortAudio's does when a USB mic goes away (the finished callback fires) and whose device
list is empty until the mic is plugged back in. Everything above it, the MicSource retry loop and the
pipeline, is the real code.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from edge_agent import sources
from edge_agent.config import AgentConfig, AudioConfig
from edge_agent.metrics import AgentMetrics
from edge_agent.onnx_model import OnnxModel
from edge_agent.pipeline import Pipeline

RATE, BLOCK = 16000, 800


class FakeStream:
    """Delivers paced silence blocks until the fake mic is unplugged, then ends like PortAudio."""

    def __init__(self, mic: FakeSounddevice, callback: Any, finished_callback: Any, **settings: Any) -> None:
        self.mic, self.callback, self.finished = mic, callback, finished_callback
        self.closed = threading.Event()

    def start(self) -> None:
        if self.mic.unplugged:
            raise RuntimeError("Error opening InputStream: Device unavailable")
        threading.Thread(target=self._run, daemon=True).start()

    def _run(self) -> None:
        status = SimpleNamespace(input_overflow=False)
        while not self.closed.wait(BLOCK / RATE):
            if self.mic.unplugged:
                self.finished()
                return
            self.callback(np.zeros((BLOCK, 1), dtype=np.int16), BLOCK, None, status)

    def close(self, ignore_errors: bool = True) -> None:
        self.closed.set()


class FakeSounddevice:
    """The slice of sounddevice that MicSource uses, with a mic that can be unplugged."""

    default = SimpleNamespace(device=(0, 0))

    def __init__(self) -> None:
        self.unplugged = False
        self.reinitialised = 0

    def query_devices(self, device: int | None = None) -> Any:
        mic = {"name": "Fake USB Mic", "max_input_channels": 1, "default_samplerate": float(RATE)}
        if device is not None:
            return mic
        return [] if self.unplugged else [mic]

    def check_input_settings(self, **settings: Any) -> None:
        return None

    def InputStream(self, **settings: Any) -> FakeStream:  # noqa: N802 (sounddevice's name)
        return FakeStream(self, **settings)

    def _terminate(self) -> None:
        self.reinitialised += 1

    def _initialize(self) -> None:
        return None


def wait_for(condition: Any, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def fake_mic(monkeypatch: pytest.MonkeyPatch) -> FakeSounddevice:
    fake = FakeSounddevice()
    monkeypatch.setattr(sources, "_sounddevice", lambda: fake)
    monkeypatch.setattr(sources, "MIC_RETRY_MIN_S", 0.05)
    monkeypatch.setattr(sources, "MIC_RETRY_MAX_S", 0.2)
    return fake


def test_a_lost_mic_is_reported_retried_and_resumed(fake_mic: FakeSounddevice, siren_model: Path) -> None:
    metrics = AgentMetrics()
    source = sources.MicSource("usb mic", BLOCK, RATE)
    config = AgentConfig(device_id="pole", audio=AudioConfig(source="mic:usb mic"))
    pipeline = Pipeline(config, OnnxModel.load(siren_model), source, metrics=metrics, stall_after_s=0.3)
    runner = threading.Thread(target=pipeline.run)
    runner.start()
    try:
        assert wait_for(lambda: pipeline.windower.samples_received > RATE)
        assert pipeline.health() == (True, "ok")

        fake_mic.unplugged = True
        assert wait_for(lambda: not pipeline.health()[0])
        assert pipeline.health()[1].startswith("audio stalled")
        assert metrics.registry.get_sample_value("earshot_audio_source_errors_total") == 1.0
        assert runner.is_alive()  # the agent keeps running and keeps trying

        heard_while_lost = pipeline.windower.samples_received
        fake_mic.unplugged = False
        assert wait_for(lambda: pipeline.windower.samples_received > heard_while_lost + RATE)
        assert pipeline.health() == (True, "ok")
        assert fake_mic.reinitialised >= 1  # PortAudio was re-initialised to see the re-plugged mic
    finally:
        pipeline.stop()
        runner.join(10.0)
    assert not runner.is_alive() and pipeline.error is None
