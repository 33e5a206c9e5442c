"""``earshot calibrate --spl 94``: the mic's dBFS-to-dB-SPL offset from an acoustic calibrator.

The installer holds a standard 94 dB (or 114 dB), 1 kHz calibrator over the microphone and runs
``earshot calibrate --spl 94 --source mic --config /etc/earshot/config.toml``. The agent's own audio path
(source, downmix, resampler: exactly what the level meter hears) records ``--seconds`` of it; the offset
comes from ``edge_agent.levels.calibration_offset`` and is written as ``levels.offset_db`` into the
config (or printed as a snippet). From then on every level is dB SPL and says ``calibrated``.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.agent_cli import UsageError
from edge_agent.config import AgentConfig, ConfigError, read_toml
from edge_agent.levels import CalibrationError, calibration_offset
from edge_agent.publishers.base import Publisher
from edge_agent.tools.listen import config_from_args, run_offline

DEFAULT_SECONDS = 10.0
_SECTION = re.compile(r"^\s*\[([^\]]+)\]\s*(#.*)?$")


class SampleCollector(Publisher):
    """An output that keeps the model-rate audio it hears, and stops the pipeline once it has enough."""

    name = "calibration-recorder"

    def __init__(self, pipeline: Any, samples_wanted: int) -> None:
        self.pipeline, self.wanted = pipeline, samples_wanted
        self.parts: list[np.ndarray] = []
        self.count = 0

    def hear(self, samples: np.ndarray) -> None:
        """Keep the audio; ask the pipeline to stop once ``samples_wanted`` arrived."""
        self.parts.append(samples.copy())
        self.count += len(samples)
        if self.count >= self.wanted:
            self.pipeline.stop()

    def samples(self) -> np.ndarray:
        """The recording so far, at most ``samples_wanted`` long; (n,) float32."""
        joined = np.concatenate(self.parts) if self.parts else np.zeros(0, np.float32)
        return joined[: self.wanted]


def record(config: AgentConfig, seconds: float) -> tuple[np.ndarray, int]:
    """``seconds`` of model-rate audio from ``config.audio.source`` through the agent's audio path."""
    collectors: list[SampleCollector] = []

    def attach(pipeline: Any) -> Any:
        collectors.append(SampleCollector(pipeline, int(round(seconds * pipeline.rate))))
        pipeline.publishers.append(collectors[0])
        return lambda _window: None

    pipeline = run_offline(config, attach)
    if pipeline.error:
        raise UsageError(pipeline.error)
    return collectors[0].samples(), pipeline.rate


def set_toml_value(text: str, section: str, key: str, value: str) -> str:
    """``text`` with ``key = value`` in ``[section]``: replaced where it is, else added; the rest kept."""
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if _section_of(line) == section), None)
    if start is None:
        tail = "" if not text or text.endswith("\n") else "\n"
        return f"{text}{tail}\n[{section}]\n{key} = {value}\n"
    end = next((i for i in range(start + 1, len(lines)) if _SECTION.match(lines[i])), len(lines))
    assignment = re.compile(rf"^\s*{re.escape(key)}\s*=")
    for i in range(start + 1, end):
        if assignment.match(lines[i]):
            lines[i] = f"{key} = {value}"
            return "\n".join(lines) + "\n"
    lines.insert(start + 1, f"{key} = {value}")
    return "\n".join(lines) + "\n"


def _section_of(line: str) -> str | None:
    """The table a ``[name]`` header line opens, else None."""
    match = _SECTION.match(line)
    return match.group(1).strip() if match else None


def write_offset(path: str, offset_db: float) -> None:
    """Store ``levels.offset_db`` in the TOML config at ``path`` and check the result still loads."""
    target = Path(path)
    try:
        text = target.read_text(encoding="utf-8") if target.exists() else ""
        updated = set_toml_value(text, "levels", "offset_db", f"{offset_db:.2f}")
        target.write_text(updated, encoding="utf-8")
        read_toml(target)
    except OSError as error:
        raise UsageError(f"--config: cannot write {path}: {error.strerror or error}") from None
    except ConfigError as error:
        raise UsageError(f"--config: {error}") from None


def run_spl(args: argparse.Namespace) -> int:
    """Record the calibrator, compute the offset, store or print it."""
    if not (np.isfinite(args.spl) and 30.0 <= args.spl <= 140.0):
        raise UsageError(f"--spl: the calibrator's level must be in 30..140 dB, got {args.spl:g}")
    if not (np.isfinite(args.seconds) and 3.0 <= args.seconds <= 600.0):
        raise UsageError(f"--seconds: must be in 3..600, got {args.seconds:g}")
    args.fast, args.hop = True, None
    samples, rate = record(config_from_args(args), args.seconds)
    try:
        result = calibration_offset(samples, rate, args.spl)
    except CalibrationError as error:
        raise UsageError(f"calibration refused: {error}") from None
    print(
        f"calibrator {args.spl:g} dB at {result.tone_hz:.0f} Hz measured {result.measured_dbfs:.2f} dBFS "
        f"over {result.seconds:.1f} s ({100 * result.tone_fraction:.1f} % of the power in the tone): "
        f"offset {result.offset_db:.2f} dB"
    )
    if args.config:
        write_offset(args.config, result.offset_db)
        print(f"wrote levels.offset_db = {result.offset_db:.2f} to {args.config}; restart the agent")
    else:
        print(f"\n[levels]\noffset_db = {result.offset_db:.2f}")
    return 0
