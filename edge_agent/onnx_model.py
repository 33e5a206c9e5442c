"""The ``Model``: an ONNX classifier with its own metadata, run by onnxruntime on a pinned thread count."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

from edge_agent.frontend import FrontendParams
from edge_agent.model_card import CardCheck, ModelCardError, check_card
from edge_agent.model_metadata import INPUT_NAME, OUTPUT_NAME, ModelMetadata

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


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Element-wise logistic, float32, without overflow for large negative logits."""
    return (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)


def label_scores(logits: np.ndarray, scoring: str) -> np.ndarray:
    """(batch, n_classes) logits -> scores in [0, 1], by the model's ``earshot.scoring``."""
    return sigmoid(logits) if scoring == "sigmoid" else softmax(logits)


def open_session(
    model: bytes | str | Path, threads: int = 1, name: str | None = None
) -> ort.InferenceSession:
    """The one way earshot opens a model (agent, export, gate, bench): ``threads`` intra-op threads, one
    inter-op thread, ``SESSION_CONFIG``; ``model`` is the file's bytes (named by ``name``) or its path."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1  # the graph is a chain; a second pool only costs RSS
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # onnxruntime's own warnings would reach the user as noise
    for key, value in SESSION_CONFIG.items():
        options.add_session_config_entry(key, value)
    if threads == 1:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    source = model if isinstance(model, bytes) else str(model)
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own Fail/InvalidProtobuf/... types
        detail = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        where = name or (source if isinstance(source, str) else "<bytes>")
        raise ModelError(f"cannot load model {where}: not a valid ONNX model ({detail})") from None


# Checked from stat alone, before a byte is read: the file is read whole and onnxruntime holds about two
# more copies while it builds the session (next to the running model on a hot reload), under the unit's
# MemoryMax=400M. earshot's largest model (FP32 CRNN) is under 5 MB, so 64 MiB leaves room for growth and
# none for a wrong file (a 1 GiB file at the model path OOM-killed the agent).
MAX_MODEL_BYTES = 64 << 20


def _read_model(path: str | Path) -> bytes:
    """The model file's bytes; ModelError naming the file when it is missing, too big, unreadable or empty."""
    try:
        size = Path(path).stat().st_size
        if size > MAX_MODEL_BYTES:
            raise ModelError(
                f"model {path} is {size / 2**20:.0f} MiB, over the {MAX_MODEL_BYTES >> 20} MiB "
                "an earshot model can be; refusing to read it"
            )
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ModelError(f"model file not found: {path}") from None
    except OSError as error:
        raise ModelError(f"cannot read model {path}: {error.strerror or error}") from None
    if not data:
        raise ModelError(f"model file {path} is empty")
    return data


class OnnxModel:
    """A loaded earshot model: metadata, sha256, gate verdict, and ``logits(features)``."""

    def __init__(
        self, data: bytes, path: str, sha256: str, threads: int = 1, check: CardCheck | None = None
    ) -> None:
        self.path = path
        self.sha256 = sha256  # of ``data``: what the card and the gate record were checked against
        self.threads = threads
        self.check = check
        self.session = open_session(data, threads, name=path)
        props = self.session.get_modelmeta().custom_metadata_map
        try:
            self.metadata = ModelMetadata.from_props(props)
        except ValueError as error:
            raise ModelError(f"cannot use model {path}: {error}") from None
        self._check_io()

    @classmethod
    def load(
        cls, path: str | Path, threads: int = 1, allow_ungated: bool = False, verify_card: bool = True
    ) -> OnnxModel:
        """Read the file once, verify it against its card, then build the session.

        ``verify_card=False`` is for release tooling only: export measures a model before it has a card,
        and the gate checks the card itself before it writes the gate record.
        """
        data = _read_model(path)
        sha256 = hashlib.sha256(data).hexdigest()
        check = None
        if verify_card:
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
            raise ModelError(
                f"model {self.path} must take '{INPUT_NAME}' and give '{OUTPUT_NAME}', "
                f"got inputs {[i.name for i in inputs]}, outputs {[o.name for o in outputs]}"
            )
        expected = [1, p.n_mels, p.n_frames]
        actual = inputs[0].shape[1:]
        if any(isinstance(a, int) and a != e for a, e in zip(actual, expected, strict=True)):
            raise ModelError(
                f"model {self.path} expects input {inputs[0].shape}, but its front-end "
                f"metadata gives (batch, {', '.join(map(str, expected))})"
            )

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
        """(batch, 1, n_mels, frames) -> (batch, n_classes) label scores: softmax probabilities, or one
        sigmoid per label for a model whose metadata says ``scoring = sigmoid``."""
        return label_scores(self.logits(features), self.metadata.scoring)
