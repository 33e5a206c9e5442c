"""Real clips for export: calibration from the checkpoint's training folds, parity on its held-out clips
(which clips are which: training/splits.py).

Windows are cut and turned into log-mel exactly as the agent does it: 1-s waveform windows through
the numpy ``LogMel`` of edge_agent/frontend.py, so INT8 ranges are calibrated on the agent's own input.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from edge_agent.frontend import FrontendParams, LogMel
from training.data import ClipRecord, load_waveform

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WindowSet:
    """Log-mel windows of several clips, with each window's clip for clip-level aggregation."""

    logmel: np.ndarray  # (windows, 1, n_mels, frames) float32
    clip_index: np.ndarray  # (windows,) int64
    labels: np.ndarray  # (clips,) int64


def sample_clips(records: list[ClipRecord], limit: int | None, seed: int) -> list[ClipRecord]:
    """Up to ``limit`` clips, a seeded random choice (all of them when ``limit`` is None)."""
    if limit is None or limit >= len(records):
        return list(records)
    order = np.random.default_rng(seed).permutation(len(records))[:limit]
    return [records[i] for i in sorted(order)]


def window_waveform(wave: np.ndarray, params: FrontendParams, hop_samples: int) -> np.ndarray:
    """(samples,) -> (windows, window_samples): the agent's sliding windows, at least one."""
    size = params.window_samples
    starts = range(0, max(len(wave) - size, 0) + 1, hop_samples)
    return np.stack([wave[s : s + size] for s in starts])


def logmel_windows(
    records: list[ClipRecord], params: FrontendParams, hop_seconds: float, desc: str
) -> WindowSet:
    """Decode each clip, cut sliding windows and take the numpy log-mel of each."""
    frontend = LogMel(params)
    hop = max(1, int(round(hop_seconds * params.sample_rate)))
    feats, owners = [], []
    for index, record in enumerate(tqdm(records, desc=desc, unit="clip", mininterval=2.0)):
        wave = load_waveform(record.path, params).numpy()  # (samples,) at the front-end's rate
        windows = window_waveform(wave, params, hop)  # (n, window_samples)
        feats.append(frontend(windows))  # (n, 1, n_mels, frames)
        owners.append(np.full(len(windows), index, dtype=np.int64))
    if not feats:
        raise ValueError(f"no clips to {desc}")
    labels = np.array([r.label for r in records], dtype=np.int64)
    return WindowSet(np.concatenate(feats), np.concatenate(owners), labels)
