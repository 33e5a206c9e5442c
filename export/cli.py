"""``earshot export CHECKPOINT --out model.onnx [--int8 --calibration-data DIR]``: the command-line door."""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

from edge_agent.model_card import card_path
from edge_agent.windowing import DEFAULT_HOP_SECONDS
from export.parity import ParityPolicy
from export.pipeline import SHIP_CHOICES, ExportConfig, ParityError, run_export
from training.sources import sources_argument

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``earshot export``."""
    p = argparse.ArgumentParser(
        prog="earshot export",
        description=(
            "Export a training checkpoint to one self-contained ONNX file (FP32, or INT8 with --int8) "
            "with its "
            "metadata, check parity against PyTorch, and write <name>.card.json beside it."
        ),
    )
    p.add_argument("checkpoint", type=Path, help="checkpoint written by 'earshot train' (.pt)")
    p.add_argument("--out", type=Path, required=True, help="output model path, ending in .onnx")
    p.add_argument("--int8", action="store_true", help="also quantize to INT8 (static QDQ, per-channel)")
    p.add_argument(
        "--calibration-data",
        type=Path,
        metavar="DIR",
        help="UrbanSound8K root: calibration clips from the checkpoint's training folds, "
        "accuracy and agreement on its held-out clips",
    )
    p.add_argument("--name", help="model name in the metadata (default: the --out file's stem)")
    p.add_argument("--version", help="model version (default: the checkpoint's sha256 prefix)")
    p.add_argument(
        "--eval-fold", type=int, help="held-out fold to judge on (default: the checkpoint's test fold)"
    )
    p.add_argument("--calibration-clips", type=int, default=64, help="training-fold clips to calibrate on")
    p.add_argument("--eval-clips", type=int, help="limit the held-out clips (default: all of them)")
    p.add_argument(
        "--hop-seconds",
        type=float,
        default=DEFAULT_HOP_SECONDS,
        help=f"window hop over clips (default {DEFAULT_HOP_SECONDS}: the agent's hop)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for choosing clips")
    p.add_argument(
        "--ship",
        choices=SHIP_CHOICES,
        default="faster",
        help="which precision becomes --out when --int8 is given (default: the faster one)",
    )
    p.add_argument("--min-agreement", type=float, default=0.98, help="FP32 vs INT8 top-1 agreement to pass")
    p.add_argument(
        "--max-accuracy-drop", type=float, default=0.01, help="INT8 accuracy drop to pass (fraction)"
    )
    p.add_argument(
        "--max-logit-diff", type=float, default=1e-3, help="PyTorch vs ONNX max |logit diff| to pass"
    )
    p.add_argument(
        "--allow-parity-failure",
        action="store_true",
        help="write the model even when parity fails (experiments only; the card says so)",
    )
    p.add_argument(
        "--twin-budget",
        type=int,
        metavar="BYTES",
        help="keep the other precision beside the model only if both fit in BYTES (default: keep)",
    )
    p.add_argument(
        "--train-command", help="the 'earshot train' command that made the checkpoint (for the card)"
    )
    p.add_argument(
        "--thresholds",
        type=Path,
        metavar="TOML",
        help="per-label thresholds to ship ([detector.thresholds], as 'earshot evaluate --calibrate' writes)",
    )
    p.add_argument(
        "--training-sources",
        type=sources_argument,
        default=(),
        help="sources that trained a checkpoint that does not record them "
        "(e.g. us8k,street-extra,esc10,debian), for the card's licences",
    )
    p.add_argument(
        "--data-root",
        type=Path,
        help="the folder holding every source (../shared/data): an open-set model is also checked on "
        "street-extra-test, ESC-10 folds 4-5 and debian-heldout, and INT8 calibrates on every training "
        "source; with --training-sources, where debian-sounds lies",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def config_from_args(args: argparse.Namespace) -> ExportConfig:
    """The immutable run configuration; ValueError names the bad option."""
    policy = ParityPolicy(
        min_agreement=args.min_agreement,
        max_accuracy_drop=args.max_accuracy_drop,
        max_logit_diff=args.max_logit_diff,
    )
    if args.calibration_data is not None and not args.calibration_data.is_dir():
        raise ValueError(f"--calibration-data {args.calibration_data} is not a directory")
    return ExportConfig(
        checkpoint=args.checkpoint,
        out=args.out,
        int8=args.int8,
        calibration_data=args.calibration_data,
        name=args.name,
        version=args.version,
        eval_fold=args.eval_fold,
        calibration_clips=args.calibration_clips,
        eval_clips=args.eval_clips,
        hop_seconds=args.hop_seconds,
        seed=args.seed,
        ship=args.ship,
        allow_parity_failure=args.allow_parity_failure,
        twin_budget=args.twin_budget,
        train_command=args.train_command,
        thresholds_file=args.thresholds,
        training_sources=args.training_sources,
        data_root=args.data_root,
        policy=policy,
    )


def _measured_on(facts: dict | None) -> str:
    """ " on <cpu> (INT8 dot product: ...)" for the latency line; empty for a card without it."""
    if not facts:
        return ""
    return f" on {facts['cpu']} (INT8 dot product: {facts['int8_dot_product'] or 'none'})"


def _summary(card: dict, out: Path) -> str:
    """A few lines for the terminal; the card holds everything."""

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.2f}%"

    latency = card.get("latency_ms_per_window", {})
    lines = [
        f"wrote {out} ({card['precision'].upper()}, {card['size_bytes']:,} bytes, "
        f"sha256 {card['sha256'][:16]}...)",
        f"  card: {card_path(out)}",
        f"  PyTorch vs ONNX max |logit diff|: {card['max_abs_logit_diff']:.2e}",
        f"  accuracy FP32 {pct(card['fp32_accuracy'])}, INT8 {pct(card['int8_accuracy'])}, "
        f"agreement {pct(card['int8_agreement'])}",
        "  latency per window (1 thread): "
        + ", ".join(f"{k} {v:.3f} ms" for k, v in latency.items())
        + _measured_on(card.get("latency_measured_on")),
        f"  shipped {card['precision']}: {card['precision_reason']}",
    ]
    for name, checked in (card.get("source_checks") or {}).items():
        lines.append(
            f"  {name} ({checked['clips']} clips): accuracy FP32 {pct(checked['fp32_accuracy'])}, "
            f"INT8 {pct(checked.get('int8_accuracy'))}, agreement {pct(checked.get('int8_agreement'))}"
        )
    if card["parity_failures"]:
        lines.append(
            "  PARITY FAILED (allowed by --allow-parity-failure): " + "; ".join(card["parity_failures"])
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Run the export; 0 on success, 1 when parity fails, 2 on bad input."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING, format="%(levelname)s %(message)s"
    )
    try:
        config = config_from_args(args)
        card = run_export(config, "earshot export " + shlex.join(argv))
    except ParityError as error:
        print(f"earshot export: parity check failed, nothing written: {error}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]  # torch errors run long
        print(f"earshot export: error: {first_line}", file=sys.stderr)
        return 2
    print(_summary(card, args.out))
    return 0
