"""Evaluation streams: target clips placed at known times between negative clips, and their ground truth.

Planning is pure (clips and their lengths in, placements out, seeded). Each negative clip is heard once
and counted as non-target audio. Targets are kept apart by gaps long enough for the detector to end an
episode and cool down (a gap shorter than that would hide a detection behind the previous one); when a
source has too few negatives to fill the gaps, negatives are heard again as *filler*, which is neither
counted nor scored. Rendering overlap-adds the clips with short equal-power crossfades (an abrupt cut is
a click, and clicks look like gunshots) over a faint noise floor (digital silence, as in ESC-10's padded
clips, is a sound no microphone makes).
"""

from __future__ import annotations

import csv
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from training.catalog import Clip, DataError

TARGET, NEGATIVE, FILLER = "target", "negative", "filler"
FADE_S = 0.05  # crossfade between neighbouring clips
NOISE_FLOOR_DBFS = -70.0  # RMS of the white noise under the whole stream (a quiet microphone's self-noise)
MAX_GAP_FACTOR = 1.5  # gaps are drawn uniformly in [min_gap, 1.5 x min_gap]


@dataclass(frozen=True)
class Placement:
    """One clip at a known place in a stream (seconds from the stream's start)."""

    clip: Clip
    onset_s: float
    duration_s: float
    role: str  # TARGET, NEGATIVE (non-target audio, counted) or FILLER (a negative heard again, not counted)

    @property
    def offset_s(self) -> float:
        """Where the clip ends."""
        return self.onset_s + self.duration_s


@dataclass(frozen=True)
class StreamPlan:
    """A whole stream: its placements in time order and its length."""

    name: str
    placements: tuple[Placement, ...]
    duration_s: float

    def targets(self, label: str) -> list[Placement]:
        """The target events of one label."""
        return [p for p in self.placements if p.role == TARGET and p.clip.label == label]

    def seconds(self, role: str) -> float:
        """Total length of the clips in one role."""
        return sum(p.duration_s for p in self.placements if p.role == role)


class _Cursor:
    """Appends clips end to end, each overlapping the previous one by a crossfade."""

    def __init__(self, fade_s: float) -> None:
        self.fade_s, self.time = fade_s, 0.0
        self.placements: list[Placement] = []
        self._last: float | None = None  # the previous clip's length (None: nothing to overlap)

    def put(self, item: tuple[Clip, float], role: str) -> None:
        """Place a (clip, seconds), overlapping the previous clip by the shorter of their fades."""
        clip, seconds = item
        if self._last is not None:
            self.time -= min(self.fade_s, self._last / 4, seconds / 4)
        self.placements.append(Placement(clip, self.time, seconds, role))
        self.time += seconds
        self._last = seconds

    def skip(self, seconds: float) -> None:
        """Leave a stretch with only the noise floor (a source without negatives)."""
        self.time += seconds
        self._last = None


def plan_stream(
    name: str,
    targets: Sequence[tuple[Clip, float]],
    negatives: Sequence[tuple[Clip, float]],
    seed: int,
    min_gap_s: float,
    fade_s: float = FADE_S,
) -> StreamPlan:
    """Targets in seeded order, each after a gap of negatives in [min_gap, 1.5 min_gap]; then the rest."""
    rng = np.random.default_rng(seed)
    fresh = deque(negatives[i] for i in rng.permutation(len(negatives)))
    filler: deque[tuple[Clip, float]] = deque()
    cursor = _Cursor(fade_s)

    def fill(gap: float) -> None:
        start = cursor.time
        while cursor.time - start < gap:
            if fresh:
                cursor.put(fresh.popleft(), NEGATIVE)
            elif negatives:
                if not filler:
                    filler.extend(negatives[i] for i in rng.permutation(len(negatives)))
                cursor.put(filler.popleft(), FILLER)
            else:
                cursor.skip(gap - (cursor.time - start))
                return

    for index in rng.permutation(len(targets)):
        fill(rng.uniform(min_gap_s, MAX_GAP_FACTOR * min_gap_s))
        cursor.put(targets[index], TARGET)
    if len(targets):
        fill(rng.uniform(min_gap_s, MAX_GAP_FACTOR * min_gap_s))  # so the last event's episode can end
    while fresh:
        cursor.put(fresh.popleft(), NEGATIVE)
    duration = max([cursor.time, *(p.offset_s for p in cursor.placements)])
    return StreamPlan(name, tuple(cursor.placements), duration)


def subsample(
    items: Sequence[tuple[Clip, float]], fraction: float, rng: np.random.Generator
) -> list[tuple[Clip, float]]:
    """About ``fraction`` of each label's clips (at least one per label), in their original order."""
    if fraction >= 1.0:
        return list(items)
    keep: set[int] = set()
    for label in sorted({clip.label for clip, _ in items}):
        indices = [i for i, (clip, _) in enumerate(items) if clip.label == label]
        count = max(1, round(len(indices) * fraction))
        keep.update(rng.choice(indices, size=count, replace=False).tolist())
    return [item for i, item in enumerate(items) if i in keep]


