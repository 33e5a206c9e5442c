"""Small real ONNX models and test audio, built without torch, for the agent's tests.

``band_energy_model`` writes a genuine ONNX graph carrying earshot metadata:
``logits = W @ mean_over_time(logmel) + b``. W is chosen so that each configured label scores by how
much its frequency band stands out from the whole spectrum: a ~1 kHz tone (or a siren-like sweep
around it) scores "siren" high, while silence and white noise score low.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import numpy as np
import onnx
import soundfile as sf
from onnx import TensorProto, helper, numpy_helper

from edge_agent.frontend import FrontendParams, _hz_to_mel, _mel_to_hz
from edge_agent.labels import URBANSOUND8K_LABELS
from edge_agent.model_card import card_path
from edge_agent.model_metadata import INPUT_NAME, OUTPUT_NAME, ModelMetadata

SIREN_BAND_HZ = (700.0, 1500.0)
DEFAULT_BANDS: dict[str, tuple[float, float]] = {"siren": SIREN_BAND_HZ}
OPSET = 17  # ReduceMean still takes axes as an attribute; any onnxruntime >= 1.14 runs it


def mel_centre_frequencies(params: FrontendParams) -> np.ndarray:
    """Centre frequency (Hz) of each mel filter, in filter order."""
    mel_points = np.linspace(
        _hz_to_mel(np.array(params.f_min)), _hz_to_mel(np.array(params.f_max)), params.n_mels + 2
    )
    return _mel_to_hz(mel_points[1:-1])


def band_weights(
    params: FrontendParams,
    labels: tuple[str, ...],
    bands: Mapping[str, tuple[float, float]],
    gain: float,
    offset: float,
) -> tuple[np.ndarray, np.ndarray]:
    """W (n_mels, n_classes) and b (n_classes,): label logit = gain * (band mean - overall mean) - offset."""
    centres = mel_centre_frequencies(params)
    weights = np.zeros((params.n_mels, len(labels)), dtype=np.float32)
    bias = np.zeros(len(labels), dtype=np.float32)
    for label, (low, high) in bands.items():
        column = labels.index(label)
        in_band = (centres >= low) & (centres <= high)
        if not in_band.any():
            raise ValueError(f"band {low}-{high} Hz for {label!r} holds no mel filter")
        weights[:, column] = gain * (in_band / in_band.sum() - 1.0 / params.n_mels)
        bias[column] = -offset
    return weights, bias


def _graph(weights: np.ndarray, bias: np.ndarray, params: FrontendParams, name: str) -> onnx.GraphProto:
    """ReduceMean over frames -> Flatten -> Gemm; dynamic batch."""
    n_classes = weights.shape[1]
    nodes = [
        helper.make_node("ReduceMean", [INPUT_NAME], ["mean"], axes=[3], keepdims=0),  # (batch, 1, n_mels)
        helper.make_node("Flatten", ["mean"], ["flat"], axis=1),  # (batch, n_mels)
        helper.make_node("Gemm", ["flat", "W", "b"], [OUTPUT_NAME]),  # (batch, n_classes)
    ]
    inputs = [
        helper.make_tensor_value_info(
            INPUT_NAME, TensorProto.FLOAT, ["batch", 1, params.n_mels, params.n_frames]
        )
    ]
    outputs = [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", n_classes])]
    initializers = [numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")]
    return helper.make_graph(nodes, name, inputs, outputs, initializers)


def band_energy_model(
    path: str | Path,
    *,
    params: FrontendParams | None = None,
    labels: tuple[str, ...] = URBANSOUND8K_LABELS,
    bands: Mapping[str, tuple[float, float]] | None = None,
    gain: float = 6.0,
    offset: float = 3.0,
    name: str = "band-energy",
    version: str = "test-1",
    thresholds: Mapping[str, float] | None = None,
    metadata: ModelMetadata | None = None,
) -> Path:
    """Write a band-energy ONNX classifier with earshot metadata; returns the path.

    ``metadata`` replaces the generated one (e.g. to test a mismatch); ``plain_onnx_model`` makes a
    foreign model with none.
    """
    params = params or FrontendParams()
    weights, bias = band_weights(params, labels, DEFAULT_BANDS if bands is None else bands, gain, offset)
    model = helper.make_model(
        _graph(weights, bias, params, name),
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="earshot-tests",
    )
    model.ir_version = 8
    meta = metadata or ModelMetadata(
        name=name,
        version=version,
        labels=labels,
        frontend=params,
        thresholds=dict(thresholds or {}),
        metrics={"accuracy": 0.0},
    )
    helper.set_model_props(model, meta.to_props())
    onnx.checker.check_model(model)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(path))
    return path


def plain_onnx_model(path: str | Path, params: FrontendParams | None = None) -> Path:
    """A valid ONNX model without earshot metadata (a foreign model the agent must refuse)."""
    band_energy_model(path, params=params)
    model = onnx.load(str(path))
    del model.metadata_props[:]
    onnx.save_model(model, str(path))
    return Path(path)


def sha256_of(path: str | Path) -> str:
    """Hex sha256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_card(
    model_path: str | Path,
    *,
    gate: bool | None = True,
    sha256: str | None = None,
    gate_sha256: str | None = None,
    extra: Mapping[str, object] | None = None,
) -> Path:
    """Write a model card matching ``model_path``.

    ``gate``: True -> a passing gate record for the file's sha256, False -> a failing one, None -> none.
    ``sha256``/``gate_sha256`` override the recorded hashes (to fake tampering or a stale gate).
    """
    model_path = Path(model_path)
    model = onnx.load(str(model_path))
    meta = ModelMetadata.from_props({p.key: p.value for p in model.metadata_props})
    actual = sha256_of(model_path)
    params = sum(int(np.prod(init.dims)) for init in model.graph.initializer)
    card: dict[str, object] = {
        "name": meta.name,
        "version": meta.version,
        "sha256": sha256 or actual,
        "size_bytes": model_path.stat().st_size,
        "params": params,
        "macs_per_window": params,
        "labels": list(meta.labels),
        "frontend": asdict(meta.frontend),
        "thresholds": meta.thresholds,
        "fp32_accuracy": None,
        "int8_accuracy": None,
        "int8_agreement": None,
        "int8_vs_fp32_speedup": None,
        "command": "tests/support/onnx_models.py (synthetic test model)",
        "license": "MIT",
    }
    if gate is not None:
        card["gate"] = {
            "passed": gate,
            "sha256": gate_sha256 or actual,
            "policy_sha256": "0" * 64,
            "figures": {},
        }
    card.update(extra or {})
    path = card_path(model_path)
    path.write_text(json.dumps(card, indent=2, sort_keys=True), encoding="utf-8")
    return path


