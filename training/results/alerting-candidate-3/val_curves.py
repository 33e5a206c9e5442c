"""Validation accuracy per epoch of several all-folds training reports, on one plot.

    python training/results/alerting-candidate-3/val_curves.py OUT.png NAME=report.json [NAME=report.json ...]

Solid lines: clip accuracy; dashed: balanced accuracy (mean recall over labels), where the report has it.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(argv: list[str]) -> None:
    out, runs = Path(argv[0]), [arg.split("=", 1) for arg in argv[1:]]
    figure, axis = plt.subplots(figsize=(7, 4))
    for name, path in runs:
        history = next(iter(json.loads(Path(path).read_text())["folds"].values()))["history"]
        epochs = [h["epoch"] for h in history]
        (line,) = axis.plot(epochs, [h["val_accuracy"] for h in history], label=f"{name} accuracy")
        if "val_balanced_accuracy" in history[0]:
            balanced = [h["val_balanced_accuracy"] for h in history]
            axis.plot(epochs, balanced, linestyle="--", color=line.get_color(), label=f"{name} balanced")
    axis.set(xlabel="epoch", ylabel="validation clip accuracy", ylim=(0.3, 0.8))
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out, dpi=120)


if __name__ == "__main__":
    main(sys.argv[1:])
