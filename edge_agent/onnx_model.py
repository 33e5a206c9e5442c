"""The ``Model``: an ONNX classifier with its own metadata, run by onnxruntime on a pinned thread count.

The log-mel front-end runs in numpy (``StreamingLogMel``). Measured on this project's 2-core x86 box,
the front-end of one 1 s window costs ~0.6 ms while a small model costs ~0.01-1 ms, so the front-end is
worth optimising: consecutive windows on a hop that is a whole number of STFT hops share all but
``hop / stft_hop`` frames, and only those new frames are computed.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_agent.frontend import FrontendParams, LogMel
from edge_agent.model_card import CardCheck, ModelCardError, check_card
from edge_agent.model_metadata import INPUT_NAME, OUTPUT_NAME, ModelMetadata
from edge_agent.windowing import Window

logger = logging.getLogger(__name__)

# Set on every session; export measures INT8 speed with the same. An earshot INT8 model keeps its first
# conv block FP32 (faster there); onnxruntime's QDQ propagation would otherwise hoist the first
# QuantizeLinear above that block's FP32 MaxPool and run a slow NCHW uint8 MaxPool (export/quantize.py).
SESSION_CONFIG = {"optimization.disable_specified_optimizers": "QDQPropagationTransformer"}


class ModelError(ValueError):
    """The model cannot be used (missing, truncated, corrupt, foreign, refused); one-line message."""


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, float32."""
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)


class StreamingLogMel:
    """Log-mel of successive windows on one hop grid, reusing the STFT frames they share.

    Frames come from ``edge_agent.frontend.LogMel.frames``, the one numpy definition of the front-end;
    tests/test_frontend_parity.py checks it against torchaudio.
    """

    def __init__(self, params: FrontendParams, hop_samples: int) -> None:
        self.params = params
        self.frames = LogMel(params).frames  # (samples,) -> (frames, n_mels)
        aligned = hop_samples % params.hop_length == 0 and hop_samples < params.window_samples
        self.new_frames = hop_samples // params.hop_length if aligned else params.n_frames
        self._previous: np.ndarray | None = None  # (n_frames, n_mels) of the last window
        self._previous_index = -2

    def __call__(self, window: Window) -> np.ndarray:
        """One window -> (1, 1, n_mels, n_frames) float32 model input."""
        p = self.params
        reuse = (self._previous is not None and not window.padded and self.new_frames < p.n_frames
                 and window.index == self._previous_index + 1)
        if reuse:
            tail = window.samples[(p.n_frames - self.new_frames) * p.hop_length:]
            kept = self._previous[self.new_frames:]  # (n_frames - new_frames, n_mels)
            logmel = np.concatenate([kept, self.frames(tail)])  # (n_frames, n_mels)
        else:
            logmel = self.frames(window.samples)  # (n_frames, n_mels)
        self._previous, self._previous_index = (None, -2) if window.padded else (logmel, window.index)
        return np.ascontiguousarray(logmel.T)[None, None]  # (1, 1, n_mels, n_frames)


def _session(data: bytes, path: str, threads: int) -> ort.InferenceSession:
    """An onnxruntime session pinned to ``threads`` intra-op threads and one inter-op thread."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # the graph is a chain; a second pool only costs RSS
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # onnxruntime's own warnings would reach the user as noise
    for key, value in SESSION_CONFIG.items():
        options.add_session_config_entry(key, value)
    if threads == 1:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ModelError(f"cannot load model {path}: not a valid ONNX model ({detail})") from None


class OnnxModel:
    """A loaded earshot model: metadata, sha256, gate verdict, and ``logits(features)``."""

    def __init__(self, data: bytes, path: str, sha256: str, threads: int = 1,
                 check: CardCheck | None = None) -> None:
        self.path = path
        self.sha256 = sha256  # of ``data``: what the card and the gate record were checked against
        self.threads = threads
        self.check = check
        self.session = _session(data, path, threads)
        props = self.session.get_modelmeta().custom_metadata_map
        try:
            self.metadata = ModelMetadata.from_props(props)
        except ValueError as error:
            raise ModelError(f"cannot use model {path}: {error}") from None
        self._check_io()

    @classmethod
    def load(cls, path: str | Path, threads: int = 1, allow_ungated: bool = False) -> OnnxModel:
        """Read the file once, verify it against its card, then build the session."""
        try:
            data = Path(path).read_bytes()
        except FileNotFoundError:
            raise ModelError(f"model file not found: {path}") from None
        except OSError as error:
            raise ModelError(f"cannot read model {path}: {error.strerror or error}") from None
        if not data:
            raise ModelError(f"model file {path} is empty")
        sha256 = hashlib.sha256(data).hexdigest()
        try:
            check = check_card(path, sha256, allow_ungated)
        except ModelCardError as error:
            raise ModelError(str(error)) from None
        return cls(data, str(path), sha256, threads, check)

    def _check_io(self) -> None:
        """The graph's input/output must match what the metadata promises."""
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        p = self.metadata.frontend
        if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in [o.name for o in outputs]:
            raise ModelError(f"model {self.path} must take '{INPUT_NAME}' and give '{OUTPUT_NAME}', "
                             f"got inputs {[i.name for i in inputs]}, outputs {[o.name for o in outputs]}")
        expected = [1, p.n_mels, p.n_frames]
        actual = inputs[0].shape[1:]
        if any(isinstance(a, int) and a != e for a, e in zip(actual, expected, strict=True)):
            raise ModelError(f"model {self.path} expects input {inputs[0].shape}, but its front-end "
                             f"metadata gives (batch, {', '.join(map(str, expected))})")

    @property
    def labels(self) -> tuple[str, ...]:
        """Class labels in output order."""
        return self.metadata.labels

    @property
    def frontend(self) -> FrontendParams:
        """The front-end parameters the model was trained with."""
        return self.metadata.frontend

    def logits(self, features: np.ndarray) -> np.ndarray:
        """(batch, 1, n_mels, frames) float32 log-mel -> (batch, n_classes) float32 logits."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: features})[0]

    def scores(self, features: np.ndarray) -> np.ndarray:
        """(batch, 1, n_mels, frames) -> (batch, n_classes) softmax probabilities."""
        return softmax(self.logits(features))
