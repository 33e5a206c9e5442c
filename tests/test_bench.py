"""``earshot bench`` runs the real pipeline in worker processes and reports one JSON object.

Only the shape and sanity of the report are checked here: performance targets are measured by running
the command, never asserted by a timed unit test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support.onnx_models import band_energy_model, write_card

ROOT = Path(__file__).resolve().parents[1]


def bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def test_json_report_has_the_documented_keys(siren_model: Path, tmp_path: Path) -> None:
    twin = band_energy_model(tmp_path / "twin.onnx", gain=5.0)
    result = bench(
        "--model",
        str(siren_model),
        "--compare-model",
        str(twin),
        "--threads",
        "1,2",
        "--seconds",
        "4",
        "--json",
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)  # exactly one JSON object on stdout
    assert {
        "rtf",
        "cpu_rtf",
        "latency_ms",
        "peak_rss_mb",
        "frontend_ms",
        "model_ms",
        "per_thread_rtf",
        "int8_vs_fp32_speedup",
        "targets",
        "machine",
    } <= set(report)
    assert set(report["latency_ms"]) == {"p50", "p95", "p99"}
    assert report["latency_ms"]["p50"] <= report["latency_ms"]["p95"] <= report["latency_ms"]["p99"]
    assert set(report["per_thread_rtf"]) == {"1", "2"} and report["cores"] == report["cores"][:1]
    assert report["audio_seconds"] == pytest.approx(4.0) and report["windows"] >= 12
    assert 0 < report["rtf"] < 1 and 20 < report["peak_rss_mb"] < 1000
    assert report["model"]["sha256"] != report["compare"]["model"]["sha256"]
    assert report["int8_vs_fp32_speedup"] > 0
    assert report["input_rate"] == 16000 and 0 <= report["resample_share"] < 1  # passthrough at 16 kHz
    assert 0 < report["level_rtf"] <= report["rtf"] and 0 < report["level_share"] < 1  # the meter ran
    assert report["targets"]["level_share"] == 0.10


@pytest.mark.parametrize("rate", [44100, 48000])
def test_input_rate_makes_the_resampler_work_and_reports_its_share(siren_model: Path, rate: int) -> None:
    result = bench(
        "--model", str(siren_model), "--threads", "1", "--seconds", "3", "--input-rate", str(rate), "--json"
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["input_rate"] == rate and report["audio_seconds"] == pytest.approx(3.0, abs=1e-3)
    assert 0 < report["resample_rtf"] <= report["rtf"] and 0 < report["resample_share"] < 1


def test_table_output_is_readable(siren_model: Path) -> None:
    result = bench("--model", str(siren_model), "--threads", "1", "--seconds", "3", "--input-rate", "48000")
    assert result.returncode == 0, result.stderr
    assert "RTF" in result.stdout and "peak RSS" in result.stdout and "p95" in result.stdout
    assert "resampler    48000 Hz in: RTF" in result.stdout


@pytest.mark.slow
def test_naive_baseline_uses_the_cards_architecture(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("librosa")
    model = band_energy_model(tmp_path / "m.onnx")
    write_card(model, extra={"architecture": {"arch": "cnn", "conv_channels": [4, 8]}})
    result = bench("--model", str(model), "--threads", "1", "--seconds", "3", "--naive", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["naive_ratio"] > 0 and report["naive"]["windows"] >= 8
    assert report["naive"]["model"] == "architecture from the model card (timing only)"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--threads", "one"], "earshot bench: --threads: expected comma-separated integers, got 'one'"),
        (["--model", "/nonexistent.onnx"], "earshot bench: model not found: /nonexistent.onnx"),
        (["--input-rate", "1000"], "earshot bench: --input-rate: expected 8000..384000 Hz, got 1000"),
        (
            ["--input-rate", "48000", "--source", "x.wav"],
            "earshot bench: --input-rate sets the synthetic audio's rate; a --source file keeps its own",
        ),
        (["--naive"], "earshot bench: --naive needs the model's PyTorch twin: pass --checkpoint PATH"),
    ],
)
def test_bad_input_is_one_line(siren_model: Path, args: list[str], message: str) -> None:
    if "--naive" in args:
        pytest.importorskip("torch")
        pytest.importorskip("librosa")
    defaults = ["--model", str(siren_model), "--threads", "1", "--seconds", "2"]
    argv = args if "--model" in args else [*defaults, *args]
    result = bench(*argv)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == message


@pytest.mark.slow
def test_alert_latency_through_a_real_broker(siren_model: Path, tmp_path: Path) -> None:
    from support.mosquitto import Mosquitto, mosquitto_binary

    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    try:
        result = bench(
            "--model",
            str(siren_model),
            "--threads",
            "1",
            "--seconds",
            "2",
            "--json",
            "--alert-latency",
            f"mqtt://127.0.0.1:{broker.port}",
            "--bursts",
            "2",
        )
    finally:
        broker.stop()
    assert result.returncode == 0, result.stderr
    alert = json.loads(result.stdout)["alert_latency_ms"]
    assert alert["detected"] == alert["bursts"] == 2
    assert 0 < alert["p50"] <= alert["p95"] <= alert["max"] < 10_000  # real time, real subscriber
    assert alert["target_p95"] == pytest.approx((1.0 + 0.256 + 0.1) * 1e3)
