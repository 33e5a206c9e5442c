"""``earshot listen``: bars and threshold marks (pure rendering), one line per window on a pipe, an
in-place redraw on a real terminal (tmux), and one-line errors."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from support.onnx_models import noise, siren_sweep, write_audio

from edge_agent.detector import rank
from edge_agent.tools.listen import Display, bar, render_line, render_screen

ROOT = Path(__file__).resolve().parents[1]
LINE = re.compile(r"^\s*(\d+\.\d{3})s  (.+)$")


def listen(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """``earshot listen`` in a fresh process, stdout a pipe (not a TTY)."""
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "listen", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.fixture(scope="module")
def siren_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 s of quiet noise, 3 s of siren, 2 s of quiet noise."""
    siren = siren_sweep(3.0) + noise(3.0, amplitude=0.05, seed=1)
    samples = np.concatenate([noise(2.0, amplitude=0.05), siren, noise(2.0, amplitude=0.05, seed=2)])
    return write_audio(tmp_path_factory.mktemp("audio") / "site.flac", samples)


def test_bar_fills_to_the_score_and_marks_the_threshold() -> None:
    assert bar(0.0, 0.5, 10) == ".....|...."
    assert bar(1.0, 0.5, 10) == "#####|####"
    assert bar(0.3, 0.8, 10) == "###.....|."
    assert bar(0.3, 1.0, 10) == "###......|"  # the mark stays inside the bar
    assert len(bar(7.0, -1.0, 12)) == 12  # out-of-range inputs are clamped, never widen the bar


def test_top_k_is_best_first_and_render_marks_hits_and_alerts() -> None:
    labels = ("a", "siren", "dog")
    ranked = rank(labels, [0.1, 0.7, 0.2], 2)
    assert ranked == (("siren", pytest.approx(0.7)), ("dog", pytest.approx(0.2)))
    screen = render_screen(3.0, ranked, {"siren": 0.5, "dog": 0.3}, ["siren"], active=[])
    assert screen[1].startswith("* siren [") and screen[1].endswith("0.70 / 0.50 !")
    assert screen[2].startswith("  dog   [") and screen[2].endswith("0.20 / 0.30")
    alert = render_screen(3.0, ranked, {"siren": 0.5, "dog": 0.3}, ["siren"], active=["siren"])
    assert alert[1].endswith("ALERT")
    assert render_line(3.0, ranked, {"siren": 0.5}, ["siren"]).startswith("    3.000s  siren [")


def test_display_redraws_in_place_on_a_tty(tmp_path: Path) -> None:
    path = tmp_path / "screen.txt"
    with path.open("w") as out:
        display = Display(out, ("a", "b", "c"), {"a": 0.5}, ["a"], k=2, tty=True)
        display.show(0.5, [0.9, 0.05, 0.05], [])
        display.show(0.75, [0.1, 0.8, 0.1], [])
        display.close()
    text = path.read_text()
    assert text.count("\x1b[3A") == 1  # the second frame moved up over the first one's 3 lines
    assert text.endswith("\x1b[?25h")  # the cursor is given back


def test_a_file_gives_one_line_per_window_with_the_siren_rising(siren_file: Path, siren_model: Path) -> None:
    result = listen("--source", str(siren_file), "--model", str(siren_model), "--fast", "--top-k", "3")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    # 7 s at a 0.256 s hop: windows end at 1.0, 1.256, ... plus the padded last one.
    assert len(lines) == 1 + int((7.0 - 1.0) / 0.256) + 1
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines[:3]
    times = [float(match.group(1)) for match in parsed if match]
    assert times == sorted(times)
    leaders = [match.group(2).split()[0] for match in parsed if match]
    in_siren = [leader for t, leader in zip(times, leaders, strict=True) if 3.2 <= t <= 5.0]
    in_noise = [leader for t, leader in zip(times, leaders, strict=True) if t <= 2.5 or t >= 6.0]
    assert in_siren and set(in_siren) == {"siren"}
    assert "siren" not in in_noise
    assert sum(line.count("] ") for line in lines) == 3 * len(lines)  # --top-k 3 bars each
    assert any(re.search(r"siren \[[#.|]{10}\] 0\.\d\d!", line) for line in lines)  # the open episode


@pytest.mark.parametrize(
    "args, message",
    [
        (["--top-k", "0"], "earshot listen: --top-k: must be >= 1, got 0"),
        (["--source", "/nonexistent.wav"], "earshot listen: audio file not found: /nonexistent.wav"),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str, siren_file: Path, siren_model: Path) -> None:
    result = listen("--source", str(siren_file), "--model", str(siren_model), *args)
    assert result.returncode == 2
    assert result.stderr.strip() == message


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_under_tmux_the_bars_redraw_in_place(siren_file: Path, siren_model: Path, tmp_path: Path) -> None:
    session = f"earshot-listen-{os.getpid()}"
    done = tmp_path / "done"
    command = (
        f"cd {ROOT} && PYTHONPATH={ROOT} {sys.executable} -m edge_agent.cli listen "
        f"--source {siren_file} --model {siren_model} --top-k 4; touch {done}; sleep 30"
    )
    subprocess.run(
        ["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "30", command], check=True, timeout=10
    )
    try:
        screens = []
        deadline = time.monotonic() + 30
        while not done.exists() and time.monotonic() < deadline:  # real-time paced: ~7 s
            time.sleep(0.5)
            screens.append(
                subprocess.run(
                    ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, timeout=10
                ).stdout
            )
        assert done.exists(), screens[-1:]
        final = subprocess.run(
            ["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True, timeout=10
        ).stdout
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, timeout=10)
    for screen in [*screens, final]:
        assert screen.count("earshot listen  t=") <= 1  # redrawn in place, never scrolled
    assert any(re.search(r"\* siren\s+\[#+.*\] 0\.[5-9]\d / 0\.50 (!|ALERT)", s) for s in screens), screens
    header = re.search(r"earshot listen  t=\s*(\d+\.\d+) s", final)
    assert header and float(header.group(1)) == pytest.approx(7.0, abs=0.01)
    assert len([line for line in final.splitlines() if "[" in line]) == 4
