"""Multi-process training through torchrun + DistributedDataParallel, on the CPU with the gloo backend."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from training.checkpoint import load_checkpoint
from training.synthetic import write_urbansound8k


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_torchrun_two_cpu_processes_train_and_only_rank0_writes(tmp_path: Path) -> None:
    data = write_urbansound8k(tmp_path / "urbansound8k", folds=(1, 2), per_class=3)
    out = tmp_path / "out"
    env = {**os.environ, "EARSHOT_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    command = [
        "torchrun",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "training.cli",
        "--data-root",
        str(data),
        "--arch",
        "rnn",
        "--folds",
        "1",
        "--epochs",
        "2",
        "--crops-per-clip",
        "1",
        "--batch-size",
        "4",
        "--device",
        "cpu",
        "--ema-decay",  # each rank averages its own copy; rank 0's BatchNorm statistics are validated
        "0.9",
        "--out",
        str(out),
    ]
    done = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=240, cwd=Path(__file__).resolve().parents[1]
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "gloo process group as rank 1 of 2" in done.stderr
    report = json.loads((out / "rnn" / "report.json").read_text())
    assert list(report["folds"]) == ["1"] and report["folds"]["1"]["epochs_run"] == 2
    checkpoint = load_checkpoint(out / "rnn" / "rnn-fold1.pt")
    assert checkpoint.fold == 1 and not any(k.startswith("module.") for k in checkpoint.state_dict)
    assert checkpoint.train_config["ema_decay"] == 0.9
