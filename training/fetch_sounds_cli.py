"""``earshot fetch-sounds``: Debian's licensed sound effects into the training cache, never at run time."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from training.data import cache_dir
from training.debian_sounds import (
    EVALUATION_PACKAGES,
    SOURCE_NAME,
    TRAINING_PACKAGES,
    FetchError,
    fetch,
    refuse_reserved,
)


def default_root() -> Path:
    """``$EARSHOT_CACHE/debian-sounds`` (``~/.cache/earshot/debian-sounds``)."""
    return cache_dir() / SOURCE_NAME


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="earshot fetch-sounds",
        description="Download Debian data packages with apt-get, unpack them with dpkg -x and index their "
        "non-target sound effects (with each package's licence) as a training and evaluation source.",
    )
    parser.add_argument(
        "--root", type=Path, default=default_root(), help="where to unpack (default: %(default)s)"
    )
    parser.add_argument(
        "--packages",
        default=",".join((*TRAINING_PACKAGES, *EVALUATION_PACKAGES)),
        help="comma-separated Debian packages (default: the training and the held-out evaluation set)",
    )
    args = parser.parse_args(argv)
    args.packages = [p.strip() for p in args.packages.split(",") if p.strip()]
    try:
        refuse_reserved(args.packages)
    except ValueError as error:
        parser.error(str(error))
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse_args(argv)
    try:
        sounds = fetch(args.packages, args.root)
    except FetchError as error:
        print(f"earshot fetch-sounds: {error}", file=sys.stderr)
        return 1
    hours = sum(s.seconds for s in sounds) / 3600
    print(f"{len(sounds)} sound files, {hours:.2f} h, from {len(args.packages)} packages in {args.root}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
