"""A tiny checkpoint trained in seconds on training/synthetic.py's datasets, and its ONNX export with a
model card: what the gate and adversarial fine-tuning tests run on."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from edge_agent.frontend import FrontendParams
from edge_agent.labels import URBANSOUND8K_LABELS
from edge_agent.model_card import file_sha256
from edge_agent.model_metadata import INPUT_NAME, OUTPUT_NAME, ModelMetadata
from training.checkpoint import Checkpoint
from training.data import load_waveform, read_urbansound8k
from training.frontend import TorchLogMel
from training.models import architecture, build_model
from training.synthetic import write_esc10, write_urbansound8k

# A small front-end (half-second windows, 32 mels) keeps training and attacks to seconds.
TINY_FRONTEND = FrontendParams(window_seconds=0.5, n_fft=256, hop_length=128, n_mels=32)


def write_datasets(root: Path) -> tuple[Path, Path]:
    """training/synthetic.py's UrbanSound8K (folds 1-2, three classes, mixed formats) and ESC-10 dirs."""
    return (
        write_urbansound8k(root / "us8k", folds=(1, 2), per_class=4),
        write_esc10(root / "esc10", per_fold=1),
    )


def crops(
    data_root: Path, folds: tuple[int, ...], params: FrontendParams, per_clip: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random one-window crops of the clips in ``folds``: (n, samples) and their class indices (n,)."""
    waves, labels = [], []
    for record in (r for r in read_urbansound8k(data_root) if r.fold in folds):
        clip = load_waveform(record.path, params).numpy()
        for start in rng.integers(0, len(clip) - params.window_samples + 1, per_clip):
            waves.append(clip[start : start + params.window_samples])
            labels.append(record.label)
    return torch.from_numpy(np.stack(waves)), torch.tensor(labels)


def train_tiny_checkpoint(data_root: Path, path: Path, fold: int = 2, steps: int = 80, seed: int = 0) -> Path:
    """A 2-layer CNN trained on the other folds in a few seconds; held-out fold ``fold``."""
    torch.manual_seed(seed)
    params = TINY_FRONTEND
    config = architecture("cnn", conv_channels=(8, 16), dropout=0.0)
    model = build_model(config, params.n_mels, len(URBANSOUND8K_LABELS))
    folds = tuple(f for f in (1, 2) if f != fold)
    waves, labels = crops(data_root, folds, params, 8, np.random.default_rng(seed))
    with torch.no_grad():
        logmel = TorchLogMel(params)(waves)  # (n, 1, n_mels, frames)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        batch = torch.randint(0, len(labels), (32,))
        loss = torch.nn.functional.cross_entropy(model(logmel[batch]), labels[batch])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()
    Checkpoint(config, params, URBANSOUND8K_LABELS, model.state_dict(), fold=fold).save(path)
    return path


def export_with_card(checkpoint_path: Path, onnx_path: Path, quantise: bool = True) -> Path:
    """ONNX (dynamic INT8 when ``quantise``) with earshot metadata, and a card naming its checkpoint."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from training.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(checkpoint_path)
    model = checkpoint.build()
    params = checkpoint.frontend
    fp32 = onnx_path.with_suffix(".fp32.onnx")
    torch.onnx.export(
        model,
        torch.zeros(1, 1, params.n_mels, params.n_frames),
        str(fp32),
        dynamo=False,
        input_names=[INPUT_NAME],
        output_names=[OUTPUT_NAME],
        dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
    )
    if quantise:
        quantize_dynamic(str(fp32), str(onnx_path), weight_type=QuantType.QInt8)
    graph = onnx.load(str(onnx_path if quantise else fp32))
    props = ModelMetadata("tiny", "test-1", checkpoint.labels, params).to_props()
    onnx.helper.set_model_props(graph, props)
    onnx.save(graph, str(onnx_path))
    card = {
        "sha256": file_sha256(onnx_path),
        "size_bytes": onnx_path.stat().st_size,
        "labels": list(checkpoint.labels),
        "source_checkpoint": {"path": str(checkpoint_path), "sha256": file_sha256(checkpoint_path)},
    }
    onnx_path.with_suffix(".card.json").write_text(json.dumps(card, indent=2))
    return onnx_path
