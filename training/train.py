"""Train one model on cached clip features and score clips by aggregating the agent's sliding windows.

Flat on purpose (nanoGPT-style): ``fit`` is the whole loop. It runs on the CPU, one GPU, or many GPUs
under ``torchrun`` (DistributedDataParallel + DistributedSampler, gloo on CPU, nccl on CUDA).
"""

from __future__ import annotations

import copy
import logging
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.distributed as torch_dist
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from edge_agent.frontend import FrontendParams
from edge_agent.windowing import DEFAULT_HOP_SECONDS, hop_samples
from training.augment import (
    BackgroundNoise,
    BandLimit,
    Colouration,
    Gain,
    PitchShift,
    Reverb,
    SpecAugment,
    ToLogMel,
    mixup,
)
from training.data import ClipFeatures, RandomCropDataset, WindowDataset, check_crop_settings
from training.heads import label_loss, label_scores
from training.metrics import aggregate_windows, classification_metrics
from training.models import AudioClassifier, ModelConfig, build_model

logger = logging.getLogger(__name__)


def agent_hop_frames(params: FrontendParams) -> int:
    """The agent's default hop in STFT frames of ``params``: 16 at 16 kHz with a 256-sample STFT hop."""
    return hop_samples(DEFAULT_HOP_SECONDS, params.sample_rate, params.hop_length) // params.hop_length


AGENT_HOP_FRAMES = agent_hop_frames(FrontendParams())
REVERB_RT60_S = (0.2, 1.5)  # a small room to a street canyon
REVERB_WET = (0.05, 0.5)  # power of the tail's first frame relative to the direct sound
COLOURATION_DB = 6.0  # cheap MEMS mics and enclosures stay within about +- 6 dB over the band
SELECT_BY = {"accuracy": "accuracy", "balanced": "macro_recall"}  # --select-by -> classification_metrics key


@dataclass(frozen=True)
class TrainConfig:
    """Every knob of one training run; stored in each checkpoint's ``train_config``."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 3e-3
    weight_decay: float = 1e-3
    label_smoothing: float = 0.05
    val_fraction: float = 0.12  # of the TRAINING folds' recordings, never the test fold
    patience: int = 10  # epochs without a better validation accuracy before stopping
    seed: int = 0
    hop_frames: int = AGENT_HOP_FRAMES  # test-time scoring on the agent's own hop
    val_hop_frames: int = 60  # ~1 s apart: validation every epoch costs a quarter of the agent's hop
    # Random 1-s crops of each clip per epoch. 1 -> 4 -> 8 crops took the CNN's fold-1 accuracy from
    # 0.534 to 0.605 to 0.635 (training/results/README.md): these models were short of steps, not data.
    crops_per_clip: int = 8
    stretch: tuple[float, float] = (1.0, 1.0)  # time-stretch rate range of a crop (1, 1: off)
    pitch_semitones: float = 0.0  # pitch shift up to +- this many semitones
    pitch_p: float = 0.0  # share of training windows pitch-shifted
    mixup_alpha: float = 0.3
    noise_p: float = 0.5
    snr_db: tuple[float, float] = (0.0, 20.0)
    gain_db: float = 6.0
    bandlimit_p: float = 0.25  # low-pass a window at a random 3-7 kHz: cheap mics and 8 kHz codecs
    bandlimit_hz: tuple[float, float] = (3000.0, 7000.0)
    reverb_p: float = 0.0  # share of training windows given a reverberant tail (RT60 0.2-1.5 s)
    colour_p: float = 0.0  # share of training windows through a random smooth microphone response
    freq_mask: int = 8
    time_mask: int = 10
    # Exponential moving average of the weights (and BatchNorm statistics), per optimiser step; 0 is off.
    # Validation, checkpoint choice and the saved weights all use the average.
    ema_decay: float = 0.0
    # How validation picks the epoch to keep: clip accuracy, or balanced accuracy (mean recall over
    # the labels present). Balanced keeps a label with many validation clips (Debian music pieces
    # under --sources) from deciding alone.
    select_by: str = "accuracy"
    threads: int = 1  # one thread per process beats two on busy shared cores (measured)
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be at least 1")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        for name in ("noise_p", "bandlimit_p", "pitch_p", "reverb_p", "colour_p"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} is a probability in [0, 1], got {getattr(self, name)}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")
        if self.select_by not in SELECT_BY:
            raise ValueError(f"select_by must be one of {', '.join(SELECT_BY)}, got {self.select_by!r}")
        check_crop_settings(self.crops_per_clip, self.stretch)  # at parse time, before any decoding

    def to_dict(self) -> dict:
        """Plain dict for checkpoints and reports."""
        return asdict(self)


@dataclass(frozen=True)
class Dist:
    """Where this process sits in a torchrun job (rank 0 of 1 when run plainly)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Only the main process writes files and logs progress."""
        return self.rank == 0


NO_DIST = Dist()  # a plain single-process run


@dataclass
class FitResult:
    """The best-on-validation model and its learning curve."""

    model: AudioClassifier
    history: list[dict] = field(default_factory=list)
    best_epoch: int = 0


def setup_distributed(device: str) -> Dist:
    """Join the torchrun process group when launched by torchrun; a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    backend = "nccl" if device == "cuda" else "gloo"
    if not torch_dist.is_initialized():
        torch_dist.init_process_group(backend)
    logger.info("joined the %s process group as rank %s of %s", backend, torch_dist.get_rank(), world)
    return Dist(torch_dist.get_rank(), world, int(os.environ.get("LOCAL_RANK", "0")))


