"""``earshot agent`` as a user runs it: events on stdout, real /metrics, stdin input, and one clear line
(exit 2, no traceback) for every kind of bad input. The broker path end to end (mosquitto_sub, LWT) is
in tests/test_mqtt_broker_e2e.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from support.mosquitto import free_port
from support.onnx_models import band_energy_model, noise, siren_sweep, to_s16le, write_audio, write_card

from edge_agent.agent_cli import DEFAULT_MODEL, main

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "edge_agent/schemas/event.schema.json").read_text())


def siren_clip(rate: int = 16000) -> np.ndarray:
    """1 s of street noise, 3 s of siren, 1 s of noise."""
    return np.concatenate(
        [
            noise(1.0, rate, 0.05),
            siren_sweep(3.0, rate) + noise(3.0, rate, 0.05, seed=1),
            noise(1.0, rate, 0.05, seed=2),
        ]
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_audio(tmp_path_factory.mktemp("audio") / "siren.flac", siren_clip())


def agent(
    *args: str, stdin: bytes | None = None, env: dict[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess:
    """Run the agent exactly as the ``earshot`` entry point does, in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "agent", *args],
        input=stdin,
        capture_output=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def events_of(stdout: bytes) -> list[dict]:
    events = [json.loads(line) for line in stdout.decode().splitlines()]
    for event in events:
        jsonschema.validate(event, SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    return events


def test_a_file_prints_json_events(clip: Path, siren_model: Path) -> None:
    result = agent("--source", str(clip), "--model", str(siren_model), "--fast", "--mqtt", "none")
    assert result.returncode == 0, result.stderr.decode()
    events = events_of(result.stdout)
    assert [(e["label"], e["kind"]) for e in events] == [("siren", "start"), ("siren", "end")]
    assert b"Traceback" not in result.stderr


def test_raw_stdin_at_another_rate(siren_model: Path) -> None:
    stereo = np.stack([siren_clip(44100)] * 2, axis=1)
    result = agent(
        "--source",
        "-",
        "--stdin-rate",
        "44100",
        "--stdin-channels",
        "2",
        "--model",
        str(siren_model),
        "--mqtt",
        "none",
        stdin=to_s16le(stereo),
    )
    assert result.returncode == 0, result.stderr.decode()
    assert [e["kind"] for e in events_of(result.stdout)] == ["start", "end"]


def test_metrics_and_health_are_served_while_running(tmp_path: Path, siren_model: Path) -> None:
    audio = write_audio(tmp_path / "long.wav", noise(6.0, amplitude=0.05))
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "agent",
            "--source",
            str(audio),
            "--model",
            str(siren_model),
            "--mqtt",
            "none",
            "--metrics-port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        metrics = _get_when_up(f"http://127.0.0.1:{port}/metrics")
        time.sleep(1.5)  # real-time paced: let a few windows through
        metrics = _get_when_up(f"http://127.0.0.1:{port}/metrics")
        health = _get_when_up(f"http://127.0.0.1:{port}/healthz")
    finally:
        process.terminate()
        process.communicate(timeout=30)
    assert health == "ok\n"
    samples = {
        line.split(" ")[0]: float(line.split(" ")[1])
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    assert samples["earshot_audio_seconds_total"] > 1.0
    assert samples["earshot_inference_latency_seconds_count"] >= 1
    assert samples["earshot_model_ungated"] == 0.0
    assert process.returncode == 0


def _get_when_up(url: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                return response.read().decode()
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_bad_input_in_a_fresh_process_has_no_traceback(tmp_path: Path, clip: Path) -> None:
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(os.urandom(3000))
    result = agent("--source", str(clip), "--model", str(garbage), "--allow-ungated")
    assert result.returncode == 2 and b"Traceback" not in result.stderr
    last = result.stderr.decode().strip().splitlines()[-1]  # after the ungated warning
    assert last.startswith(f"earshot agent: cannot load model {garbage}: not a valid ONNX model")


def bad_inputs(tmp_path: Path, clip: Path, model: Path) -> dict[str, tuple[list[str], dict[str, str], str]]:
    """name -> (argv, environment, the start of the error line)."""
    corrupt_audio = tmp_path / "corrupt.ogg"
    corrupt_audio.write_bytes(b"OggS" + os.urandom(2000))
    tampered = band_energy_model(tmp_path / "tampered.onnx")
    write_card(tampered)
    tampered.write_bytes(tampered.read_bytes().replace(b"band-energy", b"band-energy2", 1))
    ungated = band_energy_model(tmp_path / "ungated.onnx")
    unknown_key = tmp_path / "unknown.toml"
    unknown_key.write_text("[detector]\nconfirm = 3\n")
    foreign_label = tmp_path / "listen.toml"
    foreign_label.write_text("[detector]\nlisten = ['helicopter']\n")
    run = ["--source", str(clip), "--mqtt", "none", "--model", str(model)]
    return {
        "missing model": (
            ["--source", str(clip), "--model", str(tmp_path / "no.onnx")],
            {},
            "model file not found",
        ),
        "tampered model": ([*run[:-1], str(tampered)], {}, f"model {tampered} does not match its card"),
        "ungated model": (
            [*run[:-1], str(ungated)],
            {},
            f"model {ungated} is not cleared to run: no model card",
        ),
        "missing audio": (
            ["--source", str(tmp_path / "no.wav"), "--model", str(model)],
            {},
            "audio file not found",
        ),
        "corrupt audio": (
            ["--source", str(corrupt_audio), "--model", str(model)],
            {},
            "cannot read audio file",
        ),
        "unknown config key": ([*run, "--config", str(unknown_key)], {}, "detector.confirm: unknown setting"),
        "missing config": ([*run, "--config", str(tmp_path / "no.toml")], {}, "config file"),
        "bad env value": (
            run,
            {"EARSHOT_DETECTOR_COOLDOWN_S": "-1"},
            "detector.cooldown_s: must be >= 0, got -1",
        ),
        "bad hop": ([*run, "--hop", "0"], {}, "audio.hop_seconds: must be in 0.01..60, got 0"),
        "bad broker url": (
            ["--source", str(clip), "--model", str(model), "--mqtt", "http://x"],
            {},
            "mqtt.url: must be",
        ),
        "label the model lacks": (
            [*run, "--config", str(foreign_label)],
            {},
            "detector.listen: 'helicopter' is not a label of this model",
        ),
    }


def test_every_bad_input_is_one_line_and_exit_2(
    tmp_path: Path,
    clip: Path,
    siren_model: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, (argv, env, message) in bad_inputs(tmp_path, clip, siren_model).items():
        with monkeypatch.context() as patch:
            for key, value in env.items():
                patch.setenv(key, value)
            code = main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, name
        assert err and err[-1].startswith(f"earshot agent: {message}"), (name, err)


@pytest.mark.skipif(DEFAULT_MODEL.is_file(), reason="a default model is installed")
def test_without_a_default_model_the_user_is_told_to_pass_model(
    clip: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["--source", str(clip), "--mqtt", "none"]) == 2
    err = capsys.readouterr().err
    assert "no default model is installed" in err and "pass --model PATH" in err


def test_allow_ungated_runs_with_a_warning(tmp_path: Path, clip: Path) -> None:
    ungated = band_energy_model(tmp_path / "ungated.onnx")
    result = agent(
        "--source", str(clip), "--model", str(ungated), "--fast", "--mqtt", "none", "--allow-ungated"
    )
    assert result.returncode == 0 and len(events_of(result.stdout)) == 2
    assert b"running ungated model" in result.stderr


def test_check_config_prints_the_resolved_config_without_secrets(
    tmp_path: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "site.toml"
    path.write_text("device_id = 'pole-9'\n[mqtt]\nurl = 'mqtts://broker:8883'\nusername = 'pole'\n")
    monkeypatch.setenv("EARSHOT_MQTT_PASSWORD", "s3cret-pass")
    assert main(["--check-config", str(path)]) == 0
    out = capsys.readouterr().out
    resolved = json.loads(out)
    assert resolved["device_id"] == "pole-9" and resolved["mqtt"]["password"] == "<set>"
    assert "s3cret-pass" not in out
