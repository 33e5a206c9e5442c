"""``earshot calibrate``: per-class thresholds from a long recording of a site's ordinary sound.

The model runs once over the recording (as fast as the CPU allows, through the agent's own pipeline);
then, for each class, a pure search over the recorded scores finds the lowest threshold at which the
*real* detector (N-of-M confirmation, end-after, cooldown) would raise at most the target number of
alarms per hour. Everything heard in an ambient recording counts as a false alarm.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.agent_cli import UsageError, add_shared_flags, run_command
from edge_agent.config import AgentConfig, DetectorConfig
from edge_agent.detector import replay_starts
from edge_agent.tools.listen import config_from_args, run_offline

logger = logging.getLogger(__name__)

GRID_STEP = 0.01  # thresholds are suggested to two decimals, as a person would write them
MAX_THRESHOLD = 0.99  # also what is written when no threshold meets the target, with a warning


@dataclass(frozen=True)
class ScoreTrack:
    """Every window's scores over a recording: the input of the threshold search."""

    labels: tuple[str, ...]
    times: np.ndarray  # (windows,) stream time at each window's end, seconds
    scores: np.ndarray  # (windows, n_classes) label scores (the model's softmax or sigmoid)
    duration_s: float


@dataclass(frozen=True)
class Suggestion:
    """One class's calibrated threshold and what the recording says it costs."""

    label: str
    threshold: float
    alarms_per_hour: float  # at ``threshold`` (at MAX_THRESHOLD when the target was not met)
    alarms: int
    met: bool
    current: float  # the threshold in force before calibration (config, else model, else 0.5)


def count_alarms(
    label: str, scores: np.ndarray, times: np.ndarray, threshold: float, config: DetectorConfig
) -> int:
    """How many episodes the real detector starts for ``label`` at ``threshold`` ((windows,) scores)."""
    return len(replay_starts(scores, times, label, threshold, config))


def suggest_threshold(
    label: str,
    scores: np.ndarray,
    times: np.ndarray,
    hours: float,
    config: DetectorConfig,
    target_per_hour: float,
    min_threshold: float,
    current: float,
) -> Suggestion:
    """The lowest threshold on the 0.01 grid at and above which alarms/hour stay <= the target.

    Scanning down from 0.99 and stopping at the first violation keeps the answer safe even where the
    cooldown makes the count non-monotonic in the threshold.
    """
    lowest = min(min_threshold, MAX_THRESHOLD)
    grid = np.round(np.arange(MAX_THRESHOLD, lowest - GRID_STEP / 2, -GRID_STEP), 2)
    best: Suggestion | None = None
    for threshold in grid.tolist():
        alarms = count_alarms(label, scores, times, threshold, config)
        met = alarms / hours <= target_per_hour
        if not met and best is not None:
            break
        best = Suggestion(label, threshold, alarms / hours, alarms, met, current)
        if not met:  # even the top of the grid is too loud: say so rather than pretend to mute it
            break
    assert best is not None  # the grid always holds MAX_THRESHOLD
    return best


def calibrate(
    track: ScoreTrack,
    labels: Sequence[str],
    config: DetectorConfig,
    current: dict[str, float],
    target_per_hour: float,
    min_threshold: float = 0.1,
) -> list[Suggestion]:
    """A suggestion per label from one recording's scores."""
    hours = track.duration_s / 3600.0
    if hours <= 0:
        raise UsageError("the recording holds no audio")
    return [
        suggest_threshold(
            label,
            track.scores[:, track.labels.index(label)],
            track.times,
            hours,
            config,
            target_per_hour,
            min_threshold,
            current[label],
        )
        for label in labels
    ]


def _comment(suggestion: Suggestion) -> str:
    """The per-class note in the snippet and the table."""
    expected = (
        f"expected {suggestion.alarms_per_hour:.2f} false alarms/hour "
        f"({suggestion.alarms} in the recording); was {suggestion.current:.2f}"
    )
    if suggestion.met:
        return expected
    return f"{expected}; TARGET NOT MET even at {MAX_THRESHOLD}: drop this class from detector.listen?"


