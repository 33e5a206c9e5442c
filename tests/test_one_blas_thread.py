"""Agent-side commands pin BLAS to one thread before numpy loads (edge_agent/one_blas_thread.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VARIABLES = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


@pytest.mark.parametrize(
    "module",
    [
        "edge_agent.agent_cli",
        "edge_agent.tools.listen",
        "edge_agent.tools.bench",
        "edge_agent.tools.calibrate",
    ],
)
def test_blas_is_pinned_before_numpy_loads(module: str) -> None:
    probe = (
        f"import os, sys, {module}, numpy; loaded = list(sys.modules); "
        "print(loaded.index('edge_agent.one_blas_thread') < loaded.index('numpy'), "
        f"*(os.environ[name] for name in {VARIABLES!r}))"
    )
    env = {key: value for key, value in os.environ.items() if key not in VARIABLES}
    result = subprocess.run(
        [sys.executable, "-c", probe],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["True", "1", "1", "1"]


def test_an_operators_own_setting_wins() -> None:
    probe = "import os, edge_agent.agent_cli; print(os.environ['OPENBLAS_NUM_THREADS'])"
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "2", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT, env=env, timeout=60
    )
    assert result.stdout.strip() == "2", result.stderr
