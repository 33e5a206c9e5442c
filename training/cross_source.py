"""Cross-source splits: which clips of which source a model is judged on, and group-disjoint partitions.

A split is data: a name, the source it reads, and a pure selection of that source's clips. Training
reuses the same functions to pick what it may learn from (``street_extra_partition`` gives the train side
of the split ``street-extra-test``), so no recording (``group``, ``fsID``) is ever on both sides.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from training.catalog import DEBIAN_SOUNDS, ESC10, STREET_EXTRA, URBANSOUND8K, Clip
from training.debian_sounds import EVALUATION_PACKAGES

STREET_EXTRA_TEST_FRACTION = 0.5  # share of each label's street-extra recordings kept for testing
STREET_EXTRA_SEED = 0
DEBIAN_HALVES_SEED = 0


@dataclass(frozen=True)
class SplitSpec:
    """One evaluation split: a source and the clips of it that are judged."""

    name: str
    source: str
    description: str
    select: Callable[[Sequence[Clip]], list[Clip]]


def group_disjoint_split(
    clips: Sequence[Clip], test_fraction: float, seed: int
) -> tuple[list[Clip], list[Clip]]:
    """(train, test): whole recordings go to one side, ``test_fraction`` of each label's recordings to test.

    Stratified by label, so both sides hold every label that has two or more recordings; a label with one
    recording stays in train. A recording is placed by the first of its labels in sorted order.
    """
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    by_label: dict[str, list[tuple[str, str]]] = {}
    placed: set[tuple[str, str]] = set()
    for clip in sorted(clips, key=lambda c: (c.label, c.recording)):
        if clip.recording not in placed:
            placed.add(clip.recording)
            by_label.setdefault(clip.label, []).append(clip.recording)
    rng = np.random.default_rng(seed)
    test: set[tuple[str, str]] = set()
    for recordings in by_label.values():
        count = min(max(1, round(len(recordings) * test_fraction)), len(recordings) - 1)
        test.update(recordings[i] for i in rng.permutation(len(recordings))[:count])
    return [c for c in clips if c.recording not in test], [c for c in clips if c.recording in test]


def street_extra_partition(clips: Sequence[Clip]) -> tuple[list[Clip], list[Clip]]:
    """The street-extra (train, test) recordings: what ``street-extra-test`` judges and training may use."""
    return group_disjoint_split(clips, STREET_EXTRA_TEST_FRACTION, STREET_EXTRA_SEED)


def _fold(fold: int) -> Callable[[Sequence[Clip]], list[Clip]]:
    """A selection of one fold's clips."""
    return lambda clips: [c for c in clips if c.fold == fold]


def _all(clips: Sequence[Clip]) -> list[Clip]:
    return list(clips)


def debian_held_out(clips: Sequence[Clip]) -> list[Clip]:
    """Debian sounds no model trains on: the evaluation packages' effects and music."""
    return [c for c in clips if c.group in EVALUATION_PACKAGES]


def debian_held_out_halves(clips: Sequence[Clip]) -> tuple[list[Clip], list[Clip]]:
    """(calibration, test): the held-out Debian sounds split by package, so thresholds are set on one
    half's hours and judged on packages they never saw."""
    return group_disjoint_split(debian_held_out(clips), 0.5, DEBIAN_HALVES_SEED)


SPLITS: dict[str, SplitSpec] = {
    spec.name: spec
    for spec in (
        SplitSpec(
            "street-extra",
            STREET_EXTRA,
            "street-extra: French sirens (66 recordings), gunshots of 4 gun models, street negatives",
            _all,
        ),
        SplitSpec(
            "street-extra-test",
            STREET_EXTRA,
            "street-extra, the test half of its recordings "
            f"(group-disjoint, seed {STREET_EXTRA_SEED}); train on the other half",
            lambda clips: street_extra_partition(clips)[1],
        ),
        SplitSpec(
            "us8k-fold10",
            URBANSOUND8K,
            "UrbanSound8K fold 10; its other classes are the negatives",
            _fold(10),
        ),
        SplitSpec("esc10", ESC10, "ESC-10, all 400 clips: none is an alert label (false alarms only)", _all),
        SplitSpec(
            "debian-heldout",
            DEBIAN_SOUNDS,
            "Debian data packages no model trains on (effects and music of "
            + ", ".join(EVALUATION_PACKAGES)
            + "; false alarms only)",
            debian_held_out,
        ),
        SplitSpec(
            "debian-heldout-cal",
            DEBIAN_SOUNDS,
            "debian-heldout, the half of its packages that thresholds are calibrated on",
            lambda clips: debian_held_out_halves(clips)[0],
        ),
        SplitSpec(
            "debian-heldout-test",
            DEBIAN_SOUNDS,
            "debian-heldout, the other half of its packages: false alarms of calibrated thresholds",
            lambda clips: debian_held_out_halves(clips)[1],
        ),
    )
}
DEFAULT_SPLITS = ("street-extra", "us8k-fold10", "esc10")
_FOLD_SPLIT = re.compile(r"us8k-fold(\d+)")
_ESC10_FOLD_SPLIT = re.compile(r"esc10-fold(\d+)")


def resolve_split(name: str) -> SplitSpec:
    """A split by name (``us8k-foldN`` for any fold); ValueError listing the known ones."""
    if name in SPLITS:
        return SPLITS[name]
    match = _FOLD_SPLIT.fullmatch(name)
    if match:
        fold = int(match.group(1))
        return SplitSpec(
            name, URBANSOUND8K, f"UrbanSound8K fold {fold}; its other classes are the negatives", _fold(fold)
        )
    match = _ESC10_FOLD_SPLIT.fullmatch(name)
    if match:  # folds 4-5 are never trained on as ``other`` (training/sources.py): an open-set test
        fold = int(match.group(1))
        return SplitSpec(name, ESC10, f"ESC-10 fold {fold} (false alarms only)", _fold(fold))
    raise ValueError(f"unknown split {name!r} (known: {', '.join(SPLITS)}, us8k-foldN, esc10-foldN)")
