"""Hostile inputs are one line, never a traceback or a memory blow-up (issue 11, items 21-25)."""

from __future__ import annotations

import io
import os
import resource
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support.onnx_models import noise, siren_sweep, write_audio

from edge_agent.config import AudioConfig
from edge_agent.sources import SourceError, open_source

ROOT = Path(__file__).resolve().parents[1]
AGENT_MEMORY = 3 << 30  # address space for a child agent: a blow-up fails fast instead of eating the box


def limit_memory() -> None:
    """In the child, before exec: a runaway allocation becomes a MemoryError, not an OOM of the machine."""
    resource.setrlimit(resource.RLIMIT_AS, (AGENT_MEMORY, AGENT_MEMORY))


def earshot(*args: str, stdin: bytes = b"", timeout: float = 120) -> subprocess.CompletedProcess:
    """``earshot ...`` in a fresh process with a memory limit."""
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=limit_memory,
    )


def one_line_error(result: subprocess.CompletedProcess, command: str, *fragments: str) -> str:
    """Exit 2 and exactly one stderr line naming every fragment."""
    stderr = result.stderr.decode(errors="replace")
    lines = stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith(f"earshot {command}: ") and all(f in lines[0] for f in fragments), lines[0]
    return lines[0]


def siren_clip(rate: int = 16000) -> np.ndarray:
    """1 s of noise, 2 s of siren, 2 s of noise."""
    return np.concatenate(
        [
            noise(1.0, rate, 0.05),
            siren_sweep(2.0, rate) + noise(2.0, rate, 0.05, seed=1),
            noise(2.0, rate, 0.05, seed=2),
        ]
    )


# --- item 21: sample rates and buffer sizes ----------------------------------------------------------


def wav_claiming(tmp_path: Path, rate: int) -> Path:
    """A real 16 kHz WAV whose header claims ``rate`` Hz."""
    path = write_audio(tmp_path / f"claims-{rate}.wav", siren_clip())
    data = bytearray(path.read_bytes())
    data[24:28] = struct.pack("<I", rate)  # the fmt chunk's sample rate
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("rate", [2**31 - 1, 1, 999, 768001])
def test_a_wav_header_with_an_absurd_rate_is_one_line(tmp_path: Path, siren_model: Path, rate: int) -> None:
    result = earshot(
        "agent",
        "--source",
        str(wav_claiming(tmp_path, rate)),
        "--model",
        str(siren_model),
        "--fast",
        "--mqtt",
        "none",
    )
    one_line_error(result, "agent", f"{rate} Hz", "1000..768000")


def test_raw_stdin_whose_ring_buffer_would_be_huge_is_one_line(siren_model: Path) -> None:
    # 10 s of 768 kHz x 64 channels of int16 is 983 MB of ring buffer.
    result = earshot(
        "agent",
        "--source",
        "-",
        "--stdin-rate",
        "768000",
        "--stdin-channels",
        "64",
        "--model",
        str(siren_model),
        "--mqtt",
        "none",
    )
    one_line_error(result, "agent", "ring buffer", "audio.ring_seconds")


def test_ring_and_block_sizes_are_bounded_for_every_source(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="ring buffer"):
        open_source(AudioConfig(source="-", stdin_rate=768000, stdin_channels=64), 16000, io.BytesIO())
    with pytest.raises(SourceError, match="ring buffer"):  # 4 blocks of 2^20 frames x 64 channels x float32
        wide = write_audio(tmp_path / "wide.wav", np.zeros((16000, 64), np.float32))
        open_source(AudioConfig(source=str(wide), block_size=1 << 20), 16000)
    ordinary = write_audio(tmp_path / "ok.wav", np.zeros((48000, 2), np.float32), 48000)
    assert open_source(AudioConfig(source=str(ordinary), ring_seconds=60), 16000).sample_rate == 48000


def test_odd_but_real_rates_still_run(tmp_path: Path, siren_model: Path) -> None:
    path = write_audio(tmp_path / "r8000.wav", siren_clip(8000), 8000)
    result = earshot("agent", "--source", str(path), "--model", str(siren_model), "--fast", "--mqtt", "none")
    assert result.returncode == 0, result.stderr.decode()[-3000:]
    assert b'"kind":"start"' in result.stdout


# --- item 23: nested TOML, credentials in URLs, idle metrics connections -----------------------------


