"""Measure every gate figure: clean and INT8 accuracy, adversarial robustness, and natural corruptions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deploy.gate.attacks import AttackResult, attack_all, predict, waveform_model
from deploy.gate.clips import HeldOut, held_out_records, load_held_out, load_noise_bank
from deploy.gate.corruptions import corruption_suite
from deploy.gate.policy import AttackConfig
from deploy.gate.target import Target
from training.metrics import recording_bootstrap_interval

logger = logging.getLogger(__name__)

CLEAN_INTERVAL_LEVEL = 0.95  # of the clean-accuracy interval over recordings

Classifier = Callable[[np.ndarray], np.ndarray]  # (n, samples) -> (n, classes) logits


@dataclass(frozen=True)
class GateConfig:
    """Where the data is and how much of it to use; fixed seeds so two runs agree."""

    data_root: Path
    noise_root: Path
    fold: int | None = None
    max_clips: int | None = None
    seed: int = 0
    attack: AttackConfig = field(default_factory=AttackConfig)


@dataclass
class Measurement:
    """The figures, plus the per-clip material the report plots."""

    figures: dict[str, float | None]
    fold: int | None  # None: the checkpoint's validation split
    held_out: str  # "fold 10" or "validation split (0.12) of folds 1,2,3,10"
    clips: int
    deepfool_snr_db: list[float]
    corruption_accuracy: dict[str, float]  # "clean" and each corruption
    judged_by: str  # which model the corruption figures come from: "ONNX" or "PyTorch"
    example: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    # CLEAN_INTERVAL_LEVEL interval of clean accuracy when whole recordings are resampled, and how many
    recordings: int = 0
    clean_interval: tuple[float, float] = (0.0, 0.0)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy; 0 for an empty set."""
    return float(np.mean(np.argmax(logits, axis=1) == labels)) if len(labels) else 0.0


def _adversarial_figures(
    result: AttackResult, labels: np.ndarray, torch_model: Classifier, onnx_model: Classifier | None
) -> dict[str, float | None]:
    # A clip DeepFool could not flip has SNR -inf (it needs more than any perturbation found), so it
    # pulls the median down; a median of -inf means most clips resisted and is reported as not measured.
    median = float(np.median(result.deepfool_snr_db)) if len(result.deepfool_snr_db) else None
    figures: dict[str, float | None] = {
        "deepfool_median_snr_db": median if median is not None and np.isfinite(median) else None
    }
    for run, adversarials in result.pgd_adversarials.items():
        attacked = len(labels) > 0
        figures[f"robust_accuracy_{run}"] = accuracy(torch_model(adversarials), labels) if attacked else None
        figures[f"int8_robust_accuracy_{run}"] = (
            accuracy(onnx_model(adversarials), labels) if onnx_model and attacked else None
        )
    return figures


def _corruption_accuracy(
    held: HeldOut, model: Classifier, noise_bank: list[np.ndarray], sample_rate: int, seed: int
) -> dict[str, float]:
    suite = corruption_suite(noise_bank, sample_rate)
    out = {}
    for index, (name, corrupt) in enumerate(suite.items()):
        rng = np.random.default_rng([seed, index])
        windows = np.stack([corrupt(w, rng) for w in held.windows]).astype(np.float32)
        out[name] = accuracy(model(windows), held.labels)
    return out


def _example(result: AttackResult, clean: np.ndarray, labels: np.ndarray, torch_model: Classifier) -> dict:
    """The clip with the median DeepFool SNR: a typical, not a cherry-picked, adversarial."""
    finite = np.flatnonzero(np.isfinite(result.deepfool_snr_db))
    if not len(finite):
        return {}
    pick = finite[np.argsort(result.deepfool_snr_db[finite])[len(finite) // 2]]
    adversarial = result.deepfool_adversarials[pick]
    return {
        "clean": clean[pick],
        "adversarial": adversarial,
        "label": int(labels[pick]),
        "adversarial_label": int(np.argmax(torch_model(adversarial[None]), axis=1)[0]),
        "snr_db": float(result.deepfool_snr_db[pick]),
    }


def measure(target: Target, config: GateConfig) -> Measurement:
    """Run the whole gate on the held-out fold and return every figure."""
    checkpoint = target.checkpoint
    fold = config.fold if config.fold is not None else checkpoint.fold
    records, source = held_out_records(config.data_root, checkpoint, fold)
    noise_bank = load_noise_bank(config.noise_root, checkpoint.frontend, config.seed)
    held = load_held_out(
        records, source, checkpoint.frontend, checkpoint.labels, config.max_clips, config.seed
    )
    if not held.windows:
        raise ValueError(f"{source} holds no clips of the model's classes")
    module = waveform_model(checkpoint)
    torch_model: Classifier = lambda w: predict(module, w)  # noqa: E731
    int8_model: Classifier | None = target.int8.logits if target.int8 else None
    clean = held.audio()  # (clips, samples)
    clean_logits = torch_model(clean)
    figures: dict[str, float | None] = {"clean_accuracy": accuracy(clean_logits, held.labels)}
    figures["int8_clean_accuracy"] = accuracy(int8_model(clean), held.labels) if int8_model else None
    figures["int8_drop"] = figures["clean_accuracy"] - figures["int8_clean_accuracy"] if int8_model else None
    correct = np.argmax(clean_logits, axis=1) == held.labels
    interval = recording_bootstrap_interval(
        correct, held.recordings, level=CLEAN_INTERVAL_LEVEL, seed=config.seed
    )
    figures["attacked_clips"] = float(correct.sum())
    result = attack_all(checkpoint, clean[correct], held.labels[correct], config.attack)
    figures.update(_adversarial_figures(result, held.labels[correct], torch_model, int8_model))
    # Corruptions are judged on the model that ships: the ONNX file given, else the checkpoint.
    judge: Classifier = target.onnx.logits if target.onnx else torch_model
    base = accuracy(judge(clean), held.labels)
    rate = checkpoint.frontend.sample_rate
    corrupted = {"clean": base, **_corruption_accuracy(held, judge, noise_bank, rate, config.seed)}
    figures.update({f"drop_{name}": base - acc for name, acc in corrupted.items() if name != "clean"})
    return Measurement(
        figures,
        fold,
        source,
        len(held.windows),
        result.deepfool_snr_db.tolist(),
        corrupted,
        "ONNX" if target.onnx else "PyTorch",
        _example(result, clean[correct], held.labels[correct], torch_model),
        _notes(target, fold, attacked=bool(correct.any())),
        len(set(held.recordings)),
        interval,
    )


def _notes(target: Target, fold: int | None, attacked: bool) -> list[str]:
    """What a reader of the report must know to read the figures right."""
    notes = []
    if target.onnx is None:
        notes.append("A checkpoint was judged: no INT8 transfer figures, no model card to write.")
    elif target.int8 is None:
        notes.append(
            "No INT8 model (the ONNX file is FP32 and its card names no INT8 twin): "
            "INT8 figures not measured."
        )
    elif target.int8 is not target.onnx:
        notes.append(
            f"The shipped ONNX file is FP32; INT8 figures come from its twin {target.int8_path.name}."
        )
    if fold is None:
        notes.append(
            "The model trained on every fold: it is judged on its validation split, recordings it "
            "never trained on but from the same folds (and so the same recording conditions)."
        )
    elif target.checkpoint.fold != fold:
        notes.append(
            f"Fold {fold} is not the checkpoint's held-out fold ({target.checkpoint.fold}): "
            "if the model trained on it, every figure here is optimistic."
        )
    if not attacked:
        notes.append("No clip was classified correctly, so nothing was attacked.")
    return notes
