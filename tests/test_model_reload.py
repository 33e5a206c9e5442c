"""Model updates without downtime, while audio streams: a good model is swapped in (later events carry its
sha256), a tampered or incompatible one is refused (the old one keeps running, the failure is counted),
by file change in-process and by SIGHUP to the real agent; not one sample is dropped."""

from __future__ import annotations

import io
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from support.onnx_models import band_energy_model, noise, siren_sweep, to_s16le, write_card

from edge_agent.config import AgentConfig, AudioConfig, DetectorConfig
from edge_agent.frontend import FrontendParams
from edge_agent.metrics import AgentMetrics
from edge_agent.model_card import card_path
from edge_agent.model_reload import ModelReloader
from edge_agent.onnx_model import OnnxModel
from edge_agent.pipeline import Pipeline, WindowResult
from edge_agent.publishers.stdout import StdoutPublisher
from edge_agent.sources import StdinSource
from edge_agent.windowing import Windower

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000
CHUNK = RATE // 8  # 0.125 s per pipe write
DETECTOR = DetectorConfig(end_after_s=0.5, cooldown_s=0.5)


def install(staged: Path, live: Path) -> None:
    """What operators are told to do: card first, then the model, each written whole and renamed."""
    for source, target in ((card_path(staged), card_path(live)), (staged, live)):
        temporary = target.with_name(target.name + ".new")
        temporary.write_bytes(source.read_bytes())
        os.replace(temporary, target)


def staged_model(
    directory: Path, version: str, *, tampered: bool = False, params: FrontendParams | None = None
) -> Path:
    """A model + card ready to install; ``tampered`` changes the file after its card was written."""
    path = band_energy_model(directory / version / "live.onnx", version=version, params=params)
    write_card(path)
    if tampered:
        path.write_bytes(path.read_bytes() + b"\0")
    return path


def siren_then_quiet(seed: int) -> np.ndarray:
    """2 s of siren over street noise, then 1.5 s of noise: one start and one end with DETECTOR."""
    siren = siren_sweep(2.0) + noise(2.0, amplitude=0.05, seed=seed)
    return np.concatenate([siren, noise(1.5, amplitude=0.05, seed=seed + 1)])


class Feeder:
    """Writes s16le audio into a pipe in small chunks: a real-time-like stream the test controls."""

    def __init__(self, write_fd: int) -> None:
        self.fd, self.frames = write_fd, 0

    def send(self, samples: np.ndarray) -> None:
        for start in range(0, len(samples), CHUNK):
            chunk = samples[start : start + CHUNK]
            os.write(self.fd, to_s16le(chunk))
            self.frames += len(chunk)
            time.sleep(0.005)

    def drain(self, pipeline: Pipeline, timeout: float = 20.0) -> None:
        """Wait (sending nothing) until the consumer has taken every sample sent so far."""
        deadline = time.monotonic() + timeout
        while pipeline.windower.samples_received < self.frames:
            assert time.monotonic() < deadline, "the consumer did not catch up"
            time.sleep(0.01)

    def until(self, done: Callable[[], bool], timeout: float = 20.0) -> None:
        """Keep the stream flowing (quiet street noise) until ``done``."""
        deadline, seed = time.monotonic() + timeout, 100
        while not done():
            assert time.monotonic() < deadline, "condition not reached while streaming"
            self.send(noise(0.25, amplitude=0.05, seed=seed))
            seed += 1


@pytest.fixture()
def live_model(tmp_path: Path) -> Path:
    path = staged_model(tmp_path / "staging", "a")
    live = tmp_path / "live" / "live.onnx"
    live.parent.mkdir()
    install(path, live)
    return live


def streaming_pipeline(live: Path, metrics: AgentMetrics, windows: list[WindowResult]):
    read_fd, write_fd = os.pipe()
    source = StdinSource(RATE, 1, 512, stream=os.fdopen(read_fd, "rb", buffering=0))
    config = AgentConfig(device_id="test-pole", audio=AudioConfig(source="-"), detector=DETECTOR)
    out = io.StringIO()
    pipeline = Pipeline(
        config,
        OnnxModel.load(live),
        source,
        metrics=metrics,
        publishers=[StdoutPublisher(out)],
        on_window=windows.append,
    )
    return pipeline, Feeder(write_fd), out


def reloads(metrics: AgentMetrics, result: str) -> float:
    return metrics.registry.get_sample_value("earshot_model_reloads_total", {"result": result})


def test_file_change_swaps_a_good_model_and_refuses_a_tampered_one_without_dropping_audio(
    tmp_path: Path, live_model: Path
) -> None:
    metrics, windows = AgentMetrics(), []
    pipeline, feeder, out = streaming_pipeline(live_model, metrics, windows)
    first = pipeline.model.sha256
    reloader = ModelReloader(pipeline, live_model, threads=1, allow_ungated=False, poll_s=0.05)
    runner = threading.Thread(target=pipeline.run)
    runner.start()
    reloader.start()
    feeder.send(siren_then_quiet(1))
    feeder.drain(pipeline)
    install(staged_model(tmp_path / "staging", "b"), live_model)
    feeder.until(lambda: pipeline.model.sha256 != first)
    second = pipeline.model.sha256
    feeder.send(siren_then_quiet(2))
    feeder.drain(pipeline)
    install(staged_model(tmp_path / "staging", "c", tampered=True), live_model)
    feeder.until(lambda: reloads(metrics, "failed") == 1)
    feeder.send(siren_then_quiet(3))
    os.close(feeder.fd)
    runner.join(20.0)
    reloader.stop()

    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [e["model"]["version"] for e in events if e["kind"] == "start"] == ["a", "b", "b"]
    assert [e["model"]["sha256"] for e in events][-2:] == [second, second]  # the tampered one never ran
    assert pipeline.model.sha256 == second and pipeline.health() == (True, "ok")
    assert reloads(metrics, "ok") == 1 and reloads(metrics, "failed") == 1
    assert (
        metrics.registry.get_sample_value(
            "earshot_model_info", {"name": "band-energy", "version": "b", "sha256": second}
        )
        == 1
    )
    # No audio dropped: every sample written was windowed, and the windows run on without a gap.
    assert pipeline.ring.frames_written == feeder.frames == pipeline.windower.samples_received
    assert pipeline.ring.overruns == 0
    expected = Windower(pipeline.windower.window, pipeline.hop)
    expected_count = len(expected.push(np.zeros(feeder.frames, dtype=np.float32)) + expected.flush())
    assert [w.window.index for w in windows] == list(range(expected_count))


