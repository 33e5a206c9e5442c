"""A run's report.json, report.md, confusion-matrix and learning-curve PNGs, and the comparison table."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

logger = logging.getLogger(__name__)

# The seed study (official 10-fold CV on the FULL dataset): accuracy, macro-F1, recall.
STUDY = {
    "rnn": (0.41, 0.39, 0.41),
    "lstm": (0.58, 0.57, 0.58),
    "gru": (0.59, 0.58, 0.59),
    "crnn": (0.60, 0.59, 0.60),
    "cnn": (0.62, 0.60, 0.60),
}
# The study's own recipe re-run on this shared subset and protocol: mean, std accuracy, macro-F1.
STUDY_ON_SUBSET = {"cnn": (0.475, 0.066, 0.52), "crnn": (0.513, 0.064, 0.53)}


def _pm(mean: float, std: float) -> str:
    return f"{mean:.3f} ± {std:.3f}"


def markdown_report(report: dict) -> str:
    """The report as a Markdown table: one row per fold, then the mean ± std."""
    lines = [
        f"# {report['arch']}: {report['params']:,} parameters, "
        f"{report['macs_per_window'] / 1e6:.2f} M MACs per window, wall {report['wall_s']:.0f} s",
        "",
        "| fold | accuracy | macro-F1 | macro-recall | best epoch | epochs | wall s |",
        "|---|---|---|---|---|---|---|",
    ]
    for fold, f in report["folds"].items():
        lines.append(
            f"| {fold} | {f['accuracy']:.3f} | {f['macro_f1']:.3f} | {f['macro_recall']:.3f} | "
            f"{f['best_epoch']} | {f['epochs_run']} | {f['wall_s']:.0f} |"
        )
    lines.append(
        f"| mean ± std | {_pm(report['mean_accuracy'], report['std_accuracy'])} | "
        f"{_pm(report['mean_macro_f1'], report['std_macro_f1'])} | "
        f"{_pm(report['mean_macro_recall'], report['std_macro_recall'])} | | | |"
    )
    lines += ["", "Per-class recall (mean over folds):", "", "| class | recall |", "|---|---|"]
    lines += [f"| {label} | {value:.3f} |" for label, value in report["mean_per_class_recall"].items()]
    if report.get("open_set"):
        lines += ["", *_open_set_lines(report["open_set"])]
    if report.get("command"):
        lines += ["", f"Command: `{report['command']}`"]
    return "\n".join(lines) + "\n"


def _open_set_lines(opened: dict) -> list[str]:
    lines = [
        f"Open set: thresholds from ESC-10 folds {opened['esc10_folds']['calibration']}, "
        f"false-positive rate on {opened['negative_clips']} held-out non-target ESC-10 clips (folds "
        f"{opened['esc10_folds']['test']}; a clip counts when any 1-s window reaches it).",
        "",
        "| class | threshold | FPR | recall at threshold (validation) |",
        "|---|---|---|---|",
    ]
    for label, threshold in opened["thresholds"].items():
        lines.append(
            f"| {label} | {threshold:.3f} | {opened['false_positive_rate'][label]:.3f} | "
            f"{opened['recall_at_threshold'][label]:.3f} |"
        )
    return lines


def plot_confusion(report: dict, path: Path) -> None:
    """Confusion matrix summed over folds, rows normalised to recall."""
    matrix = np.sum([np.array(f["confusion"]) for f in report["folds"].values()], axis=0)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7, 6))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    labels = report["labels"]
    ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    for (i, j), value in np.ndenumerate(rates):
        ax.text(
            j,
            i,
            f"{value:.2f}",
            ha="center",
            va="center",
            fontsize=6,
            color="white" if value > 0.5 else "black",
        )
    ax.set(xlabel="predicted", ylabel="true", title=f"{report['arch']}: confusion (held-out clips)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_learning_curves(report: dict, path: Path) -> None:
    """Training loss and validation accuracy per epoch, one line per fold."""
    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    for fold, f in report["folds"].items():
        epochs = [h["epoch"] for h in f["history"]]
        loss_ax.plot(epochs, [h["train_loss"] for h in f["history"]], label=f"fold {fold}")
        acc_ax.plot(epochs, [h["val_accuracy"] for h in f["history"]], label=f"fold {fold}")
    loss_ax.set(xlabel="epoch", ylabel="training loss", title="training loss")
    acc_ax.set(xlabel="epoch", ylabel="clip accuracy", title="validation accuracy (training folds)")
    acc_ax.legend(fontsize=8)
    fig.suptitle(report["arch"])
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(report: dict, out_dir: Path) -> None:
    """report.json, report.md, confusion.png and learning_curves.png in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out_dir / "report.md").write_text(markdown_report(report))
    plot_confusion(report, out_dir / "confusion.png")
    plot_learning_curves(report, out_dir / "learning_curves.png")
    logger.info("wrote %s", out_dir / "report.md")


def comparison(reports: dict[str, dict]) -> dict:
    """Release tooling's shape: {arch: {mean_accuracy, std_accuracy, macro_f1, params, macs_per_window,
    folds}}."""
    return {
        arch: {
            "mean_accuracy": r["mean_accuracy"],
            "std_accuracy": r["std_accuracy"],
            "macro_f1": r["mean_macro_f1"],
            "params": r["params"],
            "macs_per_window": r["macs_per_window"],
            "folds": {fold: f["accuracy"] for fold, f in r["folds"].items()},
        }
        for arch, r in reports.items()
    }


