"""The project's wheel, built from a clean copy of the checkout's files (an old build/ in the checkout,
left by an in-tree build, would leak packages into it), without network."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def checkout_files() -> list[str]:
    """Tracked and untracked-but-not-ignored files of the checkout (what a clean clone would hold)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (REPO / name).is_file()]


def build_wheel(work: Path) -> Path:
    """Copy the checkout's files under ``work/src`` and build the wheel into ``work``; its path."""
    source = work / "src"
    for name in checkout_files():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    command = [
        sys.executable,
        "-m",
        "pip",
        "wheel",
        "-q",
        "--no-deps",
        "--no-build-isolation",
        "-w",
        str(work),
    ]
    subprocess.run([*command, "-w", str(work), str(source)], check=True, capture_output=True, timeout=300)
    return next(work.glob("earshot-*.whl"))