def test_incompatible_models_are_refused_with_a_reason(
    tmp_path: Path, live_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = AgentMetrics()
    pipeline, feeder, _ = streaming_pipeline(live_model, metrics, [])
    reloader = ModelReloader(pipeline, live_model, threads=1, allow_ungated=False, poll_s=0)
    first = pipeline.model.sha256
    longer = staged_model(tmp_path / "staging", "long", params=FrontendParams(window_seconds=2.0))
    install(longer, live_model)
    assert not reloader.check()
    fewer = band_energy_model(tmp_path / "staging" / "few" / "live.onnx", labels=("siren", "dog_bark"))
    write_card(fewer)
    install(fewer, live_model)
    assert not reloader.check()
    assert not reloader.check()  # nothing changed since: not tried again
    assert reloads(metrics, "failed") == 2 and pipeline._offered is None and pipeline.model.sha256 == first
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "restart the agent to change the window length" in messages
    assert "restart the agent to change labels" in messages
    os.close(feeder.fd)


def test_a_new_front_end_is_rebuilt_on_swap(tmp_path: Path, live_model: Path) -> None:
    """Same window, other mel count: the feature extractor is rebuilt and the new model scores."""
    metrics, windows = AgentMetrics(), []
    pipeline, feeder, _ = streaming_pipeline(live_model, metrics, windows)
    runner = threading.Thread(target=pipeline.run)
    runner.start()
    feeder.send(noise(1.5, amplitude=0.05))
    install(staged_model(tmp_path / "staging", "mels", params=FrontendParams(n_mels=40)), live_model)
    reloader = ModelReloader(pipeline, live_model, threads=1, allow_ungated=False, poll_s=0)
    reloader.request()  # what SIGHUP does; the watcher thread verifies, the consumer swaps
    reloader.start()
    feeder.until(lambda: pipeline.model.metadata.version == "mels")
    feeder.send(siren_then_quiet(4))
    os.close(feeder.fd)
    runner.join(20.0)
    reloader.stop()
    assert pipeline.features.params.n_mels == 40 and pipeline.error is None
    assert max(w.scores[pipeline.model.labels.index("siren")] for w in windows[-20:]) > 0.5


def _read_until(stream, text: str, seen: list[str], timeout: float = 30.0) -> None:
    """Read the agent's stderr (unbuffered, so select tells the truth) until it contains ``text``."""
    deadline = time.monotonic() + timeout
    while text not in "".join(seen):
        assert time.monotonic() < deadline, f"agent never logged {text!r}; stderr:\n" + "".join(seen)
        ready, _, _ = select.select([stream], [], [], 0.2)
        if ready:
            seen.append(os.read(stream.fileno(), 65536).decode())


def test_sighup_reloads_the_real_agent_and_refuses_a_tampered_model(tmp_path: Path, live_model: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[detector]\nend_after_s = 0.5\ncooldown_s = 0.5\n[model]\nreload_poll_s = 0\n")
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "agent",
            "--source",
            "-",
            "--model",
            str(live_model),
            "--config",
            str(config),
            "--mqtt",
            "none",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    seen: list[str] = []
    try:
        agent.stdin.write(to_s16le(siren_then_quiet(1)))
        agent.stdin.flush()
        _read_until(agent.stderr, "siren end", seen)  # running, signal handlers installed
        install(staged_model(tmp_path / "staging", "b"), live_model)
        agent.send_signal(signal.SIGHUP)
        _read_until(agent.stderr, "swapping in at the next window", seen)
        agent.stdin.write(to_s16le(siren_then_quiet(2)))
        agent.stdin.flush()
        _read_until(agent.stderr, "model swapped", seen)
        install(staged_model(tmp_path / "staging", "c", tampered=True), live_model)
        agent.send_signal(signal.SIGHUP)
        _read_until(agent.stderr, "refused", seen)
        agent.stdin.write(to_s16le(siren_then_quiet(3)))
        agent.stdin.close()
        agent.wait(timeout=30)
        stdout, stderr = agent.stdout.read(), agent.stderr.read()
    finally:
        agent.kill()
    assert agent.returncode == 0, "".join(seen) + stderr.decode()
    events = [json.loads(line) for line in stdout.decode().splitlines()]
    assert [e["model"]["version"] for e in events if e["kind"] == "start"] == ["a", "b", "b"]
    refusal = next(line for line in "".join(seen).splitlines() if "refused" in line)
    assert "does not match its card" in refusal and "Traceback" not in "".join(seen) + stderr.decode()
