"""Export's checks on every source an open-set model meets, not UrbanSound8K alone.

For a checkpoint with the ``other`` label, ``--data-root`` (the folder holding every source) adds:
- INT8 calibration windows from each training source's train side (street-extra's train half, ESC-10's
  noise folds, the training Debian packages), so activation ranges cover sirens from another country,
  gun models and game ambiences as well as UrbanSound8K;
- per held-out split (``CHECK_SPLITS``), FP32 and INT8 clip accuracy and their agreement, held to the
  same parity policy as UrbanSound8K: INT8 may not lose more on one source than the policy allows.
Clips keep their label when it is one of the model's; every other non-music clip is ``other``. Music
has no right answer for a model with a street-music class, so it is not checked here (``earshot
evaluate`` counts its false alerts).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from export.clips import WindowSet, logmel_windows, sample_clips
from training.catalog import ESC10, DataError, read_source, source_dir
from training.checkpoint import Checkpoint
from training.cross_source import resolve_split
from training.data import ClipRecord, read_esc10_negatives
from training.debian_sounds import MUSIC
from training.run import ESC10_NOISE_FOLDS
from training.sources import OTHER, debian_train_records, street_extra_train_records

logger = logging.getLogger(__name__)

CHECK_SPLITS = ("street-extra-test", "esc10-fold4", "esc10-fold5", "debian-heldout")


def open_set(checkpoint: Checkpoint) -> bool:
    """Whether the model was trained on several sources (it has the ``other`` label)."""
    return OTHER in checkpoint.labels


def split_records(name: str, data_root: Path, labels: tuple[str, ...]) -> list[ClipRecord]:
    """A held-out split's clips with the model's label indices (``other`` for none of its labels)."""
    spec = resolve_split(name)
    clips = spec.select(read_source(data_root, spec.source))
    return [
        ClipRecord(c.path, labels.index(c.label if c.label in labels else OTHER), 0, c.group)
        for c in clips
        if c.label != MUSIC
    ]


def held_out_sets(
    data_root: Path, checkpoint: Checkpoint, hop_seconds: float, limit: int | None, seed: int
) -> dict[str, WindowSet]:
    """Windows of each check split present under ``data_root`` (a missing source is skipped, logged)."""
    sets = {}
    for name in CHECK_SPLITS:
        try:
            records = split_records(name, data_root, tuple(checkpoint.labels))
        except DataError as error:
            logger.warning("export check on %s skipped: %s", name, error)
            continue
        chosen = sample_clips(records, limit, seed)
        if chosen:
            sets[name] = logmel_windows(chosen, checkpoint.frontend, hop_seconds, name)
    return sets


def calibration_records(
    data_root: Path, checkpoint: Checkpoint, per_source: int, seed: int
) -> list[ClipRecord]:
    """Up to ``per_source`` clips of each non-UrbanSound8K training source's train side."""
    labels = tuple(checkpoint.labels)
    parts: list[list[ClipRecord]] = []
    for build in (
        lambda: street_extra_train_records(data_root, labels),
        lambda: [
            r for r in read_esc10_negatives(source_dir(data_root, ESC10)) if r.fold in ESC10_NOISE_FOLDS
        ],
        lambda: debian_train_records(data_root, labels),
    ):
        try:
            parts.append(build())
        except (DataError, ValueError) as error:
            logger.warning("INT8 calibration without one source: %s", error)
    return [r for part in parts for r in sample_clips(part, per_source, seed)]


def source_figures(fp32_pred: np.ndarray, int8_pred: np.ndarray | None, labels: np.ndarray) -> dict:
    """Clip accuracy of each precision and their agreement on one split."""
    figures = {"clips": int(len(labels)), "fp32_accuracy": float((fp32_pred == labels).mean())}
    if int8_pred is not None:
        figures["int8_accuracy"] = float((int8_pred == labels).mean())
        figures["int8_agreement"] = float((int8_pred == fp32_pred).mean())
    return figures
