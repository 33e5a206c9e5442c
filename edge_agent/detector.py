"""The detector: a pure state machine from per-window class scores to start/end detections.

``update(scores, now)`` takes the clock as an argument, so it is tested with made-up score sequences.
Per listened class: the score is the mean of the class's last ``pool_windows`` window scores
(``trailing_mean``; 1 is the window's own score); a window is a *hit* when that score reaches the class
threshold; an episode
*starts* when N of the last M windows are hits (and the class is not cooling down); it *ends* once the
class has not been hit for ``end_after_s``; after an end, no new start for ``cooldown_s``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from edge_agent.config import ConfigError, DetectorConfig
from edge_agent.strict import reject_unknown

logger = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class Detection:
    """A start or end of one class's episode, on the detector's clock (seconds)."""

    label: str
    kind: str  # "start" or "end"
    score: float  # start: the confirming window's score; end: the episode's peak score
    started_at: float
    ended_at: float | None
    top_k: tuple[tuple[str, float], ...]  # the triggering window's best classes, best first


@dataclass
class _ClassState:
    """Mutable per-class state, private to the detector."""

    hits: deque[bool]
    recent: deque[float]  # the last pool_windows raw scores
    active: bool = False
    started_at: float = 0.0
    last_hit: float = 0.0
    peak: float = 0.0
    peak_top_k: tuple[tuple[str, float], ...] = field(default_factory=tuple)
    quiet_until: float = float("-inf")  # cooldown: no start before this time


def rank(labels: Sequence[str], scores: Sequence[float], k: int) -> tuple[tuple[str, float], ...]:
    """The ``k`` best (label, score) pairs, best first."""
    order = sorted(range(len(labels)), key=lambda i: -float(scores[i]))[:k]
    return tuple((labels[i], float(scores[i])) for i in order)


def trailing_mean(scores: np.ndarray, windows: int) -> np.ndarray:
    """Each (windows,) score replaced by the mean of it and the ``windows - 1`` before it (fewer at the
    start): what the detector thresholds. Sweeps pool a recorded track once with it, then run the
    detector with ``pool_windows = 1``."""
    values = np.asarray(scores, np.float64)
    padded = np.concatenate([np.zeros(windows - 1), values])  # zeros add nothing, exactly
    total = padded[: len(values)].copy()
    # Oldest first, one addition at a time: the same float operations as ``_pooled``, so a replayed
    # track crosses a threshold exactly where the live detector does (a cumsum difference would not).
    for lag in range(1, windows):
        total = total + padded[lag : lag + len(values)]
    return total / np.minimum(np.arange(1, len(values) + 1), windows)


def _pooled(recent: deque[float]) -> float:
    """The mean ``trailing_mean`` gives for the newest of these scores: oldest first, one addition at a
    time from 0.0 (its zero padding adds nothing, exactly)."""
    total = 0.0
    for value in recent:
        total = total + value
    return total / len(recent)


def resolve_thresholds(
    labels: Sequence[str], configured: Mapping[str, float], suggested: Mapping[str, float]
) -> dict[str, float]:
    """Per label: the config's threshold, else the model's suggestion, else 0.5."""
    reject_unknown(
        configured,
        labels,
        lambda keys: (
            f"detector.thresholds.{keys[0]}: not a label of this model (labels: {', '.join(labels)})"
        ),
        ConfigError,
    )
    return {label: float(configured.get(label, suggested.get(label, DEFAULT_THRESHOLD))) for label in labels}


class Detector:
    """Turns per-window class scores into start/end ``Detection``s for the listened classes."""

    def __init__(
        self,
        labels: Sequence[str],
        config: DetectorConfig,
        suggested_thresholds: Mapping[str, float] | None = None,
    ) -> None:
        missing = [label for label in config.listen if label not in labels]
        if missing:
            raise ConfigError(
                f"detector.listen: {missing[0]!r} is not a label of this model (labels: {', '.join(labels)})"
            )
        self.labels = tuple(labels)
        self.config = config
        self.thresholds = resolve_thresholds(labels, config.thresholds, suggested_thresholds or {})
        self._index = {label: i for i, label in enumerate(self.labels)}
        self._states = {
            label: _ClassState(hits=deque(maxlen=config.confirm_m), recent=deque(maxlen=config.pool_windows))
            for label in config.listen
        }

    def top_k(self, scores: Sequence[float]) -> tuple[tuple[str, float], ...]:
        """The ``top_k`` best (label, score) pairs, best first."""
        return rank(self.labels, scores, self.config.top_k)

    def update(self, scores: Sequence[float], now: float) -> list[Detection]:
        """Feed one window's scores (model label order) at time ``now``; return the detections it causes."""
        if len(scores) != len(self.labels):
            raise ValueError(f"expected {len(self.labels)} scores, got {len(scores)}")
        detections: list[Detection] = []
        ranked = self.top_k(scores)
        for label, state in self._states.items():
            state.recent.append(float(scores[self._index[label]]))
            score = _pooled(state.recent)
            hit = score >= self.thresholds[label]
            state.hits.append(hit)
            if state.active:
                detections += self._continue(label, state, hit, score, ranked, now)
            elif sum(state.hits) >= self.config.confirm_n and now >= state.quiet_until:
                self._start(state, score, ranked, now)
                detections.append(Detection(label, "start", score, now, None, ranked))
        return detections

    def _start(
        self, state: _ClassState, score: float, ranked: tuple[tuple[str, float], ...], now: float
    ) -> None:
        """Open an episode."""
        state.active, state.started_at, state.last_hit = True, now, now
        state.peak, state.peak_top_k = score, ranked

    def _continue(
        self,
        label: str,
        state: _ClassState,
        hit: bool,
        score: float,
        ranked: tuple[tuple[str, float], ...],
        now: float,
    ) -> list[Detection]:
        """Extend an open episode on a hit; end it after ``end_after_s`` without one."""
        if hit:
            state.last_hit = now
            if score > state.peak:
                state.peak, state.peak_top_k = score, ranked
            return []
        if now - state.last_hit < self.config.end_after_s:
            return []
        return [self._end(label, state, now)]

    def _end(self, label: str, state: _ClassState, now: float) -> Detection:
        """Close an episode and start the cooldown."""
        state.active = False
        state.hits.clear()
        state.quiet_until = now + self.config.cooldown_s
        return Detection(label, "end", state.peak, state.started_at, now, state.peak_top_k)

    def active(self) -> list[str]:
        """Labels with an open episode."""
        return [label for label, state in self._states.items() if state.active]

    def flush(self, now: float) -> list[Detection]:
        """End every open episode (end of stream or shutdown)."""
        return [self._end(label, state, now) for label, state in self._states.items() if state.active]


