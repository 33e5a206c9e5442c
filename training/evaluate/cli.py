"""``earshot evaluate``: event recall, false alerts per hour and latency per alert label, per split.

Builds a stream per cross-source split from the shared data (targets at known onsets between negative
clips), runs it through the agent's own pipeline, and writes ``evaluate.md``, ``evaluate.json``, a
trade-off PNG per alert label and each stream's ground truth under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

from edge_agent.agent_cli import DEFAULT_MODEL  # first: it pins BLAS to one thread before numpy loads
from edge_agent.config import AgentConfig, load_config
from edge_agent.onnx_model import OnnxModel
from training.catalog import DataError, source_dir
from training.cross_source import DEFAULT_SPLITS, SPLITS, SplitSpec, resolve_split
from training.evaluate.calibrate import calibrate, write_calibration
from training.evaluate.report import write_outputs
from training.evaluate.run import evaluate
from training.evaluate.streams import write_ground_truth

logger = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    """``earshot evaluate`` flags."""
    parser = argparse.ArgumentParser(
        prog="earshot evaluate",
        description="Event recall, false alerts per "
        "hour and latency per alert label, per cross-source split.",
    )
    parser.add_argument(
        "--model",
        type=Path,
        default=DEFAULT_MODEL,
        help="ONNX model (default: the "
        "packaged default); an ungated model is evaluated too, a tampered one is refused",
    )
    parser.add_argument(
        "--config",
        type=Path,
        help="agent TOML config: detector listen list, thresholds, "
        "timing and hop (default: the agent's defaults and the model's thresholds)",
    )
    parser.add_argument(
        "--data-root",
        type=Path,
        required=True,
        help="folder holding the sources (urbansound8k*, esc10, street-extra)",
    )
    parser.add_argument(
        "--splits",
        nargs="+",
        default=list(DEFAULT_SPLITS),
        help=f"splits to report (default: {' '.join(DEFAULT_SPLITS)}; known: "
        f"{', '.join(SPLITS)}, us8k-foldN, esc10-foldN)",
    )
    parser.add_argument(
        "--hours",
        type=float,
        help="at most this many hours of stream per split "
        "(targets and negatives subsampled); default: every clip",
    )
    parser.add_argument("--seed", type=int, default=0, help="stream order and gaps (default 0)")
    parser.add_argument(
        "--tolerance",
        type=float,
        help="seconds an alert may come before an event's onset or after its offset "
        "(default: one window plus one hop)",
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--calibrate",
        type=float,
        metavar="PER_HOUR",
        help="also write OUT/thresholds.toml: per alert label the lowest threshold within "
        "this many false alerts per hour of the splits' non-target audio (use held-out "
        "negatives; refused where the hours cannot resolve it)",
    )
    parser.add_argument("--json", action="store_true", help="print evaluate.json on stdout")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return parser


def check_args(args: argparse.Namespace) -> list[SplitSpec]:
    """Bad input fails here, in one line, before any audio is read."""
    if not args.data_root.is_dir():
        raise DataError(f"data root not found: {args.data_root}")
    if args.hours is not None and not args.hours > 0:
        raise ValueError(f"--hours must be positive, got {args.hours:g}")
    if args.calibrate is not None and not args.calibrate > 0:
        raise ValueError(f"--calibrate must be positive, got {args.calibrate:g}")
    if args.tolerance is not None and not args.tolerance >= 0:
        raise ValueError(f"--tolerance must be >= 0, got {args.tolerance:g}")
    specs = [resolve_split(name) for name in dict.fromkeys(args.splits)]
    for spec in specs:
        source_dir(args.data_root, spec.source)
    return specs


def run(args: argparse.Namespace, command: str) -> dict:
    """Evaluate and write every output; the JSON data."""
    specs = check_args(args)
    config = load_config(args.config) if args.config is not None else AgentConfig()
    model = OnnxModel.load(args.model, threads=1, allow_ungated=True)
    evaluation = evaluate(
        model,
        config,
        args.data_root,
        specs,
        args.seed,
        args.hours,
        args.tolerance,
        progress=not args.no_progress,
    )
    for split in evaluation.splits:
        write_ground_truth(split.plan, args.out / "ground-truth" / f"{split.spec.name}.csv", args.data_root)
    data = write_outputs(evaluation, args.out, command)
    if args.calibrate is not None:
        calibration = calibrate(data, args.calibrate)
        for label, entry in calibration.items():
            if entry["threshold"] is None:
                logger.warning("calibration of %s refused: %s", label, entry["refused"])
        write_calibration(calibration, args.out)
    return data


def summary(data: dict) -> str:
    """A few lines for the terminal: recall, false alerts/h and latency per split and label."""
    lines = []
    for name, labels in [(s["name"], s["labels"]) for s in data["splits"]] + [("pooled", data["pooled"])]:
        for label, r in labels.items():
            recall = "   —" if r["recall"] is None else f"{r['recall']:.2f}"
            rate = "—" if r["false_alerts_per_hour"] is None else f"{r['false_alerts_per_hour']:.1f}/h"
            p50 = "—" if r["latency_p50_s"] is None else f"{r['latency_p50_s']:.2f} s"
            lines.append(
                f"{name:<18} {label:<10} recall {recall}  false alerts {rate} "
                f"({r['false_alerts']} in {r['nontarget_hours']:.2f} h)  latency p50 {p50}"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``earshot evaluate``; bad input is one line on stderr and exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        data = run(args, shlex.join(["earshot", "evaluate", *argv]))
    except (ValueError, OSError) as error:  # DataError, ModelError, ConfigError: bad input, not a bug
        print(f"earshot evaluate: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(json.dumps(data, indent=2) if args.json else summary(data))
    if not args.json:
        print(f"report: {args.out / 'evaluate.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
