"""The tree stays clean: ruff lint and ruff format (configured in pyproject.toml), and mypy on the agent."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    """A tool as a module of this interpreter, from the repository root."""
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, timeout=300, cwd=ROOT
    )


def test_ruff_finds_nothing() -> None:
    result = run("ruff", "check", "--no-cache", str(ROOT))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_the_tree_is_ruff_formatted() -> None:
    result = run("ruff", "format", "--check", "--no-cache", str(ROOT))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_mypy_finds_nothing_in_the_agent() -> None:
    result = run("mypy", "--no-incremental", "edge_agent")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
