"""One evaluation: for each split, plan a stream, run it through the agent, score it, sweep thresholds."""

from __future__ import annotations

import logging
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_agent.config import AgentConfig
from edge_agent.detector import Detector
from edge_agent.onnx_model import OnnxModel
from edge_agent.windowing import hop_samples
from training.catalog import Clip, clip_seconds, read_source
from training.cross_source import SplitSpec
from training.evaluate.metrics import LabelResult, label_result, pool, sweep, sweep_thresholds
from training.evaluate.runner import StreamRun, run_stream
from training.evaluate.streams import StreamPlan, load_clip, plan_within

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Timing:
    """The detector's clock, which the tolerance and the gaps between targets are derived from."""

    window_s: float
    hop_s: float  # the hop the pipeline really uses (rounded to whole STFT frames)
    tolerance_s: float  # an event's start may come this long before its onset or after its offset
    min_gap_s: float  # between targets: a detection can end and cool down before the next one


def timing(model: OnnxModel, config: AgentConfig, tolerance_s: float | None) -> Timing:
    """Tolerance defaults to one window plus one hop: the latest a window holding any of the event ends."""
    params = model.frontend
    hop = hop_samples(config.audio.hop_seconds, params.sample_rate, params.hop_length) / params.sample_rate
    window = params.window_samples / params.sample_rate
    gap = window + hop + config.detector.end_after_s + config.detector.cooldown_s
    return Timing(window, hop, window + hop if tolerance_s is None else tolerance_s, gap)


@dataclass(frozen=True)
class SplitResult:
    """One split's stream, the agent's run over it, and the figures per alert label."""

    spec: SplitSpec
    plan: StreamPlan
    run: StreamRun
    labels: dict[str, LabelResult]  # at the operating thresholds, from the live detector's starts
    curves: dict[str, list[tuple[float, LabelResult]]]  # threshold sweep per label


@dataclass(frozen=True)
class Evaluation:
    """Everything the report shows."""

    model: OnnxModel
    config: AgentConfig
    thresholds: dict[str, float]
    timing: Timing
    seed: int
    hours: float | None
    splits: list[SplitResult]
    wall_s: float

    def pooled(self, label: str) -> LabelResult:
        """One label's figures over every split."""
        return pool([s.labels[label] for s in self.splits])

    def pooled_curve(self, label: str) -> list[tuple[float, LabelResult]]:
        """The pooled sweep: every split's counts and hours added at each threshold."""
        curves = [s.curves[label] for s in self.splits]
        return [(point[0], pool([curve[i][1] for curve in curves])) for i, point in enumerate(curves[0])]


def stream_seed(seed: int, split: str) -> int:
    """Each split its own stream, reproducible from the one seed."""
    return (seed << 32) ^ zlib.crc32(split.encode())


def with_lengths(clips: Sequence[Clip]) -> list[tuple[Clip, float]]:
    """Clips with their lengths from the file headers."""
    return [(clip, clip_seconds(clip.path)) for clip in clips]


def plan_split(
    spec: SplitSpec, data_root: Path, listen: Sequence[str], seed: int, min_gap_s: float, hours: float | None
) -> StreamPlan:
    """The split's clips, alert labels as targets and every other clip a negative, planned as one stream."""
    clips = spec.select(read_source(data_root, spec.source))
    if not clips:
        raise ValueError(f"split {spec.name} selects no clip under {data_root}")
    targets = with_lengths([c for c in clips if c.label in listen])
    negatives = with_lengths([c for c in clips if c.label not in listen])
    return plan_within(spec.name, targets, negatives, stream_seed(seed, spec.name), min_gap_s, hours)


def evaluate_split(
    spec: SplitSpec,
    data_root: Path,
    model: OnnxModel,
    config: AgentConfig,
    thresholds: dict[str, float],
    clock: Timing,
    seed: int,
    hours: float | None,
    progress: bool,
) -> SplitResult:
    """Plan, run through the agent, score at the operating point, sweep each label's threshold."""
    listen = config.detector.listen
    plan = plan_split(spec, data_root, listen, seed, clock.min_gap_s, hours)
    rate = model.frontend.sample_rate
    run = run_stream(
        plan, model, config, lambda clip: load_clip(clip.path, rate), stream_seed(seed, spec.name), progress
    )
    labels = {
        label: label_result(plan, label, run.starts[label], clock.tolerance_s, clock.window_s)
        for label in listen
    }
    curves = {}
    for label in listen:
        column = run.track.scores[:, model.labels.index(label)]  # (windows,)
        curves[label] = sweep(
            plan,
            column,
            run.track.times,
            label,
            sweep_thresholds(thresholds[label]),
            config.detector,
            clock.tolerance_s,
            clock.window_s,
        )
    logger.info(
        "%s: %.2f h of audio in %.1f s (%.0fx real time)",
        spec.name,
        plan.duration_s / 3600,
        run.wall_s,
        plan.duration_s / max(run.wall_s, 1e-9),
    )
    return SplitResult(spec, plan, run, labels, curves)


def evaluate(
    model: OnnxModel,
    config: AgentConfig,
    data_root: Path,
    specs: Sequence[SplitSpec],
    seed: int,
    hours: float | None,
    tolerance_s: float | None,
    progress: bool = True,
) -> Evaluation:
    """Every split in turn; thresholds are the config's, else the model's (as the agent resolves them)."""
    started = time.perf_counter()
    thresholds = Detector(model.labels, config.detector, model.metadata.thresholds).thresholds
    clock = timing(model, config, tolerance_s)
    results = [
        evaluate_split(spec, data_root, model, config, thresholds, clock, seed, hours, progress)
        for spec in specs
    ]
    return Evaluation(model, config, thresholds, clock, seed, hours, results, time.perf_counter() - started)
