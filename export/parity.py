"""Export-time checks: PyTorch vs FP32 ONNX logits, FP32 vs INT8 agreement and accuracy, window latency."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from edge_agent.onnx_model import OnnxModel, label_scores
from training.metrics import aggregate_windows


@dataclass(frozen=True)
class ParityPolicy:
    """Pass marks for an export; the issue fixes the defaults."""

    min_agreement: float = 0.98  # FP32 vs INT8 clip-level top-1 agreement
    max_accuracy_drop: float = 0.01  # FP32 accuracy minus INT8 accuracy, as a fraction
    max_logit_diff: float = 1e-3  # PyTorch vs FP32 ONNX, max abs over the checked windows

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_agreement <= 1.0:
            raise ValueError(f"min_agreement must be in 0..1, got {self.min_agreement}")
        if not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise ValueError(f"max_accuracy_drop must be in 0..1, got {self.max_accuracy_drop}")
        if self.max_logit_diff <= 0:
            raise ValueError(f"max_logit_diff must be positive, got {self.max_logit_diff}")


def load_model(path: Path, threads: int = 1) -> OnnxModel:
    """The file as the agent loads it (same session settings, so the speed measured is the speed shipped);
    it has no card yet, so the card check is export's to skip."""
    return OnnxModel.load(path, threads, verify_card=False)


def onnx_logits(model: OnnxModel, logmel: np.ndarray, batch: int = 64) -> np.ndarray:
    """(windows, 1, n_mels, frames) -> (windows, classes) logits, in batches."""
    parts = [model.logits(logmel[i : i + batch]) for i in range(0, len(logmel), batch)]
    return np.concatenate(parts)


def torch_logits(model: nn.Module, logmel: np.ndarray, batch: int = 64) -> np.ndarray:
    """The reference: the eval-mode PyTorch model on the same windows."""
    with torch.no_grad():
        parts = [model(torch.from_numpy(logmel[i : i + batch])).numpy() for i in range(0, len(logmel), batch)]
    return np.concatenate(parts)  # (windows, classes)


def clip_predictions(logits: np.ndarray, clip_index: np.ndarray, n_clips: int, scoring: str) -> np.ndarray:
    """Top-1 class per clip from the mean of its windows' scores, scored as the model says (``scoring``:
    its ``earshot.scoring``), as training aggregates them."""
    return aggregate_windows(label_scores(logits, scoring), clip_index, n_clips, how="mean").argmax(axis=1)


def parity_failures(figures: dict, policy: ParityPolicy, heldout_name: str | None = None) -> list[str]:
    """Human-readable reasons an export fails its parity policy; empty when it passes. Each source
    checked (``source_checks``) is held to the same marks, its name leading its reasons; the main
    held-out check's reasons are led by ``heldout_name`` when given."""
    problems = []
    diff = figures.get("max_abs_logit_diff")
    if diff is not None and not diff <= policy.max_logit_diff:
        problems.append(f"PyTorch vs ONNX max |logit diff| {diff:.2e} > {policy.max_logit_diff:.0e}")
    lead = f"{heldout_name}: " if heldout_name else ""
    problems += [lead + reason for reason in _precision_failures(figures, policy)]
    for name, checked in (figures.get("source_checks") or {}).items():
        problems += [f"{name}: {reason}" for reason in _precision_failures(checked, policy)]
    return problems


def _precision_failures(figures: dict, policy: ParityPolicy) -> list[str]:
    """FP32 vs INT8 on one set of clips: top-1 agreement and accuracy drop."""
    problems = []
    agreement = figures.get("int8_agreement")
    if agreement is not None and agreement < policy.min_agreement:
        problems.append(f"INT8 top-1 agreement {agreement:.2%} < {policy.min_agreement:.2%}")
    fp32, int8 = figures.get("fp32_accuracy"), figures.get("int8_accuracy")
    allowed_drop = max(policy.max_accuracy_drop, one_clip(figures))
    if fp32 is not None and int8 is not None and fp32 - int8 > allowed_drop + 1e-12:
        problems.append(
            f"INT8 accuracy drop {100 * (fp32 - int8):.2f} pp > {100 * allowed_drop:.2f} pp "
            f"({fp32:.4f} -> {int8:.4f})"
        )
    return problems


def one_clip(figures: dict) -> float:
    """The accuracy one clip is worth on a source check of ``clips`` clips, 0 where the figures give no count.

    A source check of 80 clips (an ESC-10 fold) cannot resolve a 1 pp drop: one clip is 1.25 pp, so
    one borderline clip flipping would fail an export that loses nothing measurable. Such a check fails
    only on a drop of more than one clip; the held-out check, hundreds of clips, keeps the bound as given.
    """
    clips = figures.get("clips")
    return 1.0 / clips if clips else 0.0


def latency_ms(paths: dict[str, Path], windows: np.ndarray, rounds: int = 7, per_round: int = 50) -> dict:
    """Median per-window latency (batch 1, one intra-op thread) of each model, interleaved round by round
    so that load from other processes on this shared CPU hits every model alike."""
    models = {name: load_model(path, threads=1) for name, path in paths.items()}
    samples: dict[str, list[float]] = {name: [] for name in paths}
    feeds = [windows[i % len(windows)][None] for i in range(per_round)]  # (1, 1, n_mels, frames) each
    for model in models.values():  # warm-up: first runs allocate and pick kernels
        for feed in feeds[:10]:
            model.logits(feed)
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            for feed in feeds:
                model.logits(feed)
            samples[name].append((time.perf_counter() - start) / per_round * 1000.0)
    return {name: float(np.median(values)) for name, values in samples.items()}
