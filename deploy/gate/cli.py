"""``earshot gate``: judge a model against the robustness policy; exit 0 pass, 1 fail, 2 error."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import replace
from pathlib import Path

import soundfile as sf
import torch

from deploy.gate.policy import Policy, load_policy
from deploy.gate.report import checks_to_json, write_gate_record, write_report
from deploy.gate.run import CLEAN_INTERVAL_LEVEL, GateConfig, Measurement, measure
from deploy.gate.target import Target, resolve_target
from export.card import created_at

logger = logging.getLogger(__name__)

DEFAULT_POLICY = Path(__file__).resolve().parent.parent / "policy.toml"
EXIT_PASS, EXIT_FAIL, EXIT_ERROR = 0, 1, 2


def _positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(prog="earshot gate", description=__doc__)
    parser.add_argument("model", help="ONNX model (with <name>.card.json beside it) or a training checkpoint")
    parser.add_argument(
        "--data-root", required=True, type=Path, help="UrbanSound8K directory (metadata/, audio/)"
    )
    parser.add_argument(
        "--noise-root",
        type=Path,
        help="ESC-10 directory for background noise (default: esc10 beside --data-root)",
    )
    parser.add_argument("--checkpoint", type=Path, help="source checkpoint, if not where the card says")
    parser.add_argument(
        "--policy", type=Path, default=DEFAULT_POLICY, help="policy TOML (default: %(default)s)"
    )
    parser.add_argument("--report", type=Path, default=Path("gate-report"), help="report directory")
    parser.add_argument("--fold", type=int, help="held-out fold (default: the checkpoint's)")
    parser.add_argument(
        "--max-clips", type=_positive, help="judge at most N clips of the fold (class-balanced)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=_positive, help="CPU threads for torch (default: torch's own choice)"
    )
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def clean_interval(m: Measurement, checks: list) -> dict:
    """The clean-accuracy interval over recordings, and whether the policy's bound lies inside it."""
    low, high = m.clean_interval
    bound = next((c.threshold for c in checks if c.figure == "clean_accuracy"), None)
    return {
        "low": low,
        "high": high,
        "level": CLEAN_INTERVAL_LEVEL,
        "recordings": m.recordings,
        "method": "bootstrap over recordings",
        "bound_inside": bound is not None and low <= bound <= high,
    }


def _report(target: Target, policy: Policy, policy_path: Path, m: Measurement, checks: list) -> dict:
    return {
        "schema": "earshot.gate-report/1",
        "created_at": created_at(),
        "passed": all(c.status != "fail" for c in checks),
        "model": {
            "path": str(target.model_path),
            "sha256": target.model_sha256,
            "kind": "onnx" if target.onnx else "checkpoint",
            "quantised": bool(target.onnx and target.onnx.quantised),
            "int8_model": str(target.int8_path) if target.int8_path else None,
        },
        "checkpoint": {"path": str(target.checkpoint_path), "arch": target.checkpoint.model_config.arch},
        "policy": {"path": str(policy_path), "sha256": policy.sha256},
        "fold": m.fold,
        "held_out": m.held_out,
        "clips": m.clips,
        "clean_accuracy_interval": clean_interval(m, checks),
        "corruptions_judged_by": m.judged_by,
        "figures": m.figures,
        "checks": checks_to_json(checks),
        "corruption_accuracy": m.corruption_accuracy,
        "deepfool_snr_db": [s if s != float("-inf") else None for s in m.deepfool_snr_db],
        "notes": m.notes,
    }


def run(args: argparse.Namespace) -> int:
    """Measure, judge, report, and record a pass in the model card."""
    policy = load_policy(args.policy)
    if not (args.data_root / "metadata" / "UrbanSound8K.csv").is_file():
        raise ValueError(
            f"--data-root {args.data_root} is not an UrbanSound8K directory "
            "(metadata/UrbanSound8K.csv is missing)"
        )
    target = resolve_target(args.model, args.checkpoint)
    noise_root = args.noise_root or args.data_root.resolve().parent / "esc10"
    config = GateConfig(
        args.data_root,
        noise_root,
        args.fold,
        args.max_clips,
        args.seed,
        replace(policy.attack, seed=args.seed),
    )
    m = measure(target, config)
    checks = policy.judge(m.figures)
    report = _report(target, policy, args.policy, m, checks)
    write_report(args.report, report, m, target.checkpoint.frontend, target.checkpoint.labels)
    for check in checks:
        if check.status == "fail":
            print(
                f"FAIL {check.figure} = {check.value:.4g} (must be {'>=' if check.side == 'min' else '<='} "
                f"{check.threshold:g})"
            )
    if report["passed"] and target.card_path is not None:
        record = {
            "passed": True,
            "sha256": target.model_sha256,
            "policy_sha256": policy.sha256,
            "figures": m.figures,
            "created_at": report["created_at"],
        }
        write_gate_record(target.card_path, target.card, record)
    print(f"gate {'PASSED' if report['passed'] else 'FAILED'}: report in {args.report}/report.md")
    return EXIT_PASS if report["passed"] else EXIT_FAIL


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``earshot gate``."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return run(args)
    except (ValueError, OSError, sf.SoundFileError) as error:
        # One line: some libraries put whole paragraphs into their messages.
        message = str(error).strip().splitlines() or [type(error).__name__]
        print(f"earshot gate: error: {message[0]}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