def render_toml(
    suggestions: Sequence[Suggestion], source: str, duration_s: float, target: float, config: DetectorConfig
) -> str:
    """A config snippet: ``[detector.thresholds]`` with a comment per class."""
    lines = [
        f"# earshot calibrate: {duration_s / 3600:.2f} h of ambient audio from {source}",
        f"# target: at most {target:g} false alarm(s) per hour per class, counted as detector episodes "
        f"(confirm {config.confirm_n} of {config.confirm_m}, end after {config.end_after_s:g} s, "
        f"cooldown {config.cooldown_s:g} s)",
        "[detector.thresholds]",
    ]
    lines += [f"{s.label} = {s.threshold:.2f}  # {_comment(s)}" for s in suggestions]
    return "\n".join(lines) + "\n"


def render_table(suggestions: Sequence[Suggestion]) -> str:
    """A readable table for the terminal."""
    width = max([len("class")] + [len(s.label) for s in suggestions])
    lines = [f"{'class':<{width}}  {'threshold':>9}  {'alarms/h':>8}  {'was':>5}  note"]
    lines += [
        f"{s.label:<{width}}  {s.threshold:>9.2f}  {s.alarms_per_hour:>8.2f}  {s.current:>5.2f}  "
        f"{'ok' if s.met else f'TARGET NOT MET: too loud even at {MAX_THRESHOLD}'}"
        for s in suggestions
    ]
    return "\n".join(lines)


def record_scores(
    config: AgentConfig, check_labels: Callable[[Sequence[str]], object] = len
) -> tuple[ScoreTrack, dict[str, float]]:
    """Run the agent's pipeline over the recording; every window's scores and the thresholds in force.

    ``check_labels(model_labels)`` runs once the model is loaded, before any audio, so bad arguments
    fail at once rather than after an hour of audio.
    """
    times: list[float] = []
    rows: list[np.ndarray] = []
    progress = _progress_bar(config.audio.source)

    def make_callback(pipeline: Any) -> Any:
        check_labels(pipeline.detector.labels)
        hop_s = pipeline.hop / pipeline.rate

        def on_window(result: Any) -> None:
            times.append(result.time_s)
            rows.append(result.scores)
            progress.update(hop_s)

        return on_window

    pipeline = run_offline(config, make_callback)
    progress.close()
    if pipeline.error:
        raise UsageError(pipeline.error)
    labels = pipeline.detector.labels
    scores = np.stack(rows) if rows else np.zeros((0, len(labels)), np.float32)  # (windows, n_classes)
    duration = pipeline.windower.samples_received / pipeline.rate
    return (
        ScoreTrack(labels, np.asarray(times, np.float64), scores, duration),
        dict(pipeline.detector.thresholds),
    )


class _NoBar:
    """Stands in for tqdm where it is not installed (it is not in the agent's base install)."""

    def update(self, n: float) -> None:
        """Nothing to draw."""

    def close(self) -> None:
        """Nothing to close."""


def _progress_bar(source: str) -> Any:
    """A tqdm bar in seconds of audio when tqdm is installed."""
    try:
        import soundfile
        from tqdm import tqdm
    except ModuleNotFoundError:
        return _NoBar()
    try:
        total = soundfile.info(source).duration
    except Exception:  # not a file soundfile can read (stdin): the bar runs without a total
        total = None
    return tqdm(
        total=total,
        desc="calibrating",
        unit="s",
        file=sys.stderr,
        leave=False,
        bar_format="{l_bar}{bar}| {n:.0f}/{total_fmt} s [{elapsed}<{remaining}]",
    )


