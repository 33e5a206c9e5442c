"""Run a planned stream through the agent's own ``Pipeline`` (windows, hop, log-mel, model, detector) as
fast as the CPU allows, keeping every window's scores and the live detector's starts."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from edge_agent.config import AgentConfig
from edge_agent.onnx_model import OnnxModel
from edge_agent.pipeline import Pipeline, WindowResult
from edge_agent.sources import _ThreadSource  # the file source's reader thread, reused
from edge_agent.tools.calibrate import ScoreTrack
from training.catalog import Clip, DataError
from training.evaluate.streams import StreamPlan, render

BLOCK_FRAMES = 16000  # what the source writes at a time; scores do not depend on it (the frame contract)
RING_SECONDS = 10.0  # holds several blocks, whatever the operator's config says


class PlanSource(_ThreadSource):
    """An ``AudioSource`` that plays a rendered stream into the ring buffer as fast as it is read: the file
    source's reader thread, with blocks from memory instead of a file."""

    channels = 1

    def __init__(self, blocks: Iterator[np.ndarray], sample_rate: int, description: str) -> None:
        super().__init__(BLOCK_FRAMES)
        self.blocks, self.sample_rate, self.description = blocks, sample_rate, description

    def _blocks(self) -> Iterator[np.ndarray]:
        """(frames, 1) float32 blocks."""
        return (block[:, None] for block in self.blocks)


@dataclass(frozen=True)
class StreamRun:
    """What the agent made of one stream."""

    track: ScoreTrack  # every window's scores, for threshold sweeps that re-run only the detector
    starts: dict[str, list[float]]  # the live detector's start times per listened label
    wall_s: float


class _Recorder:
    """The pipeline's window callback: keeps scores and starts, moves the progress bar."""

    def __init__(self, listen: tuple[str, ...], bar: tqdm) -> None:
        self.times: list[float] = []
        self.scores: list[np.ndarray] = []
        self.starts: dict[str, list[float]] = {label: [] for label in listen}
        self.bar = bar

    def __call__(self, result: WindowResult) -> None:
        self.bar.update(result.time_s - (self.times[-1] if self.times else 0.0))
        self.times.append(result.time_s)
        self.scores.append(result.scores)
        for detection in result.detections:
            if detection.kind == "start":
                self.starts[detection.label].append(detection.started_at)


def run_stream(
    plan: StreamPlan,
    model: OnnxModel,
    config: AgentConfig,
    load: Callable[[Clip], np.ndarray],
    seed: int,
    progress: bool = True,
) -> StreamRun:
    """Render ``plan`` at the model's rate and run it through a ``Pipeline`` with no outputs."""
    rate = model.frontend.sample_rate
    config = dataclasses.replace(config, audio=dataclasses.replace(config.audio, ring_seconds=RING_SECONDS))
    source = PlanSource(render(plan, rate, load, seed, BLOCK_FRAMES), rate, f"stream {plan.name}")
    with tqdm(
        total=round(plan.duration_s),
        desc=plan.name,
        unit="s",
        disable=not progress,
        mininterval=1.0,
        leave=False,
    ) as bar:
        recorder = _Recorder(config.detector.listen, bar)
        pipeline = Pipeline(config, model, source, on_window=recorder)
        started = time.perf_counter()
        try:
            pipeline.run()
        except KeyboardInterrupt:
            pipeline.stop()
            raise
        wall = time.perf_counter() - started
    if pipeline.error:
        raise DataError(pipeline.error)
    scores = np.stack(recorder.scores) if recorder.scores else np.zeros((0, len(model.labels)), np.float32)
    # scores: (windows, classes)
    track = ScoreTrack(model.labels, np.asarray(recorder.times), scores, plan.duration_s)
    return StreamRun(track, recorder.starts, wall)
