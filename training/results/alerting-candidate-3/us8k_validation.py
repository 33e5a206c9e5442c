"""UrbanSound8K accuracy of all-folds open-set checkpoints on the validation recordings they name, and how
often they answer ``other`` there: the figure that decides the gate's clean accuracy for such a model.

    python training/results/alerting-candidate-3/us8k_validation.py CKPT [CKPT ...] [--data-root DIR]
        [--confusion]

--confusion adds, per class, its clips and recordings (fsID) and the most frequent answers: on these
clips a few recordings decide a class (air_conditioner: 57 clips of 3 recordings).
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import torch

from training.adversarial import split_records
from training.checkpoint import load_checkpoint
from training.data import load_features
from training.metrics import recording_bootstrap_interval
from training.sources import OTHER, TRAIN_ONLY_FOLD
from training.train import AGENT_HOP_FRAMES, predict_clips


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--data-root", type=Path, default=Path("../shared/data"))
    parser.add_argument("--confusion", action="store_true", help="per class: recordings and top answers")
    args = parser.parse_args()
    torch.set_num_threads(1)
    for path in args.checkpoints:
        checkpoint = load_checkpoint(path)
        held = [r for r in split_records(args.data_root, checkpoint).heldout if r.fold != TRAIN_ONLY_FOLD]
        features = load_features(held, checkpoint.frontend, desc=path.name)
        model = checkpoint.build().eval()
        scores = predict_clips(model, features, checkpoint.frontend, AGENT_HOP_FRAMES, torch.device("cpu"))
        predicted, truth = scores.argmax(axis=1), features.labels.numpy()
        per_class = " ".join(
            f"{checkpoint.labels[k]} {(predicted[truth == k] == k).mean():.2f}"
            for k in range(len(checkpoint.labels))
            if (truth == k).any()
        )
        other = (predicted == checkpoint.labels.index(OTHER)).mean()
        print(f"{path}: {len(held)} clips, accuracy {(predicted == truth).mean():.3f}, 'other' {other:.3f}")
        print(f"  {per_class}")
        if args.confusion:
            low, high = recording_bootstrap_interval(predicted == truth, [r.group for r in held])
            print(f"  95% interval, resampling recordings: {low:.3f}-{high:.3f}")
            for k in sorted(set(truth.tolist())):
                mine = truth == k
                answers = Counter(checkpoint.labels[p] for p in predicted[mine]).most_common(4)
                recordings = len({r.group for r, t in zip(held, truth, strict=True) if t == k})
                said = ", ".join(f"{label} {n}" for label, n in answers)
                print(f"    {checkpoint.labels[k]}: {mine.sum()} clips of {recordings} recordings -> {said}")


if __name__ == "__main__":
    main()