# The goals for the comparison, scored by leave-one-fold-out on the shared subset.
GOAL_BEST_ACCURACY = 0.80
GOAL_MAX_PARAMS = 1_000_000
GOAL_MAX_MACS = 100_000_000


def goal_checks(reports: dict[str, dict]) -> list[dict]:
    """Each goal with what was measured and whether it is met: the best model's accuracy and size, and
    every seed architecture against the study's full-data accuracy."""
    if not reports:
        return []
    best_arch = max(reports, key=lambda arch: reports[arch]["mean_accuracy"])
    best = reports[best_arch]
    checks = [
        {
            "goal": f"best model ({best_arch}) mean accuracy >= {GOAL_BEST_ACCURACY:.2f}",
            "measured": f"{best['mean_accuracy']:.3f}",
            "met": best["mean_accuracy"] >= GOAL_BEST_ACCURACY,
        },
        {
            "goal": f"best model ({best_arch}) <= 1 M parameters and <= 100 M MACs per window",
            "measured": f"{best['params']:,} params, {best['macs_per_window'] / 1e6:.1f} M MACs",
            "met": best["params"] <= GOAL_MAX_PARAMS and best["macs_per_window"] <= GOAL_MAX_MACS,
        },
    ]
    for arch, (study_accuracy, _, _) in STUDY.items():
        if arch in reports:
            mean = reports[arch]["mean_accuracy"]
            checks.append(
                {
                    "goal": f"{arch} beats the study's {study_accuracy:.2f}",
                    "measured": f"{mean:.3f}",
                    "met": mean > study_accuracy,
                }
            )
    return checks


def comparison_markdown(reports: dict[str, dict]) -> str:
    """Ours against the study's numbers, one row per architecture."""
    lines = [
        "# Architecture comparison (leave-one-fold-out on the shared UrbanSound8K subset)",
        "",
        "| arch | accuracy (ours) | macro-F1 | macro-recall | study (full data) acc / F1 | "
        "study recipe on this subset | params | M MACs/window | wall s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for arch, r in reports.items():
        study = "{:.2f} / {:.2f}".format(*STUDY[arch][:2]) if arch in STUDY else "—"
        subset = (
            f"{_pm(*STUDY_ON_SUBSET[arch][:2])} / {STUDY_ON_SUBSET[arch][2]:.2f}"
            if arch in STUDY_ON_SUBSET
            else "—"
        )
        lines.append(
            f"| {arch} | {_pm(r['mean_accuracy'], r['std_accuracy'])} | "
            f"{_pm(r['mean_macro_f1'], r['std_macro_f1'])} | {r['mean_macro_recall']:.3f} | "
            f"{study} | {subset} | {r['params']:,} | {r['macs_per_window'] / 1e6:.2f} | "
            f"{r['wall_s']:.0f} |"
        )
    folds = ", ".join(next(iter(reports.values()))["folds"]) if reports else ""
    commands = dict.fromkeys(r.get("command", "") for r in reports.values())
    lines += [
        "",
        f"Test folds: {folds}. Mean ± sample std over folds; with 4 folds, differences under "
        "about 0.05 are noise.",
        "",
        "Goals:",
        "",
        "| goal | measured | met |",
        "|---|---|---|",
    ]
    lines += [
        f"| {c['goal']} | {c['measured']} | {'yes' if c['met'] else 'NO'} |" for c in goal_checks(reports)
    ]
    lines += [
        "",
        "![accuracy per architecture](comparison.png)",
        "",
        "Commands:",
        "",
        *(f"- `{c}`" for c in commands if c),
    ]
    return "\n".join(lines) + "\n"


def plot_comparison(reports: dict[str, dict], path: Path) -> None:
    """Mean ± std accuracy per architecture, each fold as a dot, the study's full-data number as a tick."""
    fig, ax = plt.subplots(figsize=(8, 4.5))
    first_in_study = next((arch for arch in reports if arch in STUDY), None)  # carries the legend entry
    for x, (arch, r) in enumerate(reports.items()):
        ax.bar(
            x,
            r["mean_accuracy"],
            yerr=r["std_accuracy"],
            color="tab:blue",
            alpha=0.7,
            capsize=4,
            label="ours: mean ± std over folds" if x == 0 else None,
        )
        folds = [f["accuracy"] for f in r["folds"].values()]
        ax.scatter(
            [x] * len(folds),
            folds,
            color="black",
            s=10,
            zorder=3,
            label="ours: one test fold" if x == 0 else None,
        )
        if arch in STUDY:
            ax.hlines(
                STUDY[arch][0],
                x - 0.4,
                x + 0.4,
                color="tab:red",
                linewidth=2,
                label="study, full data" if arch == first_in_study else None,
            )
    ax.axhline(GOAL_BEST_ACCURACY, color="gray", linestyle="--", label=f"goal {GOAL_BEST_ACCURACY:.2f}")
    ax.set_xticks(range(len(reports)), list(reports))
    ax.set(
        ylabel="clip accuracy (held-out fold)",
        ylim=(0, 1),
        title="Leave-one-fold-out accuracy on the shared UrbanSound8K subset",
    )
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_comparison(reports: dict[str, dict], out_dir: Path) -> None:
    """comparison.json (release tooling reads it), comparison.md and comparison.png."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "comparison.json").write_text(json.dumps(comparison(reports), indent=2) + "\n")
    (out_dir / "comparison.md").write_text(comparison_markdown(reports))
    plot_comparison(reports, out_dir / "comparison.png")
