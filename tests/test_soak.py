"""Soak: an hour of street noise with a siren every 3 minutes, replayed through ``earshot agent --fast``.

RSS stays flat (VmRSS sampled from /proc while it runs), /metrics reports 0 overruns, and the agent's
detection count equals a single offline pass (the batch ``LogMel`` + the model + the detector, run
directly over the whole file). Run with ``-s`` to see the figures.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families
from support.mosquitto import free_port
from support.onnx_models import noise, siren_sweep

from edge_agent.config import AudioConfig, DetectorConfig
from edge_agent.detector import Detector
from edge_agent.frontend import StreamingLogMel
from edge_agent.onnx_model import OnnxModel
from edge_agent.windowing import hop_samples

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000
SOAK_SECONDS = int(os.environ.get("EARSHOT_SOAK_SECONDS", "3600"))
SIREN_EVERY_S = 180
RSS_GROWTH_LIMIT_MB = 10.0
WARMUP_AUDIO_S = 120.0  # RSS "start" is sampled once this much audio went through (imports, arenas settled)

pytestmark = pytest.mark.slow


def write_soak_audio(path: Path, seconds: int) -> int:
    """Write ``seconds`` of noise with a 4 s siren sweep every SIREN_EVERY_S, minute by minute; bursts."""
    bursts = 0
    with sf.SoundFile(str(path), "w", RATE, 1, subtype="PCM_16", format="FLAC") as out:
        for minute in range(0, seconds, 60):
            chunk = noise(min(60, seconds - minute), RATE, amplitude=0.02, seed=minute)
            # Bursts at 30 s into every third minute, never in the last minute (no open episode at the end).
            if minute % SIREN_EVERY_S == 0 and minute + 120 <= seconds:
                chunk[30 * RATE : 34 * RATE] += siren_sweep(4.0, RATE)
                bursts += 1
            out.write(chunk)
    return bursts


@pytest.fixture(scope="module")
def hour(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The soak recording (FLAC keeps an hour at ~50 MB) and how many sirens it holds."""
    path = tmp_path_factory.mktemp("soak") / "hour.flac"
    return path, write_soak_audio(path, SOAK_SECONDS)


def file_logmel(path: Path, frontend: StreamingLogMel, chunk_s: int = 60) -> np.ndarray:
    """(frames, n_mels) log-mel of every STFT frame of the whole file, computed chunk by chunk."""
    p = frontend.params
    step = chunk_s * RATE // p.hop_length * p.hop_length
    parts = []
    with sf.SoundFile(str(path)) as audio:
        for start in range(0, audio.frames, step):
            audio.seek(start)
            samples = audio.read(step + p.n_fft - p.hop_length, dtype="float32")  # (samples,)
            if len(samples) >= p.n_fft:
                parts.append(frontend.frames(samples)[: step // p.hop_length])
    return np.concatenate(parts)


def offline_starts(path: Path, model_path: Path) -> int:
    """Detection starts from one direct pass: the whole file's log-mel at once, every window on the
    agent's hop cut from it, the model in batches, the detector."""
    model = OnnxModel.load(model_path)
    params = model.frontend
    hop = hop_samples(AudioConfig().hop_seconds, RATE, params.hop_length)
    logmel = file_logmel(path, StreamingLogMel(params, hop))  # (frames, n_mels)
    every = hop // params.hop_length  # STFT frames per hop
    windows = np.lib.stride_tricks.sliding_window_view(logmel, params.n_frames, axis=0)[::every]
    detector = Detector(model.labels, DetectorConfig(), model.metadata.thresholds)
    starts = 0
    for first in range(0, len(windows), 1024):
        batch = np.ascontiguousarray(windows[first : first + 1024])[:, None]  # (batch, 1, n_mels, n_frames)
        for i, row in enumerate(model.scores(batch)):  # (n_classes,)
            now = ((first + i) * hop + params.window_samples) / RATE
            starts += sum(d.kind == "start" for d in detector.update(row, now))
    return starts


def rss_mb(pid: int) -> float | None:
    """VmRSS of a live process, MB; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), None)
    return None if kb is None else kb / 1024


def scrape(port: int) -> dict[str, float]:
    """The agent's unlabelled metric samples, by name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


def test_an_hour_replayed_fast_holds_rss_flat_no_overruns_and_matches_offline(
    hour: tuple[Path, int], siren_model: Path, tmp_path: Path
) -> None:
    path, bursts = hour
    port = free_port()
    events, log = tmp_path / "events.jsonl", tmp_path / "agent.log"
    with events.open("w") as out, log.open("w") as err:
        started = time.monotonic()
        agent = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "edge_agent.cli",
                "agent",
                "--source",
                str(path),
                "--model",
                str(siren_model),
                "--fast",
                "--mqtt",
                "none",
                "--metrics-port",
                str(port),
            ],
            stdout=out,
            stderr=err,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        samples: list[tuple[float, float, dict[str, float]]] = []  # (wall s, RSS MB, metrics)
        try:
            while agent.poll() is None and time.monotonic() - started < 600:
                time.sleep(0.5)
                rss = rss_mb(agent.pid)
                try:
                    metrics = scrape(port)
                except OSError:
                    continue  # not serving yet, or already shutting down
                if rss is not None and agent.poll() is None:
                    samples.append((time.monotonic() - started, rss, metrics))
            agent.wait(timeout=60)
        finally:
            if agent.poll() is None:
                agent.kill()
    wall = time.monotonic() - started
    assert agent.returncode == 0, log.read_text()[-3000:]
    warm = [s for s in samples if s[2].get("earshot_audio_seconds_total", 0) >= WARMUP_AUDIO_S]
    assert len(warm) >= 2, f"too few samples after warm-up: {len(warm)} of {len(samples)}"
    first, last = warm[0], warm[-1]
    starts = sum(json.loads(line)["kind"] == "start" for line in events.read_text().splitlines())
    offline = offline_starts(path, siren_model)
    figures = {
        "audio_s": SOAK_SECONDS,
        "wall_s": round(wall, 1),
        "speed_x_realtime": round(SOAK_SECONDS / wall, 1),
        "rtf_gauge": round(last[2]["earshot_realtime_factor"], 5),
        "rss_start_mb": round(first[1], 1),
        "rss_end_mb": round(last[1], 1),
        "rss_start_at_audio_s": round(first[2]["earshot_audio_seconds_total"]),
        "rss_end_at_audio_s": round(last[2]["earshot_audio_seconds_total"]),
        "rss_max_mb": round(max(s[1] for s in warm), 1),
        "overruns": last[2]["earshot_ring_buffer_overruns_total"],
        "detections": starts,
        "offline_detections": offline,
        "sirens_in_file": bursts,
    }
    print("\nsoak figures:", json.dumps(figures))
    assert last[2]["earshot_audio_seconds_total"] >= 0.9 * SOAK_SECONDS  # the end sample is near the end
    assert last[1] - first[1] < RSS_GROWTH_LIMIT_MB, figures
    assert figures["overruns"] == 0, figures
    assert starts == offline == bursts, figures
