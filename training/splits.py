"""Which clips a checkpoint trained on and which it never saw: its test fold, or its rebuilt validation split.

Export calibrates INT8 on the first and checks parity on the second; the gate judges on the second.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.checkpoint import Checkpoint
from training.data import ClipRecord, read_urbansound8k, split_by_group


@dataclass(frozen=True)
class ClipSplit:
    """The clips a checkpoint trained on (export calibrates INT8 on them), those it never saw, and which."""

    calibration: list[ClipRecord]
    heldout: list[ClipRecord]
    heldout_name: str  # e.g. "fold 10" or "validation split of folds 1,2,3,10"


def split_for_checkpoint(root: Path, checkpoint: Checkpoint, eval_fold: int | None = None) -> ClipSplit:
    """Held-out = the checkpoint's test fold (or ``eval_fold``); calibration = its training folds only."""
    records = read_urbansound8k(root)
    fold = eval_fold if eval_fold is not None else checkpoint.fold
    if fold is not None:
        heldout = [r for r in records if r.fold == fold]
        if not heldout:
            raise ValueError(f"held-out fold {fold} has no clips under {root}")
        return ClipSplit([r for r in records if r.fold != fold], heldout, f"fold {fold}")
    return _validation_split(records, checkpoint)


def _validation_split(records: list[ClipRecord], checkpoint: Checkpoint) -> ClipSplit:
    """A checkpoint trained on every fold: its recorded validation recordings, or (older checkpoints,
    trained on UrbanSound8K alone) the split rebuilt from its training config."""
    if checkpoint.validation_groups:
        held = set(checkpoint.validation_groups)
        return ClipSplit(
            [r for r in records if r.group not in held],
            [r for r in records if r.group in held],
            "validation recordings named in the checkpoint",
        )
    config = checkpoint.train_config
    fraction, seed = config.get("val_fraction"), config.get("seed")
    if fraction is None or seed is None:
        raise ValueError(
            "the checkpoint has no test fold and no val_fraction/seed in its train_config; "
            "pass --eval-fold N to name the held-out fold"
        )
    train_folds = config.get("train_folds") or sorted({r.fold for r in records})
    pool = [r for r in records if r.fold in set(train_folds)]
    train_idx, val_idx = split_by_group(pool, float(fraction), int(seed))
    folds = ",".join(str(f) for f in sorted(set(train_folds)))
    return ClipSplit(
        [pool[i] for i in train_idx],
        [pool[i] for i in val_idx],
        f"validation split ({fraction}) of folds {folds}",
    )
