"""The real ``earshot agent`` in a process of its own, its stdout events recorded with their arrival time,
and the street recording the outage tests stream through it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from support.onnx_models import noise, siren_sweep, write_audio

ROOT = Path(__file__).resolve().parents[2]


def street_with_sirens(path: Path, sirens: int = 16) -> Path:
    """2 s of noise, then ``sirens`` x (2 s siren, 2 s noise), then 3 s of noise; 16 kHz FLAC."""
    parts = [noise(2.0, amplitude=0.02)]
    for n in range(sirens):
        siren = siren_sweep(2.0) + noise(2.0, amplitude=0.02, seed=n)
        parts += [siren, noise(2.0, amplitude=0.02, seed=99 + n)]
    parts.append(noise(3.0, amplitude=0.02, seed=7))
    return write_audio(path, np.concatenate(parts))


class PrintingAgent:
    """``earshot agent ARGS`` with ``env`` added; ``printed`` holds (wall time, event) per stdout line."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.printed: list[tuple[float, dict]] = []
        self.log_path = log
        self._log = log.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "agent", *args],
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.printed.append((time.time(), json.loads(line)))

    def wait(self, timeout: float) -> int:
        """Wait for the agent to exit and for its last line to be read; its exit code."""
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return code

    def stop(self) -> None:
        """Kill it if it still runs; close the log."""
        if self.process.poll() is None:
            self.process.kill()
        self._log.close()

    def log(self) -> str:
        """The tail of its stderr log."""
        return self.log_path.read_text()[-3000:]