def plan_within(
    name: str,
    targets: Sequence[tuple[Clip, float]],
    negatives: Sequence[tuple[Clip, float]],
    seed: int,
    min_gap_s: float,
    hours: float | None,
) -> StreamPlan:
    """``plan_stream``, subsampled until the stream fits in ``hours``: targets by a fraction, negatives by
    the same fraction or by what the kept targets' gaps need, whichever is more (filler is wasted time)."""
    plan = plan_stream(name, targets, negatives, seed, min_gap_s)
    fraction, negative_s = 1.0, sum(seconds for _, seconds in negatives)
    for attempt in range(8):
        if hours is None or plan.duration_s <= hours * 3600.0:
            break
        fraction *= 0.97 * hours * 3600.0 / plan.duration_s
        rng = np.random.default_rng([seed, attempt])
        kept = subsample(targets, fraction, rng)
        need = len(kept) * (1 + MAX_GAP_FACTOR) / 2 * min_gap_s  # the mean gap, times the targets
        share = min(1.0, max(fraction, need / negative_s)) if negative_s else 1.0
        plan = plan_stream(name, kept, subsample(negatives, share, rng), seed, min_gap_s)
    return plan


def load_clip(path: Path, rate: int) -> np.ndarray:
    """A clip as mono float32 at ``rate``: (samples,)."""
    try:
        data, clip_rate = sf.read(str(path), dtype="float32", always_2d=True)  # (samples, channels)
    except Exception as error:  # soundfile.LibsndfileError: corrupt or not audio
        raise DataError(f"cannot read audio file {path}: {str(error).strip().splitlines()[0]}") from None
    mono = data.mean(axis=1, dtype=np.float32)  # (samples,)
    if clip_rate != rate:
        mono = soxr.resample(mono, clip_rate, rate).astype(np.float32)
    return mono


def _fades(plan: StreamPlan, index: int, fade_s: float) -> tuple[float, float]:
    """(fade-in, fade-out) seconds of one placement: its overlaps with its neighbours, else ``fade_s``."""
    here = plan.placements[index]
    before = plan.placements[index - 1].offset_s - here.onset_s if index > 0 else 0.0
    after = here.offset_s - plan.placements[index + 1].onset_s if index + 1 < len(plan.placements) else 0.0
    default = min(fade_s, here.duration_s / 4)
    return (before if before > 1e-9 else default), (after if after > 1e-9 else default)


def _shaped(audio: np.ndarray, samples: int, fade_in: int, fade_out: int) -> np.ndarray:
    """Cut or pad to ``samples``, then equal-power fades in and out (uncorrelated clips keep their level)."""
    out = np.zeros(samples, dtype=np.float32)
    out[: min(samples, len(audio))] = audio[:samples]
    if fade_in > 0:
        out[:fade_in] *= np.sin(0.5 * np.pi * (np.arange(fade_in) + 0.5) / fade_in).astype(np.float32)
    if fade_out > 0:
        out[samples - fade_out :] *= np.cos(0.5 * np.pi * (np.arange(fade_out) + 0.5) / fade_out).astype(
            np.float32
        )
    return out


def render(
    plan: StreamPlan,
    rate: int,
    load: Callable[[Clip], np.ndarray],
    seed: int,
    block: int = 16000,
    floor_dbfs: float = NOISE_FLOOR_DBFS,
    fade_s: float = FADE_S,
) -> Iterator[np.ndarray]:
    """The stream's samples in blocks of at most ``block`` (float32, mono), clip by clip."""
    floor = np.random.default_rng(seed)
    level = np.float32(10.0 ** (floor_dbfs / 20.0))
    pending, base = np.zeros(0, dtype=np.float32), 0  # mixed samples not yet sent, from absolute ``base``

    def send(until: int) -> Iterator[np.ndarray]:
        nonlocal pending, base
        while base < until:
            count = min(block, until - base)
            chunk = np.zeros(count, dtype=np.float32)
            chunk[: min(count, len(pending))] = pending[:count]
            pending = pending[count:]
            base += count
            yield chunk + level * floor.standard_normal(count, dtype=np.float32)

    for index, placement in enumerate(plan.placements):
        start = round(placement.onset_s * rate)
        yield from send(start)
        fade_in, fade_out = (round(s * rate) for s in _fades(plan, index, fade_s))
        audio = _shaped(load(placement.clip), round(placement.duration_s * rate), fade_in, fade_out)
        end = start + len(audio) - base
        if end > len(pending):
            pending = np.concatenate([pending, np.zeros(end - len(pending), dtype=np.float32)])
        pending[start - base : end] += audio
    yield from send(round(plan.duration_s * rate))


GROUND_TRUTH_COLUMNS = ("onset_s", "offset_s", "role", "label", "source", "group", "fold", "category", "file")


def write_ground_truth(plan: StreamPlan, path: Path, data_root: Path) -> None:
    """Every placement as a CSV row (onset, offset, role, label, source, group, fold, category, file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(GROUND_TRUTH_COLUMNS)
        for p in plan.placements:
            clip = p.clip
            file = clip.path.relative_to(data_root) if clip.path.is_relative_to(data_root) else clip.path
            writer.writerow(
                [
                    f"{p.onset_s:.4f}",
                    f"{p.offset_s:.4f}",
                    p.role,
                    clip.label,
                    clip.source,
                    clip.group,
                    "" if clip.fold is None else clip.fold,
                    clip.category,
                    file,
                ]
            )
