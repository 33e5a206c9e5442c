"""FP32 ONNX -> INT8 with onnxruntime's tools: ``quant_pre_process``, then static QDQ (or dynamic for LSTM).

- Static QDQ, per-channel INT8 weights, UINT8 activations calibrated (MinMax) on real log-mel windows:
  every Conv, Gemm/MatMul, MaxPool, Add, Softmax... that onnxruntime's QDQ quantizer knows.
- A GRU stays FP32: onnxruntime has no INT8 GRU kernel, static or dynamic; the rest of the graph
  (a CRNN's convolutions, the head) is still quantized statically.
- An LSTM cannot be statically quantized, so a model holding one is quantized dynamically
  (``DynamicQuantizeLSTM`` + ``MatMulInteger``, weights INT8, activations quantized on the fly).
- The stem stays FP32 on purpose (``fp32_stem_nodes``): the input BatchNorm, and the first conv block
  (1 input channel). An INT8 conv with a 3x3x1 kernel is an im2col GEMM with K=9, several times slower
  than onnxruntime's FP32 NCHWc direct conv (measured: 108 vs 15 microseconds for 1->16 channels on
  64x61); quantizing from the second block on is where INT8 pays. This needs the agent's session to
  disable ``QDQPropagationTransformer`` (edge_agent.onnx_model.SESSION_CONFIG), or onnxruntime moves the first
  QuantizeLinear above the FP32 MaxPool and runs a slow NCHW uint8 MaxPool instead.
``describe_ops`` reports which op types run in INT8 and which stay FP32, for the model card.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

from edge_agent.model_metadata import INPUT_NAME

logger = logging.getLogger(__name__)

QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
# Op types that compute in INT8 by construction (dynamic quantization's fused kernels).
INTEGER_OPS = {
    "DynamicQuantizeLSTM",
    "MatMulInteger",
    "ConvInteger",
    "DynamicQuantizeMatMul",
    "DynamicQuantizeLinear",
    "QLinearConv",
    "QLinearMatMul",
    "QGemm",
}
# Ops that only move or reshape data: reported apart so "FP32 ops" lists real arithmetic.
PLUMBING_OPS = {
    "Shape",
    "Concat",
    "Slice",
    "Squeeze",
    "Unsqueeze",
    "Reshape",
    "Transpose",
    "Expand",
    "Gather",
    "Cast",
    "Constant",
    "Identity",
}


@dataclass(frozen=True)
class QuantizationInfo:
    """How a model was quantized, for the model card."""

    method: str  # "static" or "dynamic"
    format: str  # "QDQ" or "QOperator (dynamic)"
    per_channel: bool
    activation_type: str
    weight_type: str
    calibration_windows: int
    int8_ops: tuple[str, ...]
    fp32_ops: tuple[str, ...]

    def to_dict(self) -> dict:
        """Plain dict for JSON."""
        return {
            key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()
        }


class WindowReader(CalibrationDataReader):
    """Feeds calibration log-mel windows one at a time, as the agent will see them (batch 1)."""

    def __init__(self, windows: np.ndarray) -> None:
        self._windows = windows  # (n, 1, n_mels, frames) float32
        self._iter: Iterator[int] = iter(range(len(windows)))

    def get_next(self) -> dict[str, np.ndarray] | None:
        index = next(self._iter, None)
        return None if index is None else {INPUT_NAME: self._windows[index : index + 1]}

    def rewind(self) -> None:
        self._iter = iter(range(len(self._windows)))


def needs_dynamic(model_path: Path) -> bool:
    """True if the graph holds an LSTM, which static QDQ quantization cannot handle."""
    return any(node.op_type == "LSTM" for node in onnx.load(str(model_path)).graph.node)


def _preprocess(fp32_path: Path, work: Path) -> Path:
    """Shape inference + graph optimisation (BN folding) that ORT's quantizer expects first."""
    out = work / "pre.onnx"
    try:
        quant_pre_process(str(fp32_path), str(out), skip_symbolic_shape=False)
    except Exception as error:  # noqa: BLE001 - onnxruntime's symbolic shape tool fails in many ways
        # Its symbolic inference loses a Concat's input shapes (rescnn's mean+max pooling); ONNX's own
        # shape inference is all a fixed-window CNN/RNN needs.
        logger.info(
            "symbolic shape inference failed (%s: %s); using ONNX shape inference",
            type(error).__name__,
            error,
        )
        quant_pre_process(str(fp32_path), str(out), skip_symbolic_shape=True)
    return out


