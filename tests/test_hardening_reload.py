"""Hot reload never reads a file that cannot be a model (issue 11, item 17): a 1 GiB file at the model path
is refused from its size alone, under a memory limit, and the running model keeps working."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support.onnx_models import band_energy_model, write_card

from edge_agent.model_card import card_path
from edge_agent.model_reload import unread_problem

ROOT = Path(__file__).resolve().parents[1]

# Runs in a child: load the live model, cap the address space a little above what the process already
# uses (as the unit's MemoryMax would), replace the file by a sparse 1 GiB one, and check for a reload.
CHILD = textwrap.dedent("""
    import json, logging, os, resource, sys, types
    import numpy as np
    from edge_agent.metrics import AgentMetrics
    from edge_agent.model_reload import ModelReloader
    from edge_agent.onnx_model import OnnxModel

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    path = sys.argv[1]
    model = OnnxModel.load(path)
    offered = []
    pipeline = types.SimpleNamespace(model=model, metrics=AgentMetrics(), offer_model=offered.append)
    reloader = ModelReloader(pipeline, path, 1, False, 5.0)
    os.truncate(path, 1 << 30)
    vm = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmSize:"))
    resource.setrlimit(resource.RLIMIT_AS, ((vm << 10) + (256 << 20),) * 2)

    def rchar():
        return next(int(line.split()[1]) for line in open("/proc/self/io") if line.startswith("rchar:"))

    before = rchar()
    outcome = {"changed": reloader.check(), "forced": reloader.check(forced=True)}
    outcome["read_bytes"] = rchar() - before
    outcome["offered"] = len(offered)
    outcome["failed"] = pipeline.metrics.registry.get_sample_value(
        "earshot_model_reloads_total", {"result": "failed"})
    outcome["still_scores"] = model.scores(np.zeros((1, 1, model.frontend.n_mels, model.frontend.n_frames),
                                                    np.float32)).shape[1] == len(model.labels)
    print(json.dumps(outcome))
""")


@pytest.mark.skipif(not Path("/proc/self/io").exists(), reason="needs Linux /proc/self/io")
def test_a_1_gib_file_at_the_model_path_is_refused_unread(tmp_path: Path) -> None:
    live = band_energy_model(tmp_path / "live.onnx")
    write_card(live)
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(live)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=120,
    )
    assert child.returncode == 0, child.stderr[-3000:]
    outcome = json.loads(child.stdout)
    assert outcome == {
        "changed": False,
        "forced": False,
        "read_bytes": outcome["read_bytes"],
        "offered": 0,
        "failed": 2.0,
        "still_scores": True,
    }, child.stderr[-3000:]
    assert outcome["read_bytes"] < 1 << 20, "the 1 GiB file was read"
    refusals = [line for line in child.stderr.splitlines() if "refused" in line]
    assert len(refusals) == 2 and all("1024 MiB" in line for line in refusals), child.stderr[-3000:]
    assert "Traceback" not in child.stderr and "MemoryError" not in child.stderr, child.stderr[-3000:]


def test_a_file_unlike_its_card_or_without_one_is_refused_unread(tmp_path: Path) -> None:
    live = band_energy_model(tmp_path / "live.onnx")
    write_card(live)
    assert unread_problem(live, allow_ungated=False) == ""
    with live.open("ab") as handle:
        handle.write(b"\0" * 10)  # still being copied, or modified after its card was written
    assert "does not match its card" in unread_problem(live, allow_ungated=False)
    card_path(live).unlink()
    assert "has no card" in unread_problem(live, allow_ungated=False)
    assert unread_problem(live, allow_ungated=True) == ""


def test_a_huge_file_at_start_is_refused_in_one_line_without_reading_it(tmp_path: Path) -> None:
    huge = tmp_path / "huge.onnx"
    with huge.open("wb") as handle:
        handle.truncate(1 << 30)  # sparse: 1 GiB that costs no disk
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "agent",
            "--model",
            str(huge),
            "--source",
            str(huge),
            "--fast",
            "--mqtt",
            "none",
            "--allow-ungated",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert result.returncode == 2, result.stderr
    expected = f"model {huge} is 1024 MiB, over the 64 MiB an earshot model can be; refusing to read it"
    assert result.stderr.strip() == f"earshot agent: {expected}"
