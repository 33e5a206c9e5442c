"""Adversarial fine-tuning: PGD on the waveform at an SNR budget, starting from a trained checkpoint.

Each step attacks the batch with the PGD the release gate attacks with too (training/attacks.py: per-clip
epsilon from the clip's norm, bounds (-1, 1)), with the model in eval mode and frozen, then trains on
a mix of clean and adversarial windows so clean accuracy is not simply traded away (Madry et al. 2018
train on adversarials only; the mix is the usual cheaper compromise). Data: the checkpoint's training
folds, one random 1-s crop per clip per epoch; the held-out fold stays untouched for the gate.

    earshot train --adversarial pgd --adv-snr 40 --init CKPT --data-root DIR
    python -m training.adversarial --adv-snr 40 --init CKPT --data-root DIR
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import foolbox as fb
import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from edge_agent.frontend import FrontendParams
from edge_agent.model_card import file_sha256
from training.attacks import BOUNDS, PGD_KINDS, PerClipL2PGD, PerClipLinfPGD, epsilons_for, per_clip_pgd
from training.checkpoint import Checkpoint, load_checkpoint
from training.data import folds_present, load_features, load_waveform, read_urbansound8k
from training.frontend import TorchLogMel, WaveformClassifier
from training.metrics import classification_metrics
from training.train import AGENT_HOP_FRAMES, predict_clips

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdversarialConfig:
    """Every knob of one fine-tuning run; stored in the new checkpoint's ``train_config``."""

    attack: str = "linf"  # PGD norm: "linf" or "l2"
    snr_db: float = 40.0  # per-clip budget, as the gate measures it
    pgd_steps: int = 7  # training-time PGD is short; the gate attacks with 40 steps
    pgd_rel_stepsize: float = 0.3  # 7 steps x 0.3 can walk 2x the budget
    adv_weight: float = 0.5  # loss = (1 - w) * clean + w * adversarial
    epochs: int = 3
    lr: float = 3e-4  # fine-tuning: a tenth of training's learning rate
    batch_size: int = 32
    max_clips: int | None = None  # training clips used (class-balanced order); None: all
    hop_frames: int = AGENT_HOP_FRAMES  # the agent's hop, for the clip-level held-out metrics
    seed: int = 0

    def __post_init__(self) -> None:
        if self.attack not in PGD_KINDS:
            raise ValueError(f"--attack must be one of {', '.join(PGD_KINDS)}, got {self.attack!r}")
        if not 0 < self.snr_db < 120:
            raise ValueError(f"--adv-snr must be in (0, 120) dB, got {self.snr_db}")
        if not 0 <= self.adv_weight <= 1:
            raise ValueError(f"--adv-weight must be in [0, 1], got {self.adv_weight}")
        if min(self.pgd_steps, self.epochs, self.batch_size) < 1 or self.lr <= 0:
            raise ValueError("--pgd-steps, --epochs and --batch-size must be >= 1 and --lr > 0")


@dataclass
class ClipBank:
    """Decoded training clips kept as int16 (half the memory of float32): 8,732 clips fit in ~1 GB."""

    clips: list[np.ndarray]  # each (samples,) int16
    labels: np.ndarray  # (clips,) int64

    def crops(self, indices: np.ndarray, length: int, rng: np.random.Generator) -> torch.Tensor:
        """One random window per clip: (len(indices), length) float32 in [-1, 1]."""
        out = np.empty((len(indices), length), np.float32)
        for row, i in enumerate(indices):
            clip = self.clips[i]
            start = int(rng.integers(0, len(clip) - length + 1))
            out[row] = clip[start : start + length] / 32767.0
        return torch.from_numpy(out)