def quantize_int8(fp32_path: Path, out_path: Path, calibration: np.ndarray) -> QuantizationInfo:
    """Write the INT8 twin of ``fp32_path`` to ``out_path``; static QDQ unless an LSTM forces dynamic."""
    if len(calibration) == 0:
        raise ValueError("static quantization needs at least one calibration window")
    dynamic = needs_dynamic(fp32_path)
    with tempfile.TemporaryDirectory(prefix="earshot-quant-") as tmp:
        pre = _preprocess(fp32_path, Path(tmp))
        if dynamic:
            quantize_dynamic(str(pre), str(out_path), per_channel=True, weight_type=QuantType.QInt8)
        else:
            # U8 activations + S8 weights: what onnxruntime's x86 (VNNI) and ARM kernels both favour.
            quantize_static(
                str(pre),
                str(out_path),
                WindowReader(calibration),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=fp32_stem_nodes(onnx.load(str(pre))),
            )
    int8_ops, fp32_ops = describe_ops(onnx.load(str(out_path)))
    logger.info("quantized %s: INT8 %s, FP32 %s", out_path, int8_ops, fp32_ops)
    return QuantizationInfo(
        method="dynamic" if dynamic else "static",
        format="QOperator (dynamic)" if dynamic else "QDQ",
        per_channel=True,
        activation_type="uint8" if not dynamic else "uint8 (dynamic)",
        weight_type="int8",
        calibration_windows=0 if dynamic else len(calibration),
        int8_ops=int8_ops,
        fp32_ops=fp32_ops,
    )


def fp32_stem_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes kept FP32: unfused BatchNorms, and a single-input-channel first conv with the
    Relu/MaxPool chain right after it (INT8 loses there; see the module docstring)."""
    initializers = {t.name: t for t in model.graph.initializer}
    keep = [n.name for n in model.graph.node if n.op_type == "BatchNormalization"]
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    if not convs or convs[0].input[1] not in initializers or initializers[convs[0].input[1]].dims[1] != 1:
        return keep
    group = next((a.i for a in convs[0].attribute if a.name == "group"), 1)
    if group != 1:
        return keep
    keep.append(convs[0].name)
    tail = set(convs[0].output)
    for node in model.graph.node:  # nodes are topologically sorted, so one pass follows the chain
        if node.op_type in ("Relu", "MaxPool") and node.input[0] in tail:
            keep.append(node.name)
            tail = set(node.output)
    return keep


def describe_ops(model: onnx.ModelProto) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(op types wrapped in Q/DQ or integer by construction, arithmetic op types left FP32) of a graph.

    onnxruntime fuses a Q/DQ-wrapped node into an integer kernel where it has one (Conv, MatMul, Gemm,
    Add, MaxPool...); where it has none (Tanh) the node computes in float between INT8 tensors.
    """
    producers = {out: node for node in model.graph.node for out in node.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    initializers = {t.name for t in model.graph.initializer}
    int8, fp32 = set(), set()
    for node in model.graph.node:
        if node.op_type in QDQ_OPS or node.op_type in PLUMBING_OPS:
            continue
        if node.op_type in INTEGER_OPS or _is_qdq_wrapped(node, producers, consumers, initializers):
            int8.add(node.op_type)
        else:
            fp32.add(node.op_type)
    return tuple(sorted(int8)), tuple(sorted(fp32))


def _is_qdq_wrapped(node: onnx.NodeProto, producers: dict, consumers: dict, initializers: set[str]) -> bool:
    """A node runs in INT8 when its data input is dequantized, its output requantized, and no raw FP32
    weight feeds it (a GRU between quantized neighbours still holds FP32 W/R/B initializers)."""
    data_in = producers.get(node.input[0]) if node.input else None
    if data_in is None or data_in.op_type != "DequantizeLinear":
        return False
    if any(name in initializers for name in node.input[1:]):
        return False
    outs = consumers.get(node.output[0], [])
    return bool(outs) and all(c.op_type == "QuantizeLinear" for c in outs)
