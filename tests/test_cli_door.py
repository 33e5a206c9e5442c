"""The one ``earshot`` door: help, unknown commands, and training-only commands on a base install."""

from __future__ import annotations

import subprocess
import sys

import pytest

# Makes every training-only library unimportable, as on a Pi with only the base install.
TRAINING_ONLY = ("torch", "torchaudio", "librosa", "foolbox", "onnx", "onnxscript", "matplotlib")
RUN_MAIN = "from edge_agent.cli import main; sys.exit(main(sys.argv[1:]))"
BASE_INSTALL = f"import sys; sys.modules.update(dict.fromkeys({TRAINING_ONLY!r})); {RUN_MAIN}"


def earshot(*args: str, base_install: bool = False) -> subprocess.CompletedProcess:
    code = BASE_INSTALL if base_install else f"import sys; {RUN_MAIN}"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", ["train", "export", "gate"])
def test_training_commands_on_a_base_install_name_the_extra(command: str) -> None:
    result = earshot(command, "--help", base_install=True)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "pip install 'earshot[train]'" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_agent_runs_its_help_on_a_base_install() -> None:
    result = earshot("agent", "--help", base_install=True)
    assert result.returncode == 0 and "--source" in result.stdout


def test_help_lists_every_command_and_unknown_ones_are_refused() -> None:
    listing = earshot("--help")
    assert listing.returncode == 0
    for command in ("agent", "train", "export", "gate", "bench", "listen", "calibrate"):
        assert f"  {command}" in listing.stdout
    unknown = earshot("fly")
    assert unknown.returncode == 2 and "unknown command 'fly'" in unknown.stderr
