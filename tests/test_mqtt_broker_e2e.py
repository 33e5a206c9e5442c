"""End to end: the real ``earshot agent`` process, a real mosquitto, ``mosquitto_sub`` and an HTTP scrape."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support import mosquitto as broker_support
from support.mosquitto import Mosquitto, Subscriber, free_port, wait_for_port
from support.onnx_models import band_energy_model, noise, siren_sweep, write_audio, write_card

REPO = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((REPO / "edge_agent/schemas/event.schema.json").read_text())
DEVICE = "e2e-sensor"
mosquitto_broker = broker_support.mosquitto_broker  # the fixture: a real broker per test

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto_sub") is None, reason="mosquitto-clients is not installed"
)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The band-energy test model with its card (no gate record: runs with --allow-ungated)."""
    model = band_energy_model(tmp_path_factory.mktemp("model") / "tiny.onnx")
    write_card(model, gate=None)
    return model


@pytest.fixture(scope="module")
def siren_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """1.5 s of quiet noise, 3 s of a siren sweep, 3 s of quiet noise (16 kHz mono WAV)."""
    samples = np.concatenate(
        [noise(1.5, amplitude=0.02, seed=1), siren_sweep(3.0), noise(3.0, amplitude=0.02, seed=2)]
    )
    return write_audio(tmp_path_factory.mktemp("audio") / "siren.wav", samples)


def _agent_command(*args: str) -> list[str]:
    """``earshot agent`` as installed; the same entry point through the interpreter otherwise."""
    earshot = shutil.which("earshot")
    return [earshot, "agent", *args] if earshot else [sys.executable, "-m", "edge_agent.cli", "agent", *args]


def _agent_env(tmp_path: Path) -> dict[str, str]:
    """Keep the agent's queue in the test's directory, and its device id fixed."""
    return {
        **os.environ,
        "EARSHOT_DEVICE_ID": DEVICE,
        "EARSHOT_QUEUE_DIR": str(tmp_path / "queue"),
        "EARSHOT_MQTT_RECONNECT_MIN_S": "0.1",
        "EARSHOT_MQTT_RECONNECT_MAX_S": "0.5",
    }


@pytest.fixture()
def mosquitto_sub(mosquitto_broker: Mosquitto) -> Iterator[subprocess.Popen[str]]:
    """``mosquitto_sub`` waiting for the first siren event (QoS 1), started once its SUBACK is in."""
    # stdbuf: mosquitto_sub block-buffers a pipe, and we must see its SUBACK before the agent starts.
    line_buffered = ["stdbuf", "-oL"] if shutil.which("stdbuf") else []
    process = subprocess.Popen(
        [
            *line_buffered,
            "mosquitto_sub",
            "-h",
            "127.0.0.1",
            "-p",
            str(mosquitto_broker.port),
            "-q",
            "1",
            "-d",
            "-v",
            "-C",
            "1",
            "-W",
            "30",
            "-t",
            f"earshot/{DEVICE}/event/siren",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert process.stdout is not None
    for line in process.stdout:
        if "SUBACK" in line:
            break
    yield process
    if process.poll() is None:
        process.kill()
    process.wait(timeout=10)


def test_agent_delivers_a_schema_valid_siren_start_to_mosquitto_sub(
    mosquitto_broker: Mosquitto,
    mosquitto_sub: subprocess.Popen[str],
    tiny_model: Path,
    siren_wav: Path,
    tmp_path: Path,
) -> None:
    agent = subprocess.run(
        _agent_command(
            "--source",
            str(siren_wav),
            "--fast",
            "--mqtt",
            mosquitto_broker.url,
            "--allow-ungated",
            "--model",
            str(tiny_model),
        ),
        env=_agent_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert agent.returncode == 0, agent.stderr[-2000:]
    output, _ = mosquitto_sub.communicate(timeout=30)
    lines = [line for line in output.splitlines() if line.startswith(f"earshot/{DEVICE}/event/siren ")]
    assert len(lines) == 1, output
    event = json.loads(lines[0].split(" ", 1)[1])
    jsonschema.validate(event, SCHEMA)
    assert (event["label"], event["kind"], event["device_id"]) == ("siren", "start", DEVICE)
    assert event["ended_at"] is None and event["model"]["name"] == "band-energy"
    printed = [json.loads(line) for line in agent.stdout.splitlines() if line.startswith("{")]
    assert event in printed  # the same event on stdout and over MQTT
    assert [e["kind"] for e in printed if e["label"] == "siren"] == ["start", "end"]
    for other in printed:
        jsonschema.validate(other, SCHEMA)


def _scrape(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def test_running_agent_serves_metrics_and_health_and_its_last_will_fires_on_sigkill(
    mosquitto_broker: Mosquitto, tiny_model: Path, siren_wav: Path, tmp_path: Path
) -> None:
    subscriber = Subscriber(mosquitto_broker.port, f"earshot/{DEVICE}/#", client_id="e2e-watcher")
    port = free_port()
    agent = subprocess.Popen(  # paced in real time, so it is still running while we look at it
        _agent_command(
            "--source",
            str(siren_wav),
            "--mqtt",
            mosquitto_broker.url,
            "--allow-ungated",
            "--model",
            str(tiny_model),
            "--metrics-port",
            str(port),
        ),
        env=_agent_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for_port(port, timeout=20)
        subscriber.wait_for(lambda ms: any(m.topic.endswith("/event/siren") for m in ms), timeout=15)
        assert _scrape(f"http://127.0.0.1:{port}/healthz") == (200, "ok\n")
        status, body = _scrape(f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(body)
            for s in family.samples
        }
        assert samples[("earshot_audio_seconds_total", ())] > 1.0
        assert samples[("earshot_mqtt_connected", ())] == 1
        assert samples[("earshot_detections_total", (("label", "siren"),))] == 1
        assert samples[("earshot_model_ungated", ())] == 1
        assert samples[("earshot_inference_latency_seconds_count", ())] > 0
        assert any(
            name == "earshot_model_info" and dict(labels)["name"] == "band-energy" for name, labels in samples
        )
        time.sleep(0.3)  # let the PUBACK come back, then the delivered counter is exact
        _, body = _scrape(f"http://127.0.0.1:{port}/metrics")
        assert 'earshot_events_delivered_total{output="mqtt"} 1.0' in body
        assert 'earshot_queue_depth{output="mqtt"} 0.0' in body
        assert 'earshot_queue_dropped_total{output="mqtt"} 0.0' in body
        agent.send_signal(signal.SIGKILL)
        agent.wait(timeout=10)
        subscriber.wait_for(
            lambda ms: [m.payload for m in ms if m.topic.endswith("/availability")][-1:] == [b"offline"],
            timeout=5,
        )
    finally:
        if agent.poll() is None:
            agent.kill()
            agent.wait(timeout=10)
        subscriber.close()