def resolve_device(requested: str, dist: Dist) -> torch.device:
    """``auto`` picks CUDA when present; ranks under torchrun get their own GPU."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for but no CUDA device is available")
        return torch.device("cuda", dist.local_rank)
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Fixed seeds and deterministic kernels, so a CPU run repeats bit for bit."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    torch.use_deterministic_algorithms(True, warn_only=True)


def train_dataset(
    features: ClipFeatures, noise: ClipFeatures | None, params: FrontendParams, cfg: TrainConfig
) -> Dataset:
    """Crop (+ stretch) -> pitch -> background noise -> gain -> reverb -> colouration -> band limit -> log
    -> SpecAugment."""
    data: Dataset = RandomCropDataset(features, params.n_frames, cfg.crops_per_clip, cfg.stretch)
    if cfg.pitch_p > 0 and cfg.pitch_semitones > 0:
        data = PitchShift(data, params, cfg.pitch_semitones, cfg.pitch_p)
    if noise is not None and cfg.noise_p > 0:
        data = BackgroundNoise(data, noise, cfg.snr_db, cfg.noise_p)
    if cfg.gain_db > 0:
        data = Gain(data, cfg.gain_db)
    if cfg.reverb_p > 0:
        data = Reverb(data, params, REVERB_RT60_S, REVERB_WET, cfg.reverb_p)
    if cfg.colour_p > 0:
        data = Colouration(data, params.n_mels, COLOURATION_DB, cfg.colour_p)
    if cfg.bandlimit_p > 0:
        data = BandLimit(data, params, cfg.bandlimit_hz, cfg.bandlimit_p)
    data = ToLogMel(data, params.log_offset)
    if cfg.freq_mask or cfg.time_mask:
        data = SpecAugment(data, cfg.freq_mask, cfg.time_mask)
    return data


def _head(model: nn.Module) -> str:
    """The head of a model, through the wrappers training puts around it (DDP, weight averaging)."""
    while not isinstance(model, AudioClassifier) and hasattr(model, "module"):
        model = model.module
    return model.config.head if isinstance(model, AudioClassifier) else "softmax"


def window_scores(
    model: nn.Module,
    features: ClipFeatures,
    params: FrontendParams,
    hop_frames: int,
    device: torch.device,
    batch_size: int = 512,
) -> tuple[np.ndarray, np.ndarray]:
    """Scores of every sliding window (the model head's softmax or sigmoid): (windows, classes) scores and
    (windows,) clip indices."""
    data = ToLogMel(WindowDataset(features, params.n_frames, hop_frames), params.log_offset)
    scores, clips = [], []
    head = _head(model)
    model.eval()
    with torch.no_grad():
        for logmel, clip in DataLoader(data, batch_size=batch_size):
            logits = model(logmel.to(device))  # (batch, classes)
            scores.append(label_scores(logits, head).cpu().numpy())
            clips.append(clip.numpy())
    return np.concatenate(scores), np.concatenate(clips)


def predict_clips(
    model: nn.Module, features: ClipFeatures, params: FrontendParams, hop_frames: int, device: torch.device
) -> np.ndarray:
    """Clip scores (clips, classes): the mean of the clip's window scores."""
    scores, clips = window_scores(model, features, params, hop_frames, device)
    return aggregate_windows(scores, clips, len(features.records), "mean")


def _train_epoch(
    model: nn.Module,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    cfg: TrainConfig,
    n_classes: int,
    device: torch.device,
    show: bool,
    averaged: AveragedModel | None = None,
) -> float:
    """One pass over the training loader; returns the mean loss. ``averaged`` follows every step."""
    model.train()
    total, batches, head = 0.0, 0, _head(model)
    for logmel, target in tqdm(loader, desc="batch", leave=False, disable=not show, mininterval=2.0):
        inputs, soft = mixup(logmel, target, n_classes, cfg.mixup_alpha)  # (batch, 1, mels, frames)
        logits = model(inputs.to(device))  # (batch, n_classes)
        loss = label_loss(logits, soft.to(device), head, cfg.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        if averaged is not None:
            averaged.update_parameters(getattr(model, "module", model))  # DDP wraps the model
        total, batches = total + loss.item(), batches + 1
    return total / max(batches, 1)


def _loader(
    data: Dataset, cfg: TrainConfig, dist: Dist, seed: int
) -> tuple[DataLoader, DistributedSampler | None]:
    """Shuffling loader; under torchrun each rank sees its own shard."""
    # drop_last keeps BatchNorm away from a batch of one; a tiny dataset still gets one full batch.
    batch = max(2, min(cfg.batch_size, len(data) // dist.world))  # type: ignore[arg-type]
    if dist.world > 1:
        sampler = DistributedSampler(data, num_replicas=dist.world, rank=dist.rank, shuffle=True, seed=seed)
        return DataLoader(data, batch_size=batch, sampler=sampler, drop_last=True), sampler
    generator = torch.Generator().manual_seed(seed)
    return DataLoader(data, batch_size=batch, shuffle=True, drop_last=True, generator=generator), None


def _sync_buffers(model: nn.Module, dist: Dist) -> None:
    """Give every rank rank 0's BatchNorm statistics, so all ranks validate alike and stop together."""
    if dist.world > 1:
        for buffer in model.buffers():
            torch_dist.broadcast(buffer, src=0)


def warmed_decay(decay: float, updates: int) -> float:
    """The decay of the ``updates``-th average step: min(decay, (1 + n) / (10 + n)).

    A fixed 0.999 keeps about 1/1000 of each step, so the average spends its first thousands of steps
    (three epochs here) near the random initial weights; the warm-up lets it follow the early, fast
    changes and reach ``decay`` after about 9,000 steps (as TensorFlow's ExponentialMovingAverage does
    with ``num_updates``).
    """
    return min(decay, (1.0 + updates) / (10.0 + updates))


def _warmed_ema(decay: float) -> Callable[[list[torch.Tensor], list[torch.Tensor], torch.Tensor], None]:
    """AveragedModel's ``multi_avg_fn``: average += (1 - warmed decay) * (weights - average)."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
        keep = warmed_decay(decay, int(updates))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, 1.0 - keep)
        else:  # integer buffers (BatchNorm's num_batches_tracked)
            for mine, theirs in zip(averaged, current, strict=True):
                mine.copy_(mine * keep + theirs * (1 - keep))

    return update


def weight_average(model: nn.Module, decay: float) -> AveragedModel | None:
    """An EMA copy of ``model`` (parameters and buffers) with a warm-up (``warmed_decay``), or None
    when ``decay`` is 0."""
    if decay <= 0:
        return None
    return AveragedModel(model, multi_avg_fn=_warmed_ema(decay), use_buffers=True)


def validation_score(metrics: dict, select_by: str) -> float:
    """The figure of ``classification_metrics`` that picks the epoch to keep: clip accuracy, or mean
    recall over the labels present."""
    return metrics[SELECT_BY[select_by]]


def fit(
    model_config: ModelConfig,
    train: ClipFeatures,
    val: ClipFeatures,
    noise: ClipFeatures | None,
    params: FrontendParams,
    cfg: TrainConfig,
    n_classes: int,
    dist: Dist = NO_DIST,
    desc: str = "train",
) -> FitResult:
    """Train with AdamW + one-cycle LR; keep the weights with the best validation score (``select_by``)."""
    seed_everything(cfg.seed + dist.rank)  # ranks augment differently; DDP syncs the initial weights
    torch.set_num_threads(cfg.threads)
    device = resolve_device(cfg.device, dist)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = build_model(model_config, n_mels=params.n_mels, n_classes=n_classes).to(device)
    torch.manual_seed(cfg.seed + dist.rank)
    wrapped: nn.Module = model
    if dist.world > 1:
        ids = [device.index] if device.type == "cuda" else None
        wrapped = nn.parallel.DistributedDataParallel(model, device_ids=ids)
    loader, sampler = _loader(train_dataset(train, noise, params, cfg), cfg, dist, cfg.seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.lr, total_steps=cfg.epochs * max(len(loader), 1)
    )
    averaged = weight_average(model, cfg.ema_decay)
    scored = model if averaged is None else averaged.module  # the weights validated and kept
    result, best_score, best_state, stale = FitResult(model), -1.0, None, 0
    show_batches = dist.main and sys.stderr.isatty()
    epochs = tqdm(range(1, cfg.epochs + 1), desc=desc, unit="epoch", disable=not dist.main, mininterval=10.0)
    for epoch in epochs:
        if sampler is not None:
            sampler.set_epoch(epoch)
        start = time.perf_counter()
        loss = _train_epoch(
            wrapped, loader, optimizer, scheduler, cfg, n_classes, device, show_batches, averaged
        )
        _sync_buffers(scored, dist)
        val_pred = predict_clips(scored, val, params, cfg.val_hop_frames, device).argmax(axis=1)
        metrics = classification_metrics(val.labels.numpy(), val_pred, n_classes)
        val_acc, score = metrics["accuracy"], validation_score(metrics, cfg.select_by)
        result.history.append(
            {
                "epoch": epoch,
                "train_loss": loss,
                "val_accuracy": val_acc,
                "val_balanced_accuracy": validation_score(metrics, "balanced"),
                "seconds": time.perf_counter() - start,
            }
        )
        epochs.set_postfix(loss=f"{loss:.3f}", val=f"{val_acc:.3f}")
        if score > best_score:
            best_score, stale, result.best_epoch = score, 0, epoch
            best_state = copy.deepcopy(scored.state_dict())
        else:
            stale += 1
            if stale >= cfg.patience:
                logger.info("%s: early stop at epoch %s (best %s)", desc, epoch, result.best_epoch)
                break
    model.load_state_dict(best_state)
    return result
