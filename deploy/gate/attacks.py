"""foolbox attacks on the waveform, with the log-mel front-end inside the differentiable model.

Budgets are SNRs, turned into a per-clip epsilon from the clip's own norm, so a quiet clip and a loud
one get the same relative perturbation. foolbox's PGD takes one scalar epsilon per call; running it
clip by clip costs seconds a clip, so ``PerClipLinfPGD``/``PerClipL2PGD`` let foolbox's own attack loop
(``run``: random start, gradient steps, projection, bound clipping) take a (batch,) epsilon, and the
result is clipped to each clip's epsilon as foolbox's ``__call__`` does. A test proves they match the
stock attacks clip by clip.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import eagerpy as ep
import foolbox as fb
import numpy as np
import torch
from foolbox.attacks.gradient_descent_base import GDOptimizer, clip_lp_norms
from foolbox.devutils import atleast_kd
from tqdm import tqdm

from deploy.gate.policy import ATTACKS, BUDGETS_DB, AttackConfig
from training.checkpoint import Checkpoint
from training.frontend import TorchLogMel, WaveformClassifier

logger = logging.getLogger(__name__)

BOUNDS = (-1.0, 1.0)


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
        out = [model(torch.from_numpy(windows[i: i + batch])).numpy() for i in range(0, len(windows), batch)]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def snr_db(clean: np.ndarray, perturbed: np.ndarray) -> np.ndarray:
    """Per row, ``20*log10(||x|| / ||delta||)``; inf where nothing changed."""
    delta = np.linalg.norm((perturbed - clean).astype(np.float64), axis=-1)
    signal = np.linalg.norm(clean.astype(np.float64), axis=-1)
    with np.errstate(divide="ignore"):
        return 20 * np.log10(signal / delta)


def epsilon_for(clean: np.ndarray, budget_db: float, attack: str) -> float:
    """Per-clip epsilon whose worst-case perturbation has exactly ``budget_db`` SNR.

    L2: ||delta||_2 = ||x||_2 / 10^(snr/20). Linf: a full-sign perturbation of size eps has L2 norm
    eps * sqrt(n), so eps = rms(x) / 10^(snr/20).
    """
    norm = float(np.linalg.norm(clean.astype(np.float64)))
    if attack == "linf":
        norm /= np.sqrt(clean.size)
    return norm / 10 ** (budget_db / 20)


def run_deepfool(fmodel: fb.PyTorchModel, windows: np.ndarray, labels: np.ndarray,
                 config: AttackConfig) -> tuple[np.ndarray, np.ndarray]:
    """L2 DeepFool over every class: (clipped adversarials (n, samples), minimal SNR dB (n,))."""
    attack = fb.attacks.L2DeepFoolAttack(steps=config.deepfool_steps, candidates=None,
                                         overshoot=config.deepfool_overshoot, loss="logits")
    adversarials, snrs = [], []
    for i in tqdm(range(0, len(windows), config.batch), desc="DeepFool", unit="batch"):
        x = torch.from_numpy(windows[i: i + config.batch])  # (batch, samples)
        y = torch.from_numpy(labels[i: i + config.batch])  # (batch,)
        _, clipped, success = attack(fmodel, x, y, epsilons=None)
        clipped_np = clipped.numpy()
        snr = snr_db(x.numpy(), clipped_np)
        snrs.append(np.where(success.numpy(), snr, -np.inf))
        adversarials.append(clipped_np)
    return np.concatenate(adversarials), np.concatenate(snrs)


class _PerClipStep:
    """Mixin: the step size follows each clip's epsilon, broadcast over its samples."""

    def get_optimizer(self, x: ep.Tensor, stepsize: ep.Tensor) -> GDOptimizer:
        return GDOptimizer(x, atleast_kd(stepsize, x.ndim))


class PerClipLinfPGD(_PerClipStep, fb.attacks.LinfPGD):
    """foolbox LinfPGD with a (batch,) epsilon."""

    def get_random_start(self, x0: ep.Tensor, epsilon: ep.Tensor) -> ep.Tensor:
        return x0 + ep.uniform(x0, x0.shape, -1.0, 1.0) * atleast_kd(epsilon, x0.ndim)

    def project(self, x: ep.Tensor, x0: ep.Tensor, epsilon: ep.Tensor) -> ep.Tensor:
        bound = atleast_kd(epsilon, x.ndim)
        return x0 + ep.minimum(ep.maximum(x - x0, -bound), bound)


class PerClipL2PGD(_PerClipStep, fb.attacks.L2PGD):
    """foolbox L2PGD with a (batch,) epsilon."""

    def get_random_start(self, x0: ep.Tensor, epsilon: ep.Tensor) -> ep.Tensor:
        return super().get_random_start(x0, atleast_kd(epsilon, x0.ndim))

    def project(self, x: ep.Tensor, x0: ep.Tensor, epsilon: ep.Tensor) -> ep.Tensor:
        return x0 + clip_lp_norms(x - x0, norm=epsilon, p=2)


def per_clip_pgd(attack: PerClipLinfPGD | PerClipL2PGD, fmodel: fb.PyTorchModel, x: torch.Tensor,
                 y: torch.Tensor, epsilon: torch.Tensor) -> torch.Tensor:
    """Run PGD on (batch, samples) with (batch,) epsilons; the adversarials clipped to each epsilon."""
    x_ep, eps_ep = ep.astensor(x), ep.astensor(epsilon.to(x.dtype))
    raw = ep.astensor(attack.run(fmodel, x, fb.criteria.Misclassification(y), epsilon=eps_ep))
    clipped = attack.project(raw, x_ep, eps_ep)  # foolbox's clip_perturbation, per clip
    return clipped.clip(*BOUNDS).raw


def epsilons_for(clean: np.ndarray, budget_db: float, attack: str) -> np.ndarray:
    """``epsilon_for`` of every row of (n, samples): (n,) float32."""
    return np.array([epsilon_for(row, budget_db, attack) for row in clean], dtype=np.float32)


def run_pgd(fmodel: fb.PyTorchModel, windows: np.ndarray, labels: np.ndarray,
            config: AttackConfig) -> dict[str, np.ndarray]:
    """LinfPGD and L2PGD at every SNR budget; returns the clipped adversarials per run."""
    kinds = {"linf": PerClipLinfPGD, "l2": PerClipL2PGD}
    attacks = {name: kinds[name](steps=config.pgd_steps, rel_stepsize=config.pgd_rel_stepsize,
                                 random_start=True) for name in ATTACKS}
    out = {f"{a}_{b}db": np.empty_like(windows) for a in ATTACKS for b in BUDGETS_DB}
    for i in tqdm(range(0, len(windows), config.batch), desc="PGD", unit="batch"):
        x = torch.from_numpy(windows[i: i + config.batch])  # (batch, samples)
        y = torch.from_numpy(labels[i: i + config.batch])  # (batch,)
        for name, attack in attacks.items():
            for budget in BUDGETS_DB:
                epsilon = torch.from_numpy(epsilons_for(x.numpy(), budget, name))  # (batch,)
                out[f"{name}_{budget}db"][i: i + len(x)] = per_clip_pgd(attack, fmodel, x, y, epsilon).numpy()
    return out


def attack_all(checkpoint: Checkpoint, windows: np.ndarray, labels: np.ndarray,
               config: AttackConfig) -> AttackResult:
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
