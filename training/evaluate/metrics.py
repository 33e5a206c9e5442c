"""Event-level figures per alert label, as an operator feels them, and the threshold sweep behind the curve.

- **Event recall**: a target event counts as detected when a ``start`` of its label falls within
  [onset - tolerance, offset + tolerance]. Each start credits at most one event (the earliest one still
  undetected); further starts on a detected event are repeats, neither hits nor false alerts.
- **False alerts per hour**: a start that credits no event of its label, and whose window (centred
  ``window_s / 2`` before the start) lies in non-target audio for that label: the counted negatives and
  the other labels' targets. Starts in filler (negatives heard again) are not scored. The hours are
  the length of that non-target audio, reported beside every rate.
- **Latency**: start time minus onset, for each detected event's first start.

DCASE's event-based metrics (sed_eval: onset collar 200 ms, F-score) and PSDS (sed_scores_eval) score
frame-level systems against annotated onsets and offsets; an alerting detector that speaks once per
episode, a second or more after the onset, is judged here by these simpler definitions instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edge_agent.config import DetectorConfig
from edge_agent.detector import replay_starts
from training.evaluate.streams import NEGATIVE, TARGET, Placement, StreamPlan

# The sweep's thresholds: coarse where alerts are many, finer near the top where the curve bends.
SWEEP_THRESHOLDS = (
    0.05,
    0.1,
    0.15,
    0.2,
    0.25,
    0.3,
    0.35,
    0.4,
    0.45,
    0.5,
    0.55,
    0.6,
    0.65,
    0.7,
    0.75,
    0.8,
    0.85,
    0.9,
    0.93,
    0.95,
    0.97,
    0.98,
    0.99,
)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (linear interpolation), None for no values."""
    return float(np.percentile(values, q)) if len(values) else None


@dataclass(frozen=True)
class LabelResult:
    """One alert label's figures over one stream (or pooled over several)."""

    label: str
    events: int
    detected: int
    false_alerts: int
    nontarget_s: float  # the non-target audio the false-alert rate rests on
    latencies_s: tuple[float, ...]
    false_by_category: tuple[tuple[str, int], ...] = ()  # "source:category" -> false alerts, most first

    @property
    def recall(self) -> float | None:
        """Detected / events; None without events."""
        return self.detected / self.events if self.events else None

    @property
    def nontarget_h(self) -> float:
        """Non-target hours."""
        return self.nontarget_s / 3600.0

    @property
    def false_per_hour(self) -> float | None:
        """False alerts per hour of non-target audio; None without any."""
        return self.false_alerts / self.nontarget_h if self.nontarget_s > 0 else None

    def to_json(self) -> dict:
        """Plain figures for ``evaluate.json``."""
        return {
            "label": self.label,
            "events": self.events,
            "detected": self.detected,
            "recall": self.recall,
            "false_alerts": self.false_alerts,
            "nontarget_hours": self.nontarget_h,
            "false_alerts_per_hour": self.false_per_hour,
            "latency_p50_s": percentile(self.latencies_s, 50),
            "latency_p95_s": percentile(self.latencies_s, 95),
            "false_alerts_by_category": dict(self.false_by_category),
        }


def match_starts(
    onsets: Sequence[float], offsets: Sequence[float], starts: Sequence[float], tolerance_s: float
) -> tuple[list[float | None], list[float]]:
    """(per event: latency of the start that detected it, or None; the starts that match no event)."""
    latencies: list[float | None] = [None] * len(onsets)
    unmatched: list[float] = []
    for start in sorted(starts):
        candidates = [
            i
            for i, (on, off) in enumerate(zip(onsets, offsets, strict=True))
            if on - tolerance_s <= start <= off + tolerance_s
        ]
        fresh = [i for i in candidates if latencies[i] is None]
        if fresh:
            latencies[fresh[0]] = start - onsets[fresh[0]]
        elif not candidates:
            unmatched.append(start)
    return latencies, unmatched


def is_nontarget(placement: Placement, label: str) -> bool:
    """Counted non-target audio for ``label``: a negative heard the first time, or another label's target."""
    return placement.role == NEGATIVE or (placement.role == TARGET and placement.clip.label != label)


def placement_at(plan: StreamPlan, time_s: float) -> Placement | None:
    """The last placement that has begun by ``time_s`` and not yet ended (None in a bare gap)."""
    onsets = [p.onset_s for p in plan.placements]
    index = int(np.searchsorted(onsets, time_s, side="right")) - 1
    if index >= 0 and plan.placements[index].offset_s > time_s:
        return plan.placements[index]
    return None


def label_result(
    plan: StreamPlan, label: str, starts: Sequence[float], tolerance_s: float, window_s: float
) -> LabelResult:
    """Recall, false alerts (with where they fell) and latencies of one label's starts over one stream."""
    events = plan.targets(label)
    latencies, unmatched = match_starts(
        [e.onset_s for e in events], [e.offset_s for e in events], starts, tolerance_s
    )
    where: Counter[str] = Counter()
    for start in unmatched:
        placement = placement_at(plan, start - window_s / 2)  # the centre of the window that confirmed it
        if placement is not None and is_nontarget(placement, label):
            where[f"{placement.clip.source}:{placement.clip.category or placement.clip.label}"] += 1
    found = tuple(x for x in latencies if x is not None)
    nontarget = sum(p.duration_s for p in plan.placements if is_nontarget(p, label))
    return LabelResult(
        label, len(events), len(found), sum(where.values()), nontarget, found, tuple(where.most_common())
    )


def pool(results: Sequence[LabelResult]) -> LabelResult:
    """One label's figures summed over several streams (events, alerts and hours add up)."""
    where: Counter[str] = Counter()
    for result in results:
        where.update(dict(result.false_by_category))
    return LabelResult(
        results[0].label,
        sum(r.events for r in results),
        sum(r.detected for r in results),
        sum(r.false_alerts for r in results),
        sum(r.nontarget_s for r in results),
        tuple(x for r in results for x in r.latencies_s),
        tuple(where.most_common()),
    )


def sweep(
    plan: StreamPlan,
    scores: np.ndarray,
    times: np.ndarray,
    label: str,
    thresholds: Sequence[float],
    config: DetectorConfig,
    tolerance_s: float,
    window_s: float,
) -> list[tuple[float, LabelResult]]:
    """(threshold, figures) at each threshold, re-running only the detector over cached (windows,) scores."""
    return [
        (
            threshold,
            label_result(
                plan, label, replay_starts(scores, times, label, threshold, config), tolerance_s, window_s
            ),
        )
        for threshold in thresholds
    ]


def sweep_thresholds(operating: float) -> tuple[float, ...]:
    """The sweep grid with the operating threshold in it."""
    return tuple(sorted({*SWEEP_THRESHOLDS, round(operating, 4)}))