def build_parser() -> argparse.ArgumentParser:
    """``earshot calibrate`` flags."""
    parser = argparse.ArgumentParser(
        prog="earshot calibrate", description="Suggest per-class thresholds from a recording of the site."
    )
    parser.add_argument(
        "--source",
        required=True,
        help="a recording of the site's ordinary sound (file or -); with --spl also mic",
    )
    parser.add_argument("--config", help="TOML config (detector timing and listened classes)")
    parser.add_argument(
        "--target-false-alarms-per-hour",
        type=float,
        default=1.0,
        metavar="RATE",
        help="most alarms per hour per class on ambient sound (default 1)",
    )
    parser.add_argument(
        "--labels",
        help="comma-separated classes to calibrate, or 'all' (default: the config's detector.listen)",
    )
    parser.add_argument(
        "--min-threshold", type=float, default=0.1, help="never suggest a threshold below this (default 0.1)"
    )
    parser.add_argument("--out", help="write the TOML snippet here (default: print it)")
    parser.add_argument(
        "--spl",
        type=float,
        metavar="DB",
        help="instead: the mic's level calibration from an acoustic calibrator of this level "
        "(94 or 114 dB at 1 kHz) held to it; stored in --config as levels.offset_db",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=10.0,
        help="with --spl: seconds of the calibrator to record (default 10)",
    )
    add_shared_flags(parser, log_level="WARNING")
    return parser


def _check_args(args: argparse.Namespace) -> None:
    """Reject values that make no sense, in one line."""
    rate = args.target_false_alarms_per_hour
    if not (np.isfinite(rate) and rate >= 0):
        raise UsageError(f"--target-false-alarms-per-hour: must be a number >= 0, got {rate:g}")
    if not (np.isfinite(args.min_threshold) and 0 <= args.min_threshold <= MAX_THRESHOLD):
        raise UsageError(f"--min-threshold: must be in 0..{MAX_THRESHOLD}, got {args.min_threshold:g}")
    if args.source == "mic" or args.source.startswith("mic:"):
        raise UsageError(
            "--source: calibrate needs a recording of the site, not a live mic "
            "(record one, e.g. arecord -f S16_LE -r 16000 -d 3600 site.wav)"
        )


def _labels(spec: str | None, config: AgentConfig, model_labels: Sequence[str]) -> list[str]:
    """The classes to calibrate, each checked against the model."""
    if spec is None:
        return list(config.detector.listen)
    if spec.strip() == "all":
        return list(model_labels)
    labels = [part.strip() for part in spec.split(",") if part.strip()]
    unknown = [label for label in labels if label not in model_labels]
    if unknown or not labels:
        raise UsageError(
            f"--labels: {unknown[0] if unknown else spec!r} is not a label of this model "
            f"(labels: {', '.join(model_labels)})"
        )
    return labels


def run(args: argparse.Namespace) -> int:
    """Record scores, search thresholds, print the table, write the snippet (--spl: the mic level)."""
    if args.spl is not None:
        from edge_agent.tools.spl_calibration import run_spl

        return run_spl(args)
    _check_args(args)
    args.fast, args.hop = True, None
    config = config_from_args(args)
    labels: list[str] = []
    track, current = record_scores(
        config, lambda model_labels: labels.extend(_labels(args.labels, config, model_labels))
    )
    target = args.target_false_alarms_per_hour
    if track.duration_s * target < 3600:
        logger.warning(
            "the recording is %.1f min long: too short to measure %g alarm(s)/hour; record longer",
            track.duration_s / 60,
            target,
        )
    suggestions = calibrate(track, labels, config.detector, current, target, args.min_threshold)
    snippet = render_toml(suggestions, args.source, track.duration_s, target, config.detector)
    print(render_table(suggestions))
    if args.out:
        try:
            Path(args.out).write_text(snippet, encoding="utf-8")
        except OSError as error:
            raise UsageError(f"--out: cannot write {args.out}: {error.strerror or error}") from None
        print(f"\nwrote {args.out}; merge it into the agent's config")
    else:
        print("\n" + snippet, end="")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``earshot calibrate``."""
    return run_command("calibrate", build_parser(), run, argv)
