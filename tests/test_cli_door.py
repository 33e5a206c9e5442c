"""The one ``earshot`` door: help, unknown commands, and training-only commands on a base install."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from support.wheel import build_wheel

REPO = Path(__file__).resolve().parents[1]

# Makes every training-only library unimportable, as on a Pi with only the base install.
TRAINING_ONLY = ("torch", "torchaudio", "librosa", "foolbox", "onnx", "onnxscript", "matplotlib")
# ... and the packages the wheel leaves out (it carries edge_agent alone).
CHECKOUT_ONLY = ("training", "export", "deploy")
# A finder first in line that says these modules (and their submodules) are not installed.
ABSENT = """
import sys
class Absent:
    def find_spec(self, name, path=None, target=None):
        if any(name == gone or name.startswith(gone + ".") for gone in GONE):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
sys.meta_path.insert(0, Absent())
from edge_agent.cli import main
sys.exit(main(sys.argv[1:]))
"""


def earshot(*args: str, unimportable: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    code = f"GONE = {unimportable!r}\n{ABSENT}"
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("command", ["train", "evaluate", "export", "gate"])
@pytest.mark.parametrize(
    ("unimportable", "missing"),
    [
        (TRAINING_ONLY, "torch"),  # a checkout without the extras
        (CHECKOUT_ONLY, None),  # the wheel: no training/export/deploy, with or without torch
        (TRAINING_ONLY + CHECKOUT_ONLY, None),  # the wheel on a Pi
    ],
)
def test_training_commands_on_a_base_install_say_what_they_need(
    command: str, unimportable: tuple[str, ...], missing: str | None
) -> None:
    result = earshot(command, "--help", unimportable=unimportable)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert f"earshot {command} needs a source checkout with the training extras" in result.stderr
    assert "pip install -e '.[train]'" in result.stderr
    if missing is not None:
        assert f"({missing} is missing)" in result.stderr


def test_a_module_missing_from_a_checkout_is_a_bug_not_an_install_hint() -> None:
    result = earshot("train", "--help", unimportable=("training.cli",))
    assert result.returncode == 1 and "Traceback" in result.stderr and "pip install" not in result.stderr


def test_the_agent_runs_its_help_on_a_base_install() -> None:
    result = earshot("agent", "--help", unimportable=TRAINING_ONLY + CHECKOUT_ONLY)
    assert result.returncode == 0 and "--source" in result.stdout


def test_help_lists_every_command_and_unknown_ones_are_refused() -> None:
    listing = earshot("--help")
    assert listing.returncode == 0
    for command in ("agent", "train", "evaluate", "export", "gate", "bench", "listen", "calibrate"):
        assert f"  {command}" in listing.stdout
    unknown = earshot("fly")
    assert unknown.returncode == 2 and "unknown command 'fly'" in unknown.stderr


@pytest.mark.slow
def test_the_wheel_carries_the_agent_alone(tmp_path: Path) -> None:
    """What ``pip install .`` puts on a sensor: edge_agent, its default model, card, demo and schema."""
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("needs a git checkout")
    names = zipfile.ZipFile(build_wheel(tmp_path)).namelist()
    assert {name.split("/")[0] for name in names if ".dist-info/" not in name} == {"edge_agent"}
    for needed in (
        "models/default.onnx",
        "models/default.card.json",
        "demo/street-demo.ogg",
        "schemas/event.schema.json",
        "cli.py",
    ):
        assert f"edge_agent/{needed}" in names
    assert "edge_agent/models/default.fp32.onnx" not in names
