"""UrbanSound8K and ESC-10 on disk -> cached linear mel power per clip, and 1-s window datasets over it.

Clips are decoded once (any length, rate, channel count; WAV or Ogg via soundfile), resampled with
torchaudio, turned into linear mel power with ``TorchLogMel.power`` and cached under
``~/.cache/earshot`` keyed by a hash of the file list and the front-end parameters.

Short clips are LOOPED (tiled) up to one model window, never zero-padded: digital silence has a
log-mel (log 1e-6) the agent never sees on a live street, while a looped event keeps its own spectrum.
The shared subset was already looped to 4 s by its provider, so both paths agree.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio
from torch.utils.data import Dataset
from tqdm import tqdm

from edge_agent.frontend import FrontendParams
from training.frontend import TorchLogMel

logger = logging.getLogger(__name__)

CACHE_VERSION = "1"
ESC10_TARGET_OVERLAP = ("dog_bark",)  # ESC-10 classes that ARE UrbanSound8K classes: never negatives


@dataclass(frozen=True)
class ClipRecord:
    """One clip listed in a metadata CSV."""

    path: Path
    label: int  # index into URBANSOUND8K_LABELS, or -1 for a non-target (open-set) clip
    fold: int
    group: str  # recording id: slices of one recording must stay on one side of a split


@dataclass
class ClipFeatures:
    """Cached linear mel power of many clips, concatenated along time for compact storage."""

    power: torch.Tensor  # (n_mels, total_frames) float32
    offsets: torch.Tensor  # (clips + 1,) int64 frame offsets into ``power``
    records: list[ClipRecord]

    def clip(self, index: int) -> torch.Tensor:
        """Linear mel power of one clip, (n_mels, frames)."""
        return self.power[:, self.offsets[index] : self.offsets[index + 1]]

    @classmethod
    def from_parts(cls, parts: list[torch.Tensor], records: list[ClipRecord], n_mels: int) -> ClipFeatures:
        """Clips given as (n_mels, frames) tensors, stored concatenated along time."""
        lengths = torch.tensor([0] + [p.shape[1] for p in parts])
        power = torch.cat(parts, dim=1) if parts else torch.zeros(n_mels, 0)
        return cls(power, torch.cumsum(lengths, 0), list(records))

    def subset(self, indices: list[int]) -> ClipFeatures:
        """The clips at ``indices``, sharing no storage with the rest."""
        parts = [self.clip(i) for i in indices]
        return ClipFeatures.from_parts(parts, [self.records[i] for i in indices], self.power.shape[0])

    @property
    def labels(self) -> torch.Tensor:
        """Class index per clip, (clips,)."""
        return torch.tensor([r.label for r in self.records], dtype=torch.long)


def concat_features(parts: list[ClipFeatures]) -> ClipFeatures:
    """Several sources' features as one (records in order, storage concatenated along time)."""
    if not parts:
        raise ValueError("no training source holds any clip")
    lengths = torch.cat([torch.diff(p.offsets) for p in parts])  # (clips,)
    offsets = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(lengths, 0)])  # (clips + 1,)
    power = torch.cat([p.power[:, p.offsets[0] : p.offsets[-1]] for p in parts], dim=1)  # (n_mels, frames)
    return ClipFeatures(power, offsets, [r for p in parts for r in p.records])


def read_urbansound8k(root: str | Path) -> list[ClipRecord]:
    """Clips in ``metadata/UrbanSound8K.csv`` whose audio is present; folds from the ``fold`` column."""
    root = Path(root)
    meta = root / "metadata" / "UrbanSound8K.csv"
    if not meta.is_file():
        raise ValueError(f"{root} is not an UrbanSound8K directory: {meta} is missing")
    records, missing = [], 0
    with meta.open(newline="") as handle:
        for row in csv.DictReader(handle):
            path = root / "audio" / f"fold{int(row['fold'])}" / row["slice_file_name"]
            if not path.is_file():
                missing += 1
                continue
            records.append(ClipRecord(path, int(row["classID"]), int(row["fold"]), row["fsID"]))
    if missing:
        logger.info("%s clips listed in %s are absent; using the %s present", missing, meta, len(records))
    if not records:
        raise ValueError(f"no audio found under {root / 'audio'} for the clips in {meta}")
    return records


def read_esc10_negatives(root: str | Path) -> list[ClipRecord]:
    """ESC-10 clips of classes that are none of ours (label -1): open-set negatives, background noise."""
    root = Path(root)
    meta = root / "meta.csv"
    if not meta.is_file():
        raise ValueError(f"{root} is not an ESC-10 directory: {meta} is missing")
    with meta.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["category"] not in ESC10_TARGET_OVERLAP]
    return [
        ClipRecord(root / "audio" / r["filename"], -1, int(r["fold"]), r["category"])
        for r in rows
        if (root / "audio" / r["filename"]).is_file()
    ]


def folds_present(records: list[ClipRecord]) -> list[int]:
    """Sorted distinct folds."""
    return sorted({r.fold for r in records})


