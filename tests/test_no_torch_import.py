"""The agent process never imports torch, torchaudio, librosa or foolbox, not even indirectly.

The real agent runs in a subprocess under ``python -X importtime``, which logs every module the moment
it is imported (lazy imports during the run included), over a whole file with metrics served."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from support.mosquitto import free_port
from support.onnx_models import noise, siren_sweep, write_audio

from edge_agent.cli import TRAINING_ONLY_MODULES

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"torch", "torchaudio", "librosa", "foolbox"}


def imported_modules(importtime_log: str) -> set[str]:
    """Top-level package names from ``-X importtime`` lines: 'import time: self | cumulative | name'."""
    names = set()
    for line in importtime_log.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip().split(".")[0])
    return names


def test_the_agent_never_imports_training_libraries(tmp_path: Path, siren_model: Path) -> None:
    clip = write_audio(tmp_path / "siren.wav", siren_sweep(3.0) + noise(3.0, amplitude=0.05))
    result = subprocess.run(
        [
            sys.executable,
            "-X",
            "importtime",
            "-m",
            "edge_agent.cli",
            "agent",
            "--source",
            str(clip),
            "--model",
            str(siren_model),
            "--fast",
            "--mqtt",
            "none",
            "--metrics-port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert '"kind":"start"' in result.stdout  # the whole data path ran
    modules = imported_modules(result.stderr)
    assert {"numpy", "onnxruntime", "edge_agent", "prometheus_client"} <= modules  # the log is real
    assert not modules & FORBIDDEN
    assert not modules & TRAINING_ONLY_MODULES, sorted(modules & TRAINING_ONLY_MODULES)
