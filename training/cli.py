"""``earshot train``: cross-validate one architecture, compare them all, or train the all-folds default."""

from __future__ import annotations

import argparse
import json
import logging
import shlex
import sys
from pathlib import Path

from edge_agent.frontend import FrontendParams
from training.heads import HEADS
from training.models import ARCHITECTURES, ModelConfig, architecture
from training.report import write_comparison, write_report
from training.run import Corpus, cross_validate, load_corpus, load_sources_corpus, train_default
from training.sources import sources_argument
from training.train import Dist, TrainConfig, setup_distributed

logger = logging.getLogger(__name__)

# Epochs per architecture for --compare, sized so all of them x 4 folds at 8 crops per clip finish in about
# an hour on 2 CPU cores as two processes (measured seconds per epoch in training/results/README.md);
# --epochs overrides them all.
COMPARE_EPOCHS = {"cnn": 12, "rescnn": 12, "dsresnet": 12, "crnn": 12, "gru": 12, "lstm": 12, "rnn": 12}
COMPARE_ORDER = ("cnn", "rescnn", "crnn", "gru", "lstm", "rnn")


# Augmentation and schedule knobs exposed as flags: (flag, TrainConfig field, help). Defaults are the
# TrainConfig's, so the committed results' commands stay short.
_RECIPE_FLAGS = (
    ("--gain-db", "gain_db", "random gain augmentation range, +- dB"),
    ("--bandlimit-p", "bandlimit_p", "share of training windows low-passed at a random 3-7 kHz"),
    ("--crops-per-clip", "crops_per_clip", "random window crops of each clip per epoch"),
    ("--stretch", "stretch", "time-stretch rate range LO HI of a training crop; 1 1 is off"),
    ("--pitch", "pitch_semitones", "pitch shift range, +- semitones"),
    ("--pitch-p", "pitch_p", "share of training windows pitch-shifted"),
    ("--noise-p", "noise_p", "share of training windows mixed with ESC-10 background"),
    ("--mixup-alpha", "mixup_alpha", "mixup Beta(alpha, alpha); 0 turns mixup off"),
    ("--snr-db", "snr_db", "SNR range LO HI (dB) of a training window over its background"),
    ("--reverb-p", "reverb_p", "share of training windows given a reverberant tail (RT60 0.2-1.5 s)"),
    ("--colour-p", "colour_p", "share of training windows through a random smooth microphone response"),
    ("--ema-decay", "ema_decay", "exponential moving average of the weights per step (e.g. 0.999); 0 is off"),
    ("--select-by", "select_by", "validation figure that picks the epoch kept: accuracy or balanced"),
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line; see training/results/README.md for the commands that made the committed results."""
    parser = argparse.ArgumentParser(prog="earshot train", description=__doc__)
    parser.add_argument(
        "--data-root",
        type=Path,
        help="UrbanSound8K dir (metadata/ + audio/); with "
        "--sources, the folder holding every source (../shared/data)",
    )
    parser.add_argument(
        "--sources",
        type=sources_argument,
        metavar="LIST",
        help="train on several sources under --data-root, e.g. us8k,street-extra,esc10: "
        "street-extra's train half only, negatives as an 11th class 'other' "
        "(training/sources.py); default: --data-root is one UrbanSound8K dir",
    )
    parser.add_argument(
        "--arch",
        default="cnn",
        help=f"one of {', '.join(ARCHITECTURES)}, or 'best' "
        "(highest mean accuracy in OUT/comparison.json) with --all-folds",
    )
    parser.add_argument("--archs", nargs="+", default=list(COMPARE_ORDER), help="architectures for --compare")
    parser.add_argument(
        "--head",
        choices=HEADS,
        default="softmax",
        help="how logits become label scores: one softmax over the labels, or an independent sigmoid "
        "per label trained with binary cross-entropy (training/heads.py); the exported model tells the agent",
    )
    parser.add_argument("--folds", nargs="+", type=int, help="test folds (default: every fold present)")
    parser.add_argument("--epochs", type=int, help="epochs (default 30; per-architecture with --compare)")
    parser.add_argument("--out", type=Path, default=Path("training/results"), help="output directory")
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--compare", action="store_true", help="cross-validate each of --archs")
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="rebuild comparison.json/.md/.png from OUT/<arch>/report.json; trains nothing",
    )
    parser.add_argument(
        "--all-folds",
        action="store_true",
        help="train the default model on every fold, with open-set thresholds",
    )
    parser.add_argument(
        "--noise-root",
        type=Path,
        help="ESC-10 dir for background noise and open-set "
        "thresholds (default: DATA_ROOT/../esc10 when present)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (torch.set_num_threads); 1 is fastest on busy shared cores",
    )
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--patience", type=int, default=10, help="early-stopping patience in epochs")
    for flag, field_name, help_text in _RECIPE_FLAGS:
        default = getattr(TrainConfig, field_name)
        pair = isinstance(default, tuple)
        parser.add_argument(
            flag,
            dest=field_name,
            type=type(default[0] if pair else default),
            default=default,
            nargs=2 if pair else None,
            help=f"{help_text} (default %(default)s)",
        )
    args = parser.parse_args(argv)
    if args.compare and args.all_folds:
        parser.error("choose --compare or --all-folds, not both")
    if args.data_root is None and not args.report_only:
        parser.error("--data-root is required (except with --report-only)")
    return args


def _noise_root(args: argparse.Namespace) -> Path | None:
    if args.noise_root is not None:
        return args.noise_root
    parent = args.data_root.resolve() if args.sources else args.data_root.resolve().parent
    guess = parent / "esc10"
    if guess.is_dir():
        return guess
    logger.warning("no ESC-10 directory found: training without background noise or open-set thresholds")
    return None


def best_architecture(out: Path) -> str:
    """The architecture with the highest mean accuracy in a comparison.json."""
    path = out / "comparison.json"
    if not path.is_file():
        raise ValueError(f"--arch best needs {path}; run 'earshot train --compare' first")
    table = json.loads(path.read_text())
    return max(table, key=lambda arch: table[arch]["mean_accuracy"])


def _config(args: argparse.Namespace, arch: str) -> TrainConfig:
    epochs = args.epochs or (COMPARE_EPOCHS.get(arch, 15) if args.compare else 30)
    return TrainConfig(
        epochs=epochs,
        batch_size=args.batch_size,
        lr=args.lr,
        patience=args.patience,
        seed=args.seed,
        threads=args.threads,
        device=args.device,
        **{name: _as_field(getattr(args, name)) for _, name, _ in _RECIPE_FLAGS},
    )


def _model_config(args: argparse.Namespace, arch: str) -> ModelConfig:
    """The named preset with the head the flags ask for."""
    return architecture(arch, head=args.head)


def _as_field(value: object) -> object:
    """argparse gives nargs=2 flags as lists; TrainConfig holds tuples."""
    return tuple(value) if isinstance(value, list) else value


def _cross_validate(
    args: argparse.Namespace, corpus: Corpus, arch: str, params: FrontendParams, dist: Dist, command: str
) -> dict:
    out = args.out / arch
    report = cross_validate(
        corpus, _model_config(args, arch), _config(args, arch), params, out, args.folds, dist
    )
    report["command"] = command
    if dist.main:
        write_report(report, out)
    return report


def run(args: argparse.Namespace, command: str) -> None:
    """Do what the flags ask; every output goes under ``args.out``."""
    if args.report_only:
        reports = collect_reports(args.out)
        if not reports:
            raise ValueError(f"no <arch>/report.json under {args.out}: run 'earshot train --compare' first")
        write_comparison(reports, args.out)
        logger.info("rebuilt %s from %s", args.out / "comparison.md", ", ".join(reports))
        return
    dist = setup_distributed("cuda" if args.device == "cuda" else "cpu")
    params = FrontendParams()
    arch = best_architecture(args.out) if args.arch == "best" else args.arch
    for name in args.archs if args.compare else [arch]:
        architecture(name)  # fail on a typo or a bad recipe flag before decoding anything
        _config(args, name)
    if args.sources:
        corpus = load_sources_corpus(args.data_root, args.sources, _noise_root(args), params)
    else:
        corpus = load_corpus(args.data_root, _noise_root(args), params)
    if args.all_folds:
        checkpoint = args.out / "default" / f"{arch}.pt"
        report = train_default(
            corpus, _model_config(args, arch), _config(args, arch), params, checkpoint, dist
        )
        report["command"] = command
        if dist.main:
            write_report(report, args.out / "default")
        return
    if not args.compare:
        _cross_validate(args, corpus, arch, params, dist, command)
        return
    for name in args.archs:
        _cross_validate(args, corpus, name, params, dist, command)
        if dist.main:  # rebuilt after each architecture, so a cut-short run still leaves its table
            write_comparison(collect_reports(args.out), args.out)


def collect_reports(out: Path) -> dict[str, dict]:
    """Every architecture's latest cross-validation report under ``out``, in comparison order.

    Built from the per-architecture report.json files, so several ``--compare`` processes (each with its
    own ``--archs``, sharing the cores) add up to one table.
    """
    names = [*COMPARE_ORDER, *(a for a in ARCHITECTURES if a not in COMPARE_ORDER)]
    return {
        name: json.loads((out / name / "report.json").read_text())
        for name in names
        if (out / name / "report.json").is_file()
    }


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``earshot train``; bad input is one line on stderr and exit status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--adversarial" in argv:  # fine-tuning from --init has its own options: training/adversarial.py
        from training import adversarial

        return adversarial.main(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)  # a bad --sources is argparse's one-line usage error, status 2
    try:
        run(args, shlex.join(["earshot", "train", *argv]))
    except ValueError as error:
        print(f"earshot train: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
