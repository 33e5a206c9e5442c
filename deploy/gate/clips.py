"""The gate's evaluation data: held-out clips as 1-s windows, and a bank of real background noise.

Each clip is judged on its loudest 1-s window: the window that carries the event, and the one a
sensor's detector fires on. Decoding reuses training/data.py so the gate reads clips as training does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deploy.gate.corruptions import Window, loudest_start
from edge_agent.frontend import FrontendParams
from edge_agent.labels import URBANSOUND8K_LABELS
from training.checkpoint import Checkpoint
from training.data import ClipRecord, folds_present, load_waveform, read_esc10_negatives, read_urbansound8k
from training.splits import split_for_checkpoint

logger = logging.getLogger(__name__)

NOISE_CLIPS_PER_CLASS = 8  # 72 real recordings: variety enough, decoded in seconds


@dataclass
class HeldOut:
    """Windows of the held-out clips and their class indices in the model's label order."""

    source: str  # "fold 10", or the checkpoint's validation split
    windows: list[Window]
    labels: np.ndarray  # (clips,) int64
    names: list[str]
    recordings: list[str]  # each clip's recording (UrbanSound8K fsID): clips of one are not independent

    def audio(self) -> np.ndarray:
        """The judged windows stacked: (clips, samples) float32."""
        return np.stack([w.audio for w in self.windows]).astype(np.float32)


def _balanced(records: list[ClipRecord], limit: int | None, seed: int) -> list[ClipRecord]:
    """At most ``limit`` records, classes in turn from a seeded shuffle, so a small sample stays balanced."""
    order = np.random.default_rng(seed).permutation(len(records))
    by_class: dict[int, list[ClipRecord]] = {}
    for i in order:
        by_class.setdefault(records[i].label, []).append(records[i])
    chosen: list[ClipRecord] = []
    queues = [by_class[k] for k in sorted(by_class)]
    while queues and (limit is None or len(chosen) < limit):
        chosen.extend(q.pop(0) for q in queues)
        queues = [q for q in queues if q]
    return chosen if limit is None else chosen[:limit]


def held_out_records(
    data_root: str | Path, checkpoint: Checkpoint, fold: int | None
) -> tuple[list[ClipRecord], str]:
    """The clips the model never trained on: ``fold``, else its test fold, else its validation split."""
    if fold is not None:
        records = read_urbansound8k(data_root)
        if fold not in folds_present(records):
            raise ValueError(f"fold {fold} is not in {data_root} (folds present: {folds_present(records)})")
        return [r for r in records if r.fold == fold], f"fold {fold}"
    split = split_for_checkpoint(Path(data_root), checkpoint)
    return split.heldout, split.heldout_name


def load_held_out(
    records: list[ClipRecord],
    source: str,
    params: FrontendParams,
    labels: tuple[str, ...],
    max_clips: int | None = None,
    seed: int = 0,
) -> HeldOut:
    """Decode the held-out clips (those of the model's classes) and pick each one's loudest window."""
    chosen = _balanced([r for r in records if URBANSOUND8K_LABELS[r.label] in labels], max_clips, seed)
    length, hop = params.window_samples, params.hop_length
    windows = []
    for record in tqdm(chosen, desc=source, unit="clip", mininterval=2.0):
        clip = np.clip(load_waveform(record.path, params).numpy(), -1.0, 1.0)  # (samples,)
        windows.append(Window(clip, loudest_start(clip, length, hop), length))
    label_index = np.array([labels.index(URBANSOUND8K_LABELS[r.label]) for r in chosen], dtype=np.int64)
    return HeldOut(source, windows, label_index, [r.path.name for r in chosen], [r.group for r in chosen])


def load_noise_bank(esc10_root: str | Path, params: FrontendParams, seed: int = 0) -> list[np.ndarray]:
    """Real non-target recordings (ESC-10 minus dog_bark) to mix in as background noise."""
    records = read_esc10_negatives(esc10_root)
    if not records:
        raise ValueError(f"no ESC-10 non-target clips found under {esc10_root}")
    by_class: dict[str, list[ClipRecord]] = {}
    for i in np.random.default_rng(seed).permutation(len(records)):
        by_class.setdefault(records[i].group, []).append(records[i])
    chosen = [r for group in sorted(by_class) for r in by_class[group][:NOISE_CLIPS_PER_CLASS]]
    return [
        np.clip(load_waveform(r.path, params).numpy(), -1.0, 1.0)
        for r in tqdm(chosen, desc="noise bank", unit="clip", mininterval=2.0)
    ]
