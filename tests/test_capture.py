"""Clip capture: off by default and then writes nothing anywhere; when enabled, a FLAC around each alert
start (pre-roll + post-roll, the right samples at the model rate), named in the event; retention by size
and age removes the oldest of the agent's own clips only."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import soundfile as sf
from support.onnx_models import noise, siren_sweep, write_audio

from edge_agent.config import AgentConfig, AudioConfig, CaptureConfig, DetectorConfig
from edge_agent.metrics import AgentMetrics
from edge_agent.onnx_model import OnnxModel
from edge_agent.pipeline import Pipeline, WindowResult
from edge_agent.publishers import make_publishers
from edge_agent.publishers.capture import CLIP_NAME, ClipCapture, apply_retention, clip_name
from edge_agent.sources import open_source

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "edge_agent/schemas/event.schema.json").read_text())
RATE = 16000


def agent(*args: str, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The real agent in a fresh process."""
    command = [sys.executable, "-m", "edge_agent.cli", "agent", "--fast", "--mqtt", "none", *args]
    return subprocess.run(
        command,
        capture_output=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def street(siren_at: float, siren_s: float, total: float) -> np.ndarray:
    signal = noise(total, amplitude=0.05)
    start = int(siren_at * RATE)
    signal[start : start + int(siren_s * RATE)] += siren_sweep(siren_s)
    return signal


def run_pipeline(
    model: Path, tmp_path: Path, signal: np.ndarray, pre_roll_s: float, post_roll_s: float
) -> tuple[Pipeline, list[dict], list]:
    """The in-process pipeline over ``signal`` with capture into tmp_path/clips; events schema-checked."""
    audio = write_audio(tmp_path / "street.flac", signal)
    capture = CaptureConfig(
        enabled=True, dir=str(tmp_path / "clips"), pre_roll_s=pre_roll_s, post_roll_s=post_roll_s
    )
    config = AgentConfig(
        device_id="test-pole",
        audio=AudioConfig(source=str(audio), fast=True),
        detector=DetectorConfig(end_after_s=1.0, cooldown_s=5.0),
        capture=capture,
    )
    out, windows = io.StringIO(), []
    loaded = OnnxModel.load(model)
    identity = {"name": loaded.metadata.name, "version": loaded.metadata.version, "sha256": loaded.sha256}
    publishers = make_publishers(config, RATE, identity, AgentMetrics(), out=out)
    assert [p.name for p in publishers] == ["capture", "stdout"]  # capture first: it names the clip
    pipeline = Pipeline(
        config, loaded, open_source(config.audio, RATE), publishers=publishers, on_window=windows.append
    )
    assert pipeline.run() == 0
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    for event in events:
        jsonschema.validate(event, SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    return pipeline, events, windows


def alert_sample(windows: list[WindowResult]) -> int:
    """Stream sample at which the start was detected (no audio was lost, so time * rate)."""
    at = next(w.time_s for w in windows if any(d.kind == "start" for d in w.detections))
    return int(round(at * RATE))


def test_an_alert_saves_pre_and_post_roll_and_the_event_names_the_clip(
    tmp_path: Path, siren_model: Path
) -> None:
    signal = street(siren_at=3.0, siren_s=3.0, total=9.0)
    pipeline, events, windows = run_pipeline(siren_model, tmp_path, signal, pre_roll_s=2.0, post_roll_s=1.0)
    start, end = events
    assert start["kind"] == "start" and CLIP_NAME.match(start["clip"]) and end["clip"] == start["clip"]
    assert start["clip"].split("_")[-1] == start["event_id"][:8] + ".flac" and "_siren_" in start["clip"]
    assert os.listdir(tmp_path / "clips") == [start["clip"]]  # no temporary file left behind
    clip, rate = sf.read(str(tmp_path / "clips" / start["clip"]), dtype="float32")
    assert rate == RATE and len(clip) == 3 * RATE
    at = alert_sample(windows)
    np.testing.assert_allclose(clip, signal[at - 2 * RATE : at + RATE], atol=1e-4)  # 16-bit FLAC
    capture = pipeline.publishers[0]
    assert isinstance(capture, ClipCapture) and capture.written == [start["clip"]]


def test_a_stream_that_ends_during_the_post_roll_keeps_what_was_heard(
    tmp_path: Path, siren_model: Path
) -> None:
    signal = street(siren_at=1.0, siren_s=3.0, total=4.0)
    _, events, windows = run_pipeline(siren_model, tmp_path, signal, pre_roll_s=0.5, post_roll_s=30.0)
    clip, _ = sf.read(str(tmp_path / "clips" / events[0]["clip"]), dtype="float32")
    assert len(clip) == len(signal) - (alert_sample(windows) - RATE // 2)


def test_disabled_capture_writes_nothing_anywhere(tmp_path: Path, siren_model: Path) -> None:
    """The real agent with the default config: no clip, no directory, not a byte outside its inputs."""
    inputs = tmp_path / "inputs"
    audio = write_audio(inputs / "street.wav", street(siren_at=1.0, siren_s=3.0, total=6.0))
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    before = sorted(p for p in tmp_path.rglob("*"))
    env = {
        "HOME": str(home),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "TMPDIR": str(work),
    }
    result = agent("--source", str(audio), "--model", str(siren_model), cwd=work, env=env)
    assert result.returncode == 0, result.stderr.decode()
    events = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [e["kind"] for e in events] == ["start", "end"] and all("clip" not in e for e in events)
    # onnxruntime's native library itself, on import and before any agent code runs, keeps a telemetry
    # device id under $XDG_CACHE_HOME and a session id in $TMPDIR/.ses; no audio, not the agent's doing.
    ort_cache = home / "cache" / "Microsoft"
    created = [p for p in tmp_path.rglob("*") if p not in before]
    onnxruntime_own = [
        p for p in created if p.is_relative_to(ort_cache) or p in (home / "cache", work / ".ses")
    ]
    assert sorted(created) == sorted(onnxruntime_own)
    assert sorted(p for p in siren_model.parent.iterdir()) == sorted(
        [siren_model, siren_model.with_name(siren_model.stem + ".card.json")]
    )


def test_enabled_capture_through_the_agent_cli(tmp_path: Path, siren_model: Path) -> None:
    audio = write_audio(tmp_path / "street.flac", street(siren_at=2.0, siren_s=3.0, total=7.0))
    config = tmp_path / "agent.toml"
    config.write_text(f'[capture]\nenabled = true\ndir = "{tmp_path / "clips"}"\n')
    result = agent("--source", str(audio), "--model", str(siren_model), "--config", str(config))
    assert result.returncode == 0, result.stderr.decode()
    start = json.loads(result.stdout.decode().splitlines()[0])
    info = sf.info(str(tmp_path / "clips" / start["clip"]))
    assert info.format == "FLAC" and info.samplerate == RATE and info.duration == pytest.approx(3.0)
    assert (tmp_path / "clips").stat().st_mode & 0o077 == 0  # clips are the owner's only


def test_an_unusable_capture_dir_is_a_one_line_error(tmp_path: Path, siren_model: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    config = tmp_path / "agent.toml"
    config.write_text(f'[capture]\nenabled = true\ndir = "{blocker / "clips"}"\n')
    audio = write_audio(tmp_path / "quiet.wav", noise(2.0))
    result = agent("--source", str(audio), "--model", str(siren_model), "--config", str(config))
    stderr = result.stderr.decode()
    assert result.returncode == 2 and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("earshot agent: capture.dir: cannot use ")


def make_clip(directory: Path, age_s: float, size: int, now: float, label: str = "siren") -> Path:
    name = clip_name(now - age_s, label, f"{int(age_s):08x}-0000-4000-8000-000000000000")
    path = directory / name
    path.write_bytes(b"\0" * size)
    os.utime(path, (now - age_s, now - age_s))
    return path


def test_retention_removes_old_clips_then_the_oldest_until_the_total_fits(tmp_path: Path) -> None:
    now = time.time()
    days = 86400
    ancient = make_clip(tmp_path, 9 * days, 10, now)
    old, middle, new = (make_clip(tmp_path, age, 400, now, "gun_shot") for age in (3 * days, 2 * days, 60))
    foreign = [tmp_path / "notes.txt", tmp_path / "holiday.flac"]  # not the agent's: never touched
    for path in foreign:
        path.write_bytes(b"\0" * 5000)
        os.utime(path, (now - 30 * days, now - 30 * days))
    removed = apply_retention(tmp_path, max_bytes=900, max_age_s=7 * days, now=now)
    assert removed == [ancient.name, old.name]
    assert sorted(tmp_path.iterdir()) == sorted([middle, new, *foreign])
    assert apply_retention(tmp_path, max_bytes=900, max_age_s=7 * days, now=now) == []
    assert apply_retention(tmp_path / "absent", max_bytes=1, max_age_s=1) == []


def test_clip_names_sort_by_time_and_are_safe() -> None:
    first = clip_name(1_700_000_000.25, "car horn/x", "1A2B3C4D-0000-4000-8000-000000000000")
    assert first == "20231114T221320.250Z_car-horn-x_1a2b3c4d.flac" and CLIP_NAME.match(first)
    assert clip_name(1_700_000_001.0, "siren", "0" * 8) > first
