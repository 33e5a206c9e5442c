"""Per-clip-epsilon PGD on the waveform: what adversarial fine-tuning trains on and the gate attacks with.

Budgets are SNRs, turned into a per-clip epsilon from the clip's own norm, so a quiet clip and a loud
one get the same relative perturbation. foolbox's PGD takes one scalar epsilon per call; running it
clip by clip costs seconds a clip, so ``PerClipLinfPGD``/``PerClipL2PGD`` let foolbox's own attack loop
(``run``: random start, gradient steps, projection, bound clipping) take a (batch,) epsilon, and the
result is clipped to each clip's epsilon as foolbox's ``__call__`` does. A test proves they match the
stock attacks clip by clip.
"""

from __future__ import annotations

import eagerpy as ep
import foolbox as fb
import numpy as np
import torch
from foolbox.attacks.gradient_descent_base import GDOptimizer, clip_lp_norms
from foolbox.devutils import atleast_kd

BOUNDS = (-1.0, 1.0)


def epsilon_for(clean: np.ndarray, budget_db: float, attack: str) -> float:
    """Per-clip epsilon whose worst-case perturbation has exactly ``budget_db`` SNR.

    L2: ||delta||_2 = ||x||_2 / 10^(snr/20). Linf: a full-sign perturbation of size eps has L2 norm
    eps * sqrt(n), so eps = rms(x) / 10^(snr/20).
    """
    norm = float(np.linalg.norm(clean.astype(np.float64)))
    if attack == "linf":
        norm /= np.sqrt(clean.size)
    return norm / 10 ** (budget_db / 20)


def epsilons_for(clean: np.ndarray, budget_db: float, attack: str) -> np.ndarray:
    """``epsilon_for`` of every row of (n, samples): (n,) float32."""
    return np.array([epsilon_for(row, budget_db, attack) for row in clean], dtype=np.float32)


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


def per_clip_pgd(
    attack: PerClipLinfPGD | PerClipL2PGD,
    fmodel: fb.PyTorchModel,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: torch.Tensor,
) -> torch.Tensor:
    """Run PGD on (batch, samples) with (batch,) epsilons; the adversarials clipped to each epsilon."""
    x_ep, eps_ep = ep.astensor(x), ep.astensor(epsilon.to(x.dtype))
    raw = ep.astensor(attack.run(fmodel, x, fb.criteria.Misclassification(y), epsilon=eps_ep))
    clipped = attack.project(raw, x_ep, eps_ep)  # foolbox's clip_perturbation, per clip
    return clipped.clip(*BOUNDS).raw


PGD_KINDS: dict[str, type[PerClipLinfPGD] | type[PerClipL2PGD]] = {"linf": PerClipLinfPGD, "l2": PerClipL2PGD}
