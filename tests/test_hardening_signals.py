"""Signals against the real agent process (issue 11, items 15-16): storms of SIGTERM/SIGINT/SIGHUP never
deadlock it, and a SIGHUP during start-up (``systemctl reload`` right after start) does not kill it."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
READY = "outputs "  # the agent's start-up line: "model ... source ..., outputs stdout"
EXIT_WITHIN_S = 8.0  # a deadlocked agent never exits; a healthy one needs well under a second


def start_agent(model: Path, *extra: str) -> subprocess.Popen:
    """The real agent on a stdin pipe that stays open (a live source that never ends by itself)."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "agent",
            "--source",
            "-",
            "--model",
            str(model),
            "--mqtt",
            "none",
            *extra,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def read_until(agent: subprocess.Popen, text: str, seen: list[str], timeout: float = 60.0) -> bool:
    """Read stderr until ``text`` appears (True) or the agent exits or time runs out (False)."""
    deadline = time.monotonic() + timeout
    while text not in "".join(seen):
        if time.monotonic() > deadline:
            return False
        ready, _, _ = select.select([agent.stderr], [], [], 0.1)
        if ready:
            chunk = os.read(agent.stderr.fileno(), 65536).decode(errors="replace")
            if not chunk:
                return False
            seen.append(chunk)
    return True


def finish(agent: subprocess.Popen, timeout: float, seen: list[str]) -> int | None:
    """The exit code, or None (and the agent killed) when it did not exit within ``timeout`` s."""
    try:
        return agent.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        agent.kill()
        agent.wait()
        return None
    finally:
        agent.stdin.close()
        seen.append(agent.stderr.read().decode(errors="replace"))
        agent.stderr.close()


def storm(pid: int, seconds: float) -> None:
    """SIGHUP, SIGTERM and SIGINT from three threads at once for ``seconds`` (or until the agent is gone),
    so a signal keeps arriving while the previous one's handler runs, through the whole shutdown."""

    def send(signum: int) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:  # it exited: that is the point
                return

    senders = [
        threading.Thread(target=send, args=(s,)) for s in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()


def test_signal_storms_never_deadlock_the_agent(siren_model: Path) -> None:
    hung = []
    for run in range(10):
        agent, seen = start_agent(siren_model), []
        assert read_until(agent, READY, seen), "agent did not start:\n" + "".join(seen)
        storm(agent.pid, seconds=1.5)
        code = finish(agent, EXIT_WITHIN_S, seen)
        if code is None:
            hung.append(run)
        assert "Traceback" not in "".join(seen), "".join(seen)
    assert not hung, f"the agent hung after signal storms in runs {hung} of 10"


def startup_seconds(model: Path) -> float:
    """How long the agent takes from exec to its start-up line on this machine."""
    started, agent, seen = time.monotonic(), start_agent(model), []
    assert read_until(agent, READY, seen), "agent did not start:\n" + "".join(seen)
    elapsed = time.monotonic() - started
    agent.send_signal(signal.SIGTERM)
    assert finish(agent, EXIT_WITHIN_S, seen) == 0, "".join(seen)
    return elapsed


def test_sighup_during_startup_does_not_kill_the_agent(siren_model: Path) -> None:
    ready_after = startup_seconds(siren_model)
    for fraction in (0.35, 0.6, 0.85):  # while numpy, onnxruntime and the model load
        agent, seen = start_agent(siren_model), []
        time.sleep(fraction * ready_after)
        agent.send_signal(signal.SIGHUP)
        alive = read_until(agent, READY, seen)
        agent.send_signal(signal.SIGTERM)
        code = finish(agent, EXIT_WITHIN_S, seen)
        assert alive and code == 0, (
            f"SIGHUP {fraction * ready_after:.2f} s into start-up: exit {code}\n" + "".join(seen)
        )
