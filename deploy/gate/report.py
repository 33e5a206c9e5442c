"""The gate's outputs: report.json, report.md, PNG plots, and the gate record in the model card."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # CI and sensors have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from deploy.gate.policy import ATTACKS, BUDGETS_DB, Check  # noqa: E402
from deploy.gate.run import Measurement  # noqa: E402
from edge_agent.frontend import FrontendParams, LogMel  # noqa: E402

logger = logging.getLogger(__name__)

PLOTS = ("accuracy_vs_snr.png", "deepfool_snr_hist.png", "corruption_accuracy.png", "spectrogram_pair.png")


def _plot_accuracy_vs_snr(m: Measurement, path: Path) -> None:
    """PGD robust accuracy at each budget, and DeepFool's bound on L2 robust accuracy over all budgets."""
    fig, ax = plt.subplots(figsize=(6, 4))
    snrs = np.array(m.deepfool_snr_db)
    budgets = np.linspace(0, 80, 161)
    clean = m.figures["clean_accuracy"] or 0.0
    if len(snrs):
        # A clip survives budget b unless DeepFool flipped it with less perturbation (higher SNR) than b.
        ax.plot(
            budgets,
            [clean * np.mean(snrs < b) for b in budgets],
            color="grey",
            label="DeepFool upper bound (L2)",
        )
    for attack, marker in zip(ATTACKS, "os", strict=True):
        for prefix, style in (("", "-"), ("int8_", "--")):
            values = [m.figures.get(f"{prefix}robust_accuracy_{attack}_{b}db") for b in BUDGETS_DB]
            if any(v is None for v in values):
                continue
            ax.plot(
                BUDGETS_DB,
                [clean * v for v in values],
                style,
                marker=marker,
                label=f"{'INT8 ONNX' if prefix else 'PyTorch'} {attack.upper()} PGD",
            )
    ax.axhline(clean, color="black", linewidth=0.8, linestyle=":", label="clean")
    ax.set(
        xlabel="perturbation budget (SNR dB; right = smaller perturbation)",
        ylabel="accuracy over all held-out clips",
        ylim=(0, 1.02),
        title="Accuracy against attack budget (robust share x clean accuracy)",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_deepfool(m: Measurement, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    finite = [s for s in m.deepfool_snr_db if np.isfinite(s)]
    ax.hist(finite, bins=30, color="tab:blue")
    median = m.figures.get("deepfool_median_snr_db")
    if median is not None:
        ax.axvline(median, color="red", label=f"median {median:.1f} dB")
        ax.legend()
    ax.set(
        xlabel="minimal L2 perturbation, SNR dB (higher = more fragile)",
        ylabel="clips",
        title=f"DeepFool minimal perturbation ({len(finite)} of {len(m.deepfool_snr_db)} clips flipped)",
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_corruptions(m: Measurement, path: Path) -> None:
    names = list(m.corruption_accuracy)
    values = list(m.corruption_accuracy.values())
    fig, ax = plt.subplots(figsize=(7, 4))
    colours = ["tab:green" if n == "clean" else "tab:orange" for n in names]
    ax.barh(names[::-1], values[::-1], color=colours[::-1])
    ax.set(xlim=(0, 1), xlabel=f"accuracy ({m.judged_by} model)", title="Accuracy under natural corruptions")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_spectrograms(m: Measurement, params: FrontendParams, labels: tuple[str, ...], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    if not m.example:
        for ax in axes:
            ax.text(0.5, 0.5, "no adversarial example", ha="center", va="center")
    else:
        logmel = LogMel(params)
        pairs = (("clean", "label"), ("adversarial", "adversarial_label"))
        for ax, (key, label_key) in zip(axes, pairs, strict=True):
            image = logmel(m.example[key])[0, 0]  # (n_mels, frames)
            ax.imshow(image, origin="lower", aspect="auto", cmap="magma")
            ax.set(title=f"{key}: {labels[m.example[label_key]]}", xlabel="frame")
        axes[0].set_ylabel("mel bin")
        fig.suptitle(f"DeepFool at {m.example['snr_db']:.1f} dB SNR (median clip)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _interval_line(interval: dict) -> str:
    """How far the clean figure can be trusted: its spread over the recordings held out."""
    line = (
        f"- clean accuracy, {interval['level']:.0%} interval resampling the {interval['recordings']} "
        f"recordings: {interval['low']:.3f}-{interval['high']:.3f}"
    )
    if interval["bound_inside"]:
        line += " (the policy's bound lies inside it: on other recordings the verdict could differ)"
    return line


def _markdown(report: dict) -> str:
    lines = [
        f"# Robustness gate: {'PASSED' if report['passed'] else 'FAILED'}",
        "",
        f"- model: `{report['model']['path']}` (sha256 `{report['model']['sha256']}`)",
        f"- PyTorch checkpoint attacked: `{report['checkpoint']['path']}`",
        f"- policy: `{report['policy']['path']}` (sha256 `{report['policy']['sha256'][:16]}...`)",
        f"- held out: {report['held_out']}, {report['clips']} clips (loudest 1-s window each); "
        f"corruptions judged on the {report['corruptions_judged_by']} model",
        _interval_line(report["clean_accuracy_interval"]),
        "",
        "| figure | value | bound | status |",
        "|---|---|---|---|",
    ]
    for check in report["checks"]:
        value = "n/a" if check["value"] is None else f"{check['value']:.4g}"
        bound = ">=" if check["side"] == "min" else "<="
        lines.append(f"| {check['figure']} | {value} | {bound} {check['threshold']:g} | {check['status']} |")
    lines += [
        "",
        *[f"Note: {note}" for note in report["notes"]],
        "",
        *[f"![{name}]({name})" for name in PLOTS],
        "",
    ]
    return "\n".join(lines)


def write_report(
    out_dir: Path, report: dict, m: Measurement, params: FrontendParams, labels: tuple[str, ...]
) -> None:
    """Write report.json, report.md and the four plots into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    (out_dir / "report.md").write_text(_markdown(report))
    _plot_accuracy_vs_snr(m, out_dir / PLOTS[0])
    _plot_deepfool(m, out_dir / PLOTS[1])
    _plot_corruptions(m, out_dir / PLOTS[2])
    _plot_spectrograms(m, params, labels, out_dir / PLOTS[3])
    logger.info("gate report written to %s", out_dir)


def write_gate_record(card_path: Path, card: dict, record: dict) -> None:
    """Put ``record`` under the card's ``gate`` key; atomic, so a crash never leaves half a card."""
    updated = {**card, "gate": record}
    partial = card_path.with_suffix(f".{os.getpid()}.partial")
    partial.write_text(json.dumps(updated, indent=2, sort_keys=True) + "\n")
    partial.replace(card_path)


def checks_to_json(checks: list[Check]) -> list[dict]:
    """Checks as plain dicts for report.json."""
    return [
        {"figure": c.figure, "side": c.side, "threshold": c.threshold, "value": c.value, "status": c.status}
        for c in checks
    ]