def load_bank(data_root: Path, checkpoint: Checkpoint, max_clips: int | None, seed: int) -> ClipBank:
    """Decode the training folds (every fold but the checkpoint's held-out one)."""
    records = [r for r in read_urbansound8k(data_root) if r.fold != checkpoint.fold]
    records = [records[i] for i in np.random.default_rng(seed).permutation(len(records))][:max_clips]
    clips = []
    for record in tqdm(records, desc="decode training folds", unit="clip", mininterval=2.0):
        wave = np.clip(load_waveform(record.path, checkpoint.frontend).numpy(), -1, 1)  # (samples,)
        clips.append(np.round(wave * 32767).astype(np.int16))
    return ClipBank(clips, np.array([r.label for r in records], dtype=np.int64))


def adversarial_batch(
    model: nn.Module,
    fmodel: fb.PyTorchModel,
    attack: PerClipLinfPGD | PerClipL2PGD,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: AdversarialConfig,
) -> torch.Tensor:
    """PGD adversarials of (batch, samples) against the current weights, eval mode, parameters frozen."""
    model.eval()
    model.requires_grad_(False)
    epsilon = torch.from_numpy(epsilons_for(x.numpy(), cfg.snr_db, cfg.attack))  # (batch,)
    adversarial = per_clip_pgd(attack, fmodel, x, y, epsilon)  # (batch, samples)
    model.requires_grad_(True)
    model.train()
    return adversarial


def fine_tune(checkpoint: Checkpoint, bank: ClipBank, cfg: AdversarialConfig) -> tuple[nn.Module, list[dict]]:
    """Adversarially fine-tune; returns the classifier (eval mode) and per-epoch loss/accuracy history."""
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    model = WaveformClassifier(TorchLogMel(checkpoint.frontend), checkpoint.build()).eval()
    fmodel = fb.PyTorchModel(model, bounds=BOUNDS)  # built in eval mode, as foolbox asks
    attack = PGD_KINDS[cfg.attack](steps=cfg.pgd_steps, rel_stepsize=cfg.pgd_rel_stepsize, random_start=True)
    optimiser = torch.optim.AdamW(model.classifier.parameters(), lr=cfg.lr)
    length, history = checkpoint.frontend.window_samples, []
    for epoch in range(cfg.epochs):
        order = rng.permutation(len(bank.labels))
        totals = np.zeros(3)  # loss sum, adversarial hits, windows
        bar = tqdm(range(0, len(order), cfg.batch_size), desc=f"adversarial epoch {epoch + 1}", unit="batch")
        for start in bar:
            index = order[start : start + cfg.batch_size]
            x, y = bank.crops(index, length, rng), torch.from_numpy(bank.labels[index])  # (batch, samples)
            # --adv-weight 0 is the control run: the same fine-tuning without attacks.
            x_adv = adversarial_batch(model, fmodel, attack, x, y, cfg) if cfg.adv_weight > 0 else x
            logits = model(torch.cat([x, x_adv]))  # (2 * batch, classes)
            clean_loss = nn.functional.cross_entropy(logits[: len(x)], y)
            adv_loss = nn.functional.cross_entropy(logits[len(x) :], y)
            loss = (1 - cfg.adv_weight) * clean_loss + cfg.adv_weight * adv_loss
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            totals += [loss.item() * len(x), (logits[len(x) :].argmax(1) == y).sum().item(), len(x)]
            bar.set_postfix(loss=f"{totals[0] / totals[2]:.3f}", adv_acc=f"{totals[1] / totals[2]:.3f}")
        # Plain floats: checkpoints load with weights_only=True, which refuses numpy scalars.
        history.append(
            {
                "epoch": epoch + 1,
                "loss": float(totals[0] / totals[2]),
                "train_adv_accuracy": float(totals[1] / totals[2]),
            }
        )
        logger.info("adversarial epoch %s: %s", epoch + 1, history[-1])
    return model.classifier.eval(), history


