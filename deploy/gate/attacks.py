"""The gate's attacks: DeepFool and PGD on the waveform, the log-mel front-end inside the model.

PGD is training/attacks.py's per-clip-epsilon PGD, the one adversarial fine-tuning trains against, so
the gate measures robustness with the attack the model was hardened on (at 40 steps instead of 7).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import foolbox as fb
import numpy as np
import torch
from tqdm import tqdm

from deploy.gate.policy import ATTACKS, BUDGETS_DB, AttackConfig
from training.attacks import BOUNDS, PGD_KINDS, epsilons_for, per_clip_pgd
from training.checkpoint import Checkpoint
from training.frontend import TorchLogMel, WaveformClassifier

logger = logging.getLogger(__name__)


@dataclass
class AttackResult:
    """Per attacked clip: DeepFool's minimal SNR, and the clipped adversarials of every PGD run."""

    deepfool_snr_db: np.ndarray  # (clips,) -inf where DeepFool found no adversarial
    deepfool_adversarials: np.ndarray  # (clips, samples)
    pgd_adversarials: dict[str, np.ndarray]  # "linf_40db" -> (clips, samples)


def waveform_model(checkpoint: Checkpoint) -> WaveformClassifier:
    """Front-end + classifier, eval mode, parameters frozen (eagerpy 0.30 writes ``.grad`` into them)."""
    model = WaveformClassifier(TorchLogMel(checkpoint.frontend), checkpoint.build()).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


def predict(model: torch.nn.Module, windows: np.ndarray, batch: int = 64) -> np.ndarray:
    """(n, samples) -> (n, classes) logits as numpy."""
    with torch.no_grad():
        out = [model(torch.from_numpy(windows[i : i + batch])).numpy() for i in range(0, len(windows), batch)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def snr_db(clean: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """Per row, ``20*log10(||x|| / ||delta||)``; inf where nothing changed."""
    delta = np.linalg.norm((perturbed - clean).astype(np.float64), axis=-1)
    signal = np.linalg.norm(clean.astype(np.float64), axis=-1)
    with np.errstate(divide="ignore"):
        return 20 * np.log10(signal / delta)


def run_deepfool(
    fmodel: fb.PyTorchModel, windows: np.ndarray, labels: np.ndarray, config: AttackConfig
) -> tuple[np.ndarray, np.ndarray]:
    """L2 DeepFool over every class: (clipped adversarials (n, samples), minimal SNR dB (n,))."""
    attack = fb.attacks.L2DeepFoolAttack(
        steps=config.deepfool_steps, candidates=None, overshoot=config.deepfool_overshoot, loss="logits"
    )
    adversarials, snrs = [], []
    for i in tqdm(range(0, len(windows), config.batch), desc="DeepFool", unit="batch"):
        x = torch.from_numpy(windows[i : i + config.batch])  # (batch, samples)
        y = torch.from_numpy(labels[i : i + config.batch])  # (batch,)
        _, clipped, success = attack(fmodel, x, y, epsilons=None)
        clipped_np = clipped.numpy()
        snr = snr_db(x.numpy(), clipped_np)
        snrs.append(np.where(success.numpy(), snr, -np.inf))
        adversarials.append(clipped_np)
    return np.concatenate(adversarials), np.concatenate(snrs)


def run_pgd(
    fmodel: fb.PyTorchModel, windows: np.ndarray, labels: np.ndarray, config: AttackConfig
) -> dict[str, np.ndarray]:
    """LinfPGD and L2PGD at every SNR budget; returns the clipped adversarials per run."""
    attacks = {
        name: PGD_KINDS[name](steps=config.pgd_steps, rel_stepsize=config.pgd_rel_stepsize, random_start=True)
        for name in ATTACKS
    }
    out = {f"{a}_{b}db": np.empty_like(windows) for a in ATTACKS for b in BUDGETS_DB}
    for i in tqdm(range(0, len(windows), config.batch), desc="PGD", unit="batch"):
        x = torch.from_numpy(windows[i : i + config.batch])  # (batch, samples)
        y = torch.from_numpy(labels[i : i + config.batch])  # (batch,)
        for name, attack in attacks.items():
            for budget in BUDGETS_DB:
                epsilon = torch.from_numpy(epsilons_for(x.numpy(), budget, name))  # (batch,)
                out[f"{name}_{budget}db"][i : i + len(x)] = per_clip_pgd(
                    attack, fmodel, x, y, epsilon
                ).numpy()
    return out


def attack_all(
    checkpoint: Checkpoint, windows: np.ndarray, labels: np.ndarray, config: AttackConfig
) -> AttackResult:
    """Run DeepFool and PGD on correctly classified windows (n, samples) with their labels (n,)."""
    if windows.size and (windows.min() < BOUNDS[0] or windows.max() > BOUNDS[1]):
        raise ValueError("attack inputs must lie within the bounds (-1, 1)")
    if not len(windows):
        runs = {f"{a}_{b}db": windows for a in ATTACKS for b in BUDGETS_DB}
        return AttackResult(np.zeros(0), windows, runs)
    torch.manual_seed(config.seed)
    model = waveform_model(checkpoint)
    fmodel = fb.PyTorchModel(model, bounds=BOUNDS)
    labels = labels.astype(np.int64)
    deepfool_adv, deepfool_snr = run_deepfool(fmodel, windows, labels, config)
    return AttackResult(deepfool_snr, deepfool_adv, run_pgd(fmodel, windows, labels, config))