@pytest.mark.parametrize(
    "value", ["[" * 5000 + "]" * 5000, "{ a = " * 2000 + "1" + " }" * 2000], ids=["arrays", "inline-tables"]
)
def test_deeply_nested_toml_is_a_one_line_config_error(tmp_path: Path, value: str) -> None:
    path = tmp_path / "deep.toml"
    path.write_text(f"[detector]\nthresholds = {value}\n")
    result = earshot("agent", "--check-config", str(path))
    one_line_error(result, "agent", str(path), "nested too deeply")


SECRET = "S3cret-Pa55"


@pytest.mark.parametrize(
    "flag, url, key, hint",
    [
        ("--mqtt", f"mqtt://sensor:{SECRET}@broker.local:1883", "mqtt.url", "EARSHOT_MQTT_PASSWORD"),
        ("--mqtt", f"mqtts://{SECRET}@broker.local", "mqtt.url", "mqtt.username"),
        ("--webhook", f"https://sensor:{SECRET}@hooks.local/earshot", "webhook.url", "EARSHOT_WEBHOOK_TOKEN"),
    ],
)
def test_credentials_in_a_url_are_refused_and_never_echoed(flag: str, url: str, key: str, hint: str) -> None:
    result = earshot("agent", flag, url, "--check-config", "/dev/null")
    line = one_line_error(result, "agent", key, hint)
    assert SECRET not in line and "sensor" not in line, line
    variable = f"EARSHOT_{key.split('.')[0].upper()}_URL"
    from_env = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "agent", "--check-config", "/dev/null"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT), variable: url},
    )
    assert from_env.returncode == 2 and SECRET not in from_env.stderr + from_env.stdout, from_env.stderr


def test_idle_connections_to_the_metrics_port_are_closed() -> None:
    import socket
    import threading
    import time

    from edge_agent.http_server import IDLE_TIMEOUT_S, start_http_server
    from edge_agent.metrics import AgentMetrics

    assert IDLE_TIMEOUT_S <= 30
    server = start_http_server(AgentMetrics(), port=0)
    baseline = threading.active_count()
    try:
        idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(20)]
        half = socket.create_connection(("127.0.0.1", server.port))
        half.sendall(b"GET /metrics HTTP/1.1\r\n")  # a request that never ends
        deadline = time.monotonic() + IDLE_TIMEOUT_S + 5
        while threading.active_count() > baseline and time.monotonic() < deadline:
            time.sleep(0.1)
        assert threading.active_count() <= baseline, "idle connections still hold handler threads"
        for connection in [*idle, half]:
            connection.settimeout(1.0)
            assert connection.recv(1024) == b"" or connection.recv(1024) == b""  # a 408 reply, then closed
            connection.close()
        with socket.create_connection(("127.0.0.1", server.port)) as fresh:  # it still serves
            fresh.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert fresh.recv(1024).startswith(b"HTTP/1.0 200")
    finally:
        server.shutdown()


# --- item 24: a reader that goes away (`| head`) -------------------------------------------------------


def run_into_closed_pipe(*args: str, lines: int) -> tuple[int, str]:
    """``earshot ARGS | head -n LINES``: read that many lines, close the pipe; (exit code, stderr)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "edge_agent.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    for _ in range(lines):
        process.stdout.readline()
    process.stdout.close()
    try:
        _, stderr = process.communicate(timeout=120)
    finally:
        process.kill()
    return process.returncode, stderr.decode(errors="replace")


@pytest.fixture(scope="module")
def long_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 s of sirens and noise: far more output than ``head`` reads."""
    return write_audio(tmp_path_factory.mktemp("pipe") / "long.wav", np.tile(siren_clip(), 9))


@pytest.mark.parametrize("command", ["listen", "agent events", "check-config", "list-devices"])
def test_a_closed_pipe_ends_quietly(command: str, long_clip: Path, siren_model: Path, tmp_path: Path) -> None:
    config = tmp_path / "agent.toml"
    config.write_text("[detector]\ncooldown_s = 0\nend_after_s = 0.3\n")
    args, lines = {
        "listen": (["listen", "--source", str(long_clip), "--model", str(siren_model), "--fast"], 1),
        "agent events": (
            [
                "agent",
                "--source",
                str(long_clip),
                "--model",
                str(siren_model),
                "--fast",
                "--config",
                str(config),
                "--mqtt",
                "none",
            ],
            1,
        ),
        "check-config": (["agent", "--check-config", str(config)], 0),
        "list-devices": (["agent", "--list-devices"], 0),
    }[command]
    code, stderr = run_into_closed_pipe(*args, lines=lines)
    for unwanted in ("Traceback", "BrokenPipe", "Exception ignored"):
        assert unwanted not in stderr, stderr[-3000:]
    assert code in (0, 2), stderr[-3000:]  # 2: no PortAudio here, said in one line