def held_out_metrics(
    classifier: nn.Module, data_root: Path, fold: int, params: FrontendParams, hop_frames: int, n_classes: int
) -> dict:
    """Clip-level accuracy / macro F1 / macro recall on the held-out fold, as training reports them."""
    records = [r for r in read_urbansound8k(data_root) if r.fold == fold]
    features = load_features(records, params, desc=f"decode fold {fold}")
    predicted = predict_clips(classifier, features, params, hop_frames, torch.device("cpu")).argmax(axis=1)
    metrics = classification_metrics(features.labels.numpy(), predicted, n_classes)
    return {k: float(metrics[k]) for k in ("accuracy", "macro_f1", "macro_recall")}


def parse_args(argv: list[str]) -> tuple[argparse.Namespace, AdversarialConfig]:
    """The command line and the run's config."""
    p = argparse.ArgumentParser(prog="earshot train --adversarial pgd", description=__doc__.split("\n\n")[0])
    p.add_argument("--adversarial", choices=("pgd",), default="pgd", help="adversarial training method")
    p.add_argument("--init", required=True, type=Path, help="checkpoint to start from")
    p.add_argument("--data-root", required=True, type=Path, help="UrbanSound8K dir (metadata/ + audio/)")
    p.add_argument("--out", type=Path, help="output checkpoint (default: INIT with -adv<SNR> before .pt)")
    p.add_argument("--attack", default="linf", help="PGD norm: linf or l2")
    p.add_argument("--adv-snr", type=float, default=40.0, help="budget in dB SNR per clip")
    p.add_argument("--adv-weight", type=float, default=0.5, help="weight of the adversarial loss")
    p.add_argument("--pgd-steps", type=int, default=7)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-clips", type=int, help="use at most N training clips")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    cfg = AdversarialConfig(
        attack=args.attack,
        snr_db=args.adv_snr,
        pgd_steps=args.pgd_steps,
        adv_weight=args.adv_weight,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        max_clips=args.max_clips,
        seed=args.seed,
    )
    return args, cfg


def run(args: argparse.Namespace, cfg: AdversarialConfig) -> Path:
    """Load, fine-tune, measure on the held-out fold, save; returns the new checkpoint's path."""
    init = load_checkpoint(args.init)
    if init.fold is None:
        raise ValueError(f"{args.init} was trained on every fold: no held-out fold to fine-tune apart from")
    if init.fold not in folds_present(read_urbansound8k(args.data_root)):
        raise ValueError(f"{args.init} holds out fold {init.fold}, which is not in {args.data_root}")
    out = args.out or args.init.with_name(f"{args.init.stem}-adv{cfg.attack}{cfg.snr_db:g}db.pt")
    started = time.perf_counter()
    bank = load_bank(args.data_root, init, cfg.max_clips, cfg.seed)
    classifier, history = fine_tune(init, bank, cfg)
    metrics = held_out_metrics(
        classifier, args.data_root, init.fold, init.frontend, cfg.hop_frames, len(init.labels)
    )
    train_config = {
        **init.train_config,
        "adversarial": {
            **asdict(cfg),
            "history": history,
            "init": str(args.init),
            "init_sha256": file_sha256(args.init),
            "init_metrics": init.metrics,
            "seconds": round(time.perf_counter() - started, 1),
        },
    }
    replace(init, state_dict=classifier.state_dict(), metrics=metrics, train_config=train_config).save(out)
    before = init.metrics.get("accuracy", float("nan"))
    print(
        f"wrote {out}: held-out fold {init.fold} clip accuracy {before:.3f} -> {metrics['accuracy']:.3f}; "
        f"judge its robustness with 'earshot gate {out} --data-root ...'"
    )
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point; 0 on success, 2 with a one-line message on bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args, cfg = parse_args(argv)
    except ValueError as error:
        print(f"earshot train: error: {error}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    torch.set_num_threads(args.threads)
    try:
        run(args, cfg)
    except (ValueError, OSError) as error:
        print(f"earshot train: error: {str(error).strip().splitlines()[0]}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