def detector_windows(hits: np.ndarray, times: np.ndarray, confirm_m: int, end_after_s: float) -> np.ndarray:
    """Indices of the windows that can change the detector's output; the rest are provably no-ops.

    Around each hit: the M windows before (the N-of-M count) and after it, and every window up to the
    one that can end its episode. Outside these, a window is a miss while no episode is open and the
    last M windows were misses too, so feeding it changes nothing.
    """
    hit_index = np.flatnonzero(hits)
    if hit_index.size == 0:
        return hit_index
    n = len(hits)
    ends = np.searchsorted(times, times[hit_index] + end_after_s, side="left") + 1  # +1: float rounding
    first = np.clip(hit_index - confirm_m, 0, n)
    last = np.clip(np.maximum(hit_index + confirm_m, ends) + 1, 0, n)
    edges = np.zeros(n + 1, dtype=np.int64)
    np.add.at(edges, first, 1)
    np.add.at(edges, last, -1)
    return np.flatnonzero(np.cumsum(edges[:n]) > 0)


def replay_starts(
    scores: np.ndarray, times: np.ndarray, label: str, threshold: float, config: DetectorConfig
) -> list[float]:
    """Start times the detector gives for one label's recorded (windows,) scores at ``threshold``.

    The track is pooled once (``trailing_mean``) and only the windows that can change the detector's
    state are fed (``detector_windows``); the rest are provably no-ops, which makes a sweep over many
    thresholds cheap. Equal to feeding every window to ``Detector`` with ``config`` (tested).
    """
    pooled = trailing_mean(scores, config.pool_windows)  # (windows,)
    single = dataclasses.replace(
        config, listen=(label,), thresholds={label: threshold}, top_k=1, pool_windows=1
    )
    detector = Detector((label,), single)
    starts = []
    for i in detector_windows(pooled >= threshold, times, config.confirm_m, config.end_after_s):
        starts += [
            d.started_at for d in detector.update((float(pooled[i]),), float(times[i])) if d.kind == "start"
        ]
    return starts