def load_waveform(path: Path, params: FrontendParams) -> torch.Tensor:
    """Mono float32 waveform at the front-end's rate, looped to at least one window: (samples,)."""
    data, rate = sf.read(str(path), dtype="float32", always_2d=True)  # (samples, channels)
    wave = torch.from_numpy(data.mean(axis=1))  # (samples,)
    if rate != params.sample_rate:
        wave = torchaudio.functional.resample(wave, rate, params.sample_rate)
    if wave.numel() == 0:
        raise ValueError(f"{path} holds no audio")
    if wave.numel() < params.window_samples:
        repeats = -(-params.window_samples // wave.numel())
        wave = wave.repeat(repeats)[: params.window_samples]
    return wave


def cache_dir() -> Path:
    """Where decoded features live; EARSHOT_CACHE overrides ~/.cache/earshot."""
    return Path(os.environ.get("EARSHOT_CACHE", Path.home() / ".cache" / "earshot"))


def cache_key(records: list[ClipRecord], params: FrontendParams) -> str:
    digest = hashlib.sha256(f"{CACHE_VERSION}|{params.to_json()}".encode())
    for r in records:
        stat = r.path.stat()
        digest.update(f"{r.path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{r.label}|{r.fold}\n".encode())
    return digest.hexdigest()[:20]


def write_cache(path: Path, save: Callable[[Path], object]) -> None:
    """``save`` into a file of this process, then rename it to ``path``: a run that dies mid-write, or
    another process writing the same entry, never leaves a half-written cache file under ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.partial{path.suffix}")
    save(partial)
    partial.replace(path)


def compute_features(records: list[ClipRecord], params: FrontendParams, desc: str = "decode") -> ClipFeatures:
    """Decode every clip and take its linear mel power (no caching)."""
    frontend = TorchLogMel(params)
    parts = []
    with torch.no_grad():
        for record in tqdm(records, desc=desc, unit="clip", mininterval=5.0):
            wave = load_waveform(record.path, params)  # (samples,)
            parts.append(frontend.power(wave.unsqueeze(0))[0])  # (n_mels, frames)
    return ClipFeatures.from_parts(parts, list(records), params.n_mels)


def load_features(records: list[ClipRecord], params: FrontendParams, desc: str = "decode") -> ClipFeatures:
    """Cached ``compute_features``: the first run decodes, later runs load in seconds."""
    path = cache_dir() / f"melpower-{cache_key(records, params)}.pt"
    if path.is_file():
        stored = torch.load(path, weights_only=True)
        logger.info("loaded cached features %s", path)
        return ClipFeatures(stored["power"], stored["offsets"], list(records))
    features = compute_features(records, params, desc)
    write_cache(path, lambda to: torch.save({"power": features.power, "offsets": features.offsets}, to))
    logger.info("cached features of %s clips at %s", len(records), path)
    return features


def split_by_group(records: list[ClipRecord], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """(train, validation) indices; whole recordings (fsID) go to one side so slices never straddle."""
    groups = sorted({r.group for r in records})
    rng = np.random.default_rng(seed)
    rng.shuffle(groups)
    chosen = set(groups[: max(1, int(round(len(groups) * fraction)))])
    val = [i for i, r in enumerate(records) if r.group in chosen]
    train = [i for i, r in enumerate(records) if r.group not in chosen]
    return train, val


def window_starts(frames: int, window: int, hop: int) -> list[int]:
    """Frame offsets of the agent's sliding windows over a clip (at least one window)."""
    return list(range(0, max(frames - window, 0) + 1, hop))


def check_crop_settings(crops: int, stretch: tuple[float, float]) -> None:
    """ValueError unless ``crops`` >= 1 and ``stretch`` is a range 0 < lo <= hi."""
    if crops < 1:
        raise ValueError(f"crops_per_clip must be at least 1, got {crops}")
    if not 0 < stretch[0] <= stretch[1]:
        raise ValueError(f"time stretch range must be 0 < lo <= hi, got {stretch}")


class RandomCropDataset(Dataset):
    """Training view: ``crops`` random frame-aligned window crops per clip per epoch (time shift).

    A 4-s clip holds ~13 distinct 1-s windows; one crop per epoch would show the model a small share of
    them, so an epoch draws several.

    With ``stretch=(lo, hi)`` a crop of ``window * rate`` frames (rate drawn in that range) is resampled
    to the window: a time stretch of the event, done on the cached mel power.
    """

    def __init__(
        self,
        features: ClipFeatures,
        window_frames: int,
        crops: int = 1,
        stretch: tuple[float, float] = (1.0, 1.0),
    ) -> None:
        check_crop_settings(crops, stretch)
        self.features = features
        self.window_frames = window_frames
        self.crops = crops
        self.stretch = stretch

    def __len__(self) -> int:
        return len(self.features.records) * self.crops

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index %= len(self.features.records)
        clip = self.features.clip(index)  # (n_mels, frames)
        label = self.features.records[index].label
        rate = float(torch.empty(()).uniform_(*self.stretch)) if self.stretch != (1.0, 1.0) else 1.0
        span = min(max(2, round(self.window_frames * rate)), clip.shape[1])
        start = int(torch.randint(0, clip.shape[1] - span + 1, ()))
        crop = clip[:, start : start + span]  # (n_mels, span)
        if span == self.window_frames:
            return crop, label
        stretched = torch.nn.functional.interpolate(
            crop[None], size=self.window_frames, mode="linear", align_corners=False
        )
        return stretched[0], label  # (n_mels, window_frames)


class WindowDataset(Dataset):
    """Evaluation view: every sliding window of every clip, with its clip index for aggregation."""

    def __init__(self, features: ClipFeatures, window_frames: int, hop_frames: int) -> None:
        self.features = features
        self.window_frames = window_frames
        self.index = [
            (c, s)
            for c in range(len(features.records))
            for s in window_starts(features.clip(c).shape[1], window_frames, hop_frames)
        ]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> tuple[torch.Tensor, int]:
        clip_index, start = self.index[item]
        return self.features.clip(clip_index)[:, start : start + self.window_frames], clip_index