# --- test audio ---------------------------------------------------------------------------------


def tone(freq_hz: float, seconds: float, sample_rate: int = 16000, amplitude: float = 0.5) -> np.ndarray:
    """A pure sine, float32 mono."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    return (amplitude * np.sin(2 * np.pi * freq_hz * t)).astype(np.float32)


def siren_sweep(
    seconds: float,
    sample_rate: int = 16000,
    low_hz: float = 800.0,
    high_hz: float = 1300.0,
    period_s: float = 1.0,
    amplitude: float = 0.5,
) -> np.ndarray:
    """A wailing siren-like tone: frequency swept sinusoidally between low and high, float32 mono."""
    t = np.arange(int(round(seconds * sample_rate))) / sample_rate
    mid, depth = (high_hz + low_hz) / 2, (high_hz - low_hz) / 2
    freq = mid + depth * np.sin(2 * np.pi * t / period_s)
    phase = 2 * np.pi * np.cumsum(freq) / sample_rate
    return (amplitude * np.sin(phase)).astype(np.float32)


def noise(seconds: float, sample_rate: int = 16000, amplitude: float = 0.1, seed: int = 0) -> np.ndarray:
    """Gaussian white noise, float32 mono, reproducible."""
    rng = np.random.default_rng(seed)
    return (amplitude * rng.standard_normal(int(round(seconds * sample_rate)))).astype(np.float32)


def silence(seconds: float, sample_rate: int = 16000) -> np.ndarray:
    """Digital silence, float32 mono."""
    return np.zeros(int(round(seconds * sample_rate)), dtype=np.float32)


def write_audio(
    path: str | Path, samples: np.ndarray, sample_rate: int = 16000, subtype: str | None = None
) -> Path:
    """Write (samples,) or (samples, channels) float audio; the format follows the suffix (wav/flac/ogg)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), np.asarray(samples), sample_rate, subtype=subtype)
    return path


def to_s16le(samples: np.ndarray) -> bytes:
    """float [-1, 1] (samples,) or (samples, channels) -> interleaved raw s16le bytes (stdin / ALSA file)."""
    clipped = np.clip(np.asarray(samples, dtype=np.float64), -1.0, 1.0)
    return (clipped * 32767.0).round().astype("<i2").tobytes()
