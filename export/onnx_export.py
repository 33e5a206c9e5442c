"""PyTorch classifier -> one self-contained FP32 ONNX file with a dynamic batch axis and earshot metadata.

The dynamo exporter (``torch.onnx.export(..., dynamo=True)``) handles every preset here, GRU and LSTM
included (they become native ONNX GRU/LSTM ops; a plain RNN is unrolled over the fixed window). The
TorchScript exporter is kept as a fallback for an architecture dynamo cannot trace, and the card
records which one ran.
"""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from edge_agent.model_metadata import INPUT_NAME, OUTPUT_NAME, ModelMetadata

logger = logging.getLogger(__name__)


def _export_dynamo(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """Dynamo export; its chatty progress lines go to the debug log, not the user's terminal."""
    batch = torch.export.Dim("batch", min=1, max=1024)
    chatter = io.StringIO()
    # "torchvision is not installed" notes from the op registry are noise for an audio model.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(chatter):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=True,
            external_data=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={INPUT_NAME: {0: batch}},
            verbose=False,
        )
    logger.debug("dynamo exporter said: %s", chatter.getvalue())


def _export_torchscript(model: nn.Module, example: torch.Tensor, path: Path) -> None:
    """The legacy TorchScript exporter, for architectures dynamo cannot trace."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            opset_version=17,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )


def export_fp32(model: nn.Module, n_mels: int, n_frames: int, path: Path) -> str:
    """Write ``model`` to ``path`` as FP32 ONNX; returns the exporter used ("dynamo" or "torchscript")."""
    model = model.eval()
    example = torch.zeros(2, 1, n_mels, n_frames)  # (batch, 1, n_mels, frames); 2 so batch is not specialised
    try:
        _export_dynamo(model, example, path)
        exporter = "dynamo"
    except Exception as error:  # noqa: BLE001 - dynamo raises many types; the fallback covers them all
        logger.warning(
            "dynamo exporter failed (%s: %s); falling back to the TorchScript exporter",
            type(error).__name__,
            str(error).splitlines()[0] if str(error) else "",
        )
        _export_torchscript(model, example, path)
        exporter = "torchscript"
    _inline_external_data(path)
    return exporter


def _inline_external_data(path: Path) -> None:
    """Fold any ``.onnx.data`` side file back in, so the model is exactly one file."""
    side_files = list(path.parent.glob(path.name + ".data")) + list(path.parent.glob(path.stem + ".data"))
    model = onnx.load(str(path), load_external_data=True)
    onnx.save(model, str(path), save_as_external_data=False)
    for side in side_files:
        side.unlink(missing_ok=True)


def attach_metadata(path: Path, metadata: ModelMetadata) -> None:
    """Replace the file's ``metadata_props`` with earshot's (quantization tools drop or rewrite them)."""
    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.to_props().items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "earshot export"
    onnx.save(model, str(path), save_as_external_data=False)


def assert_self_contained(path: Path) -> None:
    """Raise ValueError if any tensor of the model lives in an external data file."""
    model = onnx.load(str(path), load_external_data=False)
    external = [t.name for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if external:
        raise ValueError(f"{path} keeps {len(external)} tensors in external files (e.g. {external[0]})")
