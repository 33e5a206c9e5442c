"""Real PortAudio/ALSA capture without hardware: an ALSA ``file`` PCM whose ``infile`` is raw PCM, opened
by sounddevice as an input device. PortAudio reads the ALSA config when it initialises, so every capture
runs in a subprocess with ``ALSA_CONFIG_PATH`` pointing at the test's config."""

from __future__ import annotations

import ctypes.util
import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from support.onnx_models import noise, siren_sweep, to_s16le

ROOT = Path(__file__).resolve().parents[1]
SYSTEM_ALSA_CONF = Path("/usr/share/alsa/alsa.conf")
DEVICE = "earshot_capture"

pytestmark = pytest.mark.skipif(
    not SYSTEM_ALSA_CONF.is_file() or ctypes.util.find_library("portaudio") is None,
    reason="needs ALSA (libasound2) and PortAudio (libportaudio2)",
)

ALSA_CONF = """
<{system}>
pcm.{device} {{
    type plug
    slave {{ pcm "earshot_file" format S16_LE rate {rate} channels 1 }}
    hint {{ show on description "earshot test capture" }}
}}
pcm.earshot_file {{
    type file
    slave.pcm "null"
    file "/dev/null"
    infile "{infile}"
    format "raw"
}}
"""


def alsa_env(tmp_path: Path, samples: np.ndarray, rate: int = 16000) -> dict[str, str]:
    """Write raw s16le PCM and an ALSA config exposing it as input device ``earshot_capture``."""
    infile = tmp_path / "capture.raw"
    infile.write_bytes(to_s16le(samples))
    conf = tmp_path / "alsa.conf"
    conf.write_text(ALSA_CONF.format(system=SYSTEM_ALSA_CONF, device=DEVICE, rate=rate, infile=infile))
    return dict(os.environ, ALSA_CONFIG_PATH=str(conf), PYTHONPATH=str(ROOT))


CAPTURE_SCRIPT = """
import json, sys
import numpy as np
from edge_agent.ring_buffer import RingBuffer
from edge_agent.sources import MicSource
source = MicSource("earshot_cap", block_size=256, preferred_rate=16000)  # matched by name substring
ring = RingBuffer(16000 * 60, source.channels, source.dtype)
source.start(ring)
blocks, frames = [], 0
while frames < 32000:
    block = ring.read(32000 - frames, timeout=10.0)
    blocks.append(block)
    frames += len(block)
source.stop()
np.save(sys.argv[1], np.concatenate(blocks))
print(json.dumps({"rate": source.sample_rate, "description": source.description}))
"""


def test_mic_source_captures_the_exact_samples_through_portaudio(tmp_path: Path) -> None:
    samples = noise(3.0, amplitude=0.3)
    env = alsa_env(tmp_path, samples)
    out = tmp_path / "captured.npy"
    result = subprocess.run(
        [sys.executable, "-c", CAPTURE_SCRIPT, str(out)], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["rate"] == 16000 and DEVICE in info["description"]
    captured = np.load(out)
    assert captured.dtype == np.int16 and captured.shape == (32000, 1)
    expected = np.frombuffer(to_s16le(samples), dtype="<i2")[:32000]
    np.testing.assert_array_equal(captured[:, 0], expected)


def test_list_devices_shows_the_alsa_device(tmp_path: Path) -> None:
    env = alsa_env(tmp_path, noise(0.1))
    result = subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "agent", "--list-devices"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0 and DEVICE in result.stdout and "mic:INDEX" in result.stdout


def test_a_missing_device_is_a_one_line_error(tmp_path: Path, siren_model: Path) -> None:
    env = alsa_env(tmp_path, noise(0.1))
    command = [
        sys.executable,
        "-m",
        "edge_agent.cli",
        "agent",
        "--source",
        "mic:no-such-mic",
        "--model",
        str(siren_model),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        "earshot agent: no audio input device matches 'no-such-mic'; see earshot agent --list-devices"
    )


def test_the_agent_detects_a_siren_from_the_alsa_device_and_stops_on_sigterm(
    tmp_path: Path, siren_model: Path
) -> None:
    siren = siren_sweep(3.0) + noise(3.0, amplitude=0.05, seed=1)
    audio = np.concatenate([noise(1.0, amplitude=0.05), siren])
    env = alsa_env(tmp_path, audio)
    agent = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "agent",
            "--source",
            f"mic:{DEVICE}",
            "--model",
            str(siren_model),
            "--mqtt",
            "none",
            "--log-level",
            "WARNING",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(60, agent.kill)  # a hung agent fails the test instead of hanging it
    watchdog.start()
    try:
        first = json.loads(agent.stdout.readline() or "{}")  # blocks until the first event line
        agent.send_signal(signal.SIGTERM)
        rest, errors = agent.communicate(timeout=30)
    finally:
        watchdog.cancel()
        if agent.poll() is None:
            agent.kill()
    assert (first["label"], first["kind"]) == ("siren", "start")
    assert agent.returncode == 0, errors
    assert [json.loads(line)["kind"] for line in rest.splitlines()] == ["end"]  # closed on shutdown
    assert "Traceback" not in errors
