#!/usr/bin/env python3
"""FP32 vs INT8 latency of CNN shapes, quantized with export's own tools: which architectures gain.

    python3 scripts/bench_int8_architectures.py                 # every shape below, 1 thread, batch 1
    python3 scripts/bench_int8_architectures.py --shapes cnn vgg --rounds 9

Each shape is built with the training code (random weights: speed does not depend on them), exported by
``export.onnx_export.export_fp32`` and quantized by ``export.quantize.quantize_int8`` (static QDQ,
per-channel, the first one-channel conv kept FP32), then timed as the agent runs it: ``open_session``
settings, one intra-op thread, batch 1. Rounds interleave FP32 and INT8 so that a busy neighbour slows
both alike; the medians and their ratio are printed, after a line naming the CPU and its INT8
dot-product instructions (``edge_agent.cpu_info``), which decide the ratio. The ratio grows with the MACs
spent in 3x3 convolutions on any CPU. With AVX-512 VNNI (an AMD EPYC VM, 2026-12-08) the shipped cnn
preset ran 2.11x; on the VM of 2026-12-01, whose flags were not recorded, it ran 1.33x.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from edge_agent.cpu_info import cpu_facts  # noqa: E402
from edge_agent.frontend import FrontendParams  # noqa: E402
from edge_agent.onnx_model import open_session  # noqa: E402
from export.onnx_export import export_fp32  # noqa: E402
from export.quantize import quantize_int8  # noqa: E402
from training.complexity import count_macs, count_params  # noqa: E402
from training.models import ModelConfig, build_model  # noqa: E402

SHAPES = {
    "cnn": ModelConfig("cnn", conv_channels=(12, 24, 48, 96), freq_reduce="flatten"),  # the shipped preset
    "cnn-wide": ModelConfig("cnn", conv_channels=(24, 48, 96, 192), freq_reduce="flatten"),
    "vgg": ModelConfig("cnn", conv_channels=(16, 32, 64, 128), convs_per_block=2, freq_reduce="flatten"),
    "vgg-wide": ModelConfig(
        "cnn", conv_channels=(32, 64, 128, 128), convs_per_block=2, freq_reduce="flatten", pooling="meanmax"
    ),
}
N_CLASSES = 11


def time_session(path: Path, window: np.ndarray, calls: int) -> float:
    """Milliseconds per call of one session, for ``calls`` calls after a warm-up."""
    session = open_session(path.read_bytes(), threads=1)
    name = session.get_inputs()[0].name
    for _ in range(20):
        session.run(None, {name: window})
    start = time.perf_counter()
    for _ in range(calls):
        session.run(None, {name: window})
    return (time.perf_counter() - start) * 1000 / calls


def bench_shape(name: str, rounds: int, calls: int, work: Path) -> dict:
    """Export, quantize and time one shape; medians over interleaved rounds."""
    params = FrontendParams()
    model = build_model(SHAPES[name], params.n_mels, N_CLASSES).eval()
    fp32, int8 = work / f"{name}.fp32.onnx", work / f"{name}.int8.onnx"
    export_fp32(model, params.n_mels, params.n_frames, fp32)
    rng = np.random.default_rng(0)
    calibration = rng.normal(-6.0, 2.0, (64, 1, params.n_mels, params.n_frames)).astype(np.float32)
    quantize_int8(fp32, int8, calibration)
    window = calibration[:1]
    times: dict[str, list[float]] = {"fp32": [], "int8": []}
    for _ in range(rounds):
        times["fp32"].append(time_session(fp32, window, calls))
        times["int8"].append(time_session(int8, window, calls))
    medians = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "shape": name,
        "params": count_params(model),
        "macs": count_macs(model, (1, params.n_mels, params.n_frames)),
        **medians,
        "ratio": medians["fp32"] / medians["int8"],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds per shape (default 5)")
    parser.add_argument("--calls", type=int, default=100, help="inferences per round (default 100)")
    args = parser.parse_args()
    facts = cpu_facts()
    print(f"CPU: {facts['cpu']}; INT8 dot product: {facts['int8_dot_product'] or 'none'}\n")
    print("| shape | params | M MACs/window | FP32 ms | INT8 ms | FP32/INT8 |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(prefix="earshot-int8-bench-") as tmp:
        for name in args.shapes:
            r = bench_shape(name, args.rounds, args.calls, Path(tmp))
            print(
                f"| {r['shape']} | {r['params']:,} | {r['macs'] / 1e6:.1f} | {r['fp32']:.3f} | "
                f"{r['int8']:.3f} | {r['ratio']:.2f}x |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
