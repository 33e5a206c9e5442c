"""earshot export end to end: a tiny model trained here on synthetic clips in an UrbanSound8K layout."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import soundfile as sf
import torch

from edge_agent.frontend import FrontendParams, LogMel
from edge_agent.labels import URBANSOUND8K_LABELS
from edge_agent.model_card import card_path, file_sha256
from edge_agent.model_metadata import INPUT_NAME, OUTPUT_NAME, ModelMetadata
from edge_agent.onnx_model import ModelError, OnnxModel
from export.cli import main as export_main
from export.parity import ParityPolicy, parity_failures
from export.pipeline import ExportConfig, choose_precision, portable_path
from export.quantize import describe_ops
from training.checkpoint import Checkpoint, load_checkpoint
from training.models import architecture, build_model

PARAMS = FrontendParams(window_seconds=0.5, n_mels=32, f_max=4000.0)  # small windows: tests train in seconds
FOLDS = (1, 2, 3)
TEST_FOLD = 3
CLIPS_PER_CLASS = 3


def class_tone_hz(label: int) -> float:
    """Each class is a tone of its own pitch, spread over the mel range."""
    return 150.0 * 1.35**label


def synth_clip(label: int, seconds: float, rate: int, seed: int) -> np.ndarray:
    """A class tone with a little noise and a random phase: easy to learn, not trivially identical."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * class_tone_hz(label) * t + rng.uniform(0, 2 * np.pi))
    return (tone + rng.normal(0, 0.01, len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def us8k_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic clips in the official layout; lengths and rates vary as in the full dataset."""
    root = tmp_path_factory.mktemp("us8k")
    rows = []
    for fold in FOLDS:
        (root / "audio" / f"fold{fold}").mkdir(parents=True)
        for label, name in enumerate(URBANSOUND8K_LABELS):
            for k in range(CLIPS_PER_CLASS):
                rate = (16000, 22050, 16000)[k]
                seconds = (2.0, 1.5, 0.7)[k]  # the 0.7 s clip is looped up to one window
                file = f"{fold}{label}{k}-{label}-0-{k}.wav"
                sf.write(
                    root / "audio" / f"fold{fold}" / file,
                    synth_clip(label, seconds, rate, fold * 100 + k),
                    rate,
                )
                rows.append([file, f"{fold}{label}{k}", 0, seconds, 1, fold, label, name])
    (root / "metadata").mkdir()
    with (root / "metadata" / "UrbanSound8K.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"])
        writer.writerows(rows)
    return root


def train_windows(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-mel windows (n, 1, mels, frames) and labels of fresh synthetic clips."""
    labels = np.repeat(np.arange(len(URBANSOUND8K_LABELS)), 6)
    waves = np.stack(
        [
            synth_clip(int(c), PARAMS.window_seconds, PARAMS.sample_rate, seed + i)
            for i, c in enumerate(labels)
        ]
    )
    return torch.from_numpy(LogMel(PARAMS)(waves)), torch.from_numpy(labels)


def make_checkpoint(path: Path, arch: str, steps: int, fragile: bool = False, **overrides: object) -> Path:
    """Build a small preset, train it for ``steps`` Adam steps on synthetic log-mel, save a Checkpoint.

    ``fragile`` squeezes nine logits to within a hundredth of each other and parks the tenth far below:
    FP32 still ranks them, but one INT8 output step (range / 255) cannot, so INT8 must disagree.
    """
    torch.manual_seed(0)
    torch.set_num_threads(1)  # tiny tensors: extra threads only fight the other jobs on this CPU
    config = architecture(arch, **overrides)
    model = build_model(config, n_mels=PARAMS.n_mels, n_classes=len(URBANSOUND8K_LABELS))
    x, y = train_windows()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        optimiser.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        optimiser.step()
    if fragile:
        with torch.no_grad():
            model.head.weight.mul_(1e-3)
            model.head.bias.zero_()
            model.head.bias[-1] = -10.0
    thresholds = {label: 0.6 for label in URBANSOUND8K_LABELS}
    Checkpoint(
        config,
        PARAMS,
        URBANSOUND8K_LABELS,
        model.state_dict(),
        fold=TEST_FOLD,
        metrics={"accuracy": 1.0, "macro_f1": 1.0, "macro_recall": 1.0},
        train_config={"seed": 0},
        thresholds=thresholds,
    ).save(path)
    return path


def int8_args(checkpoint: Path, out: Path, root: Path, clips: int, *extra: str) -> list[str]:
    """``earshot export`` arguments for an INT8 export calibrated on ``clips`` clips of ``root``."""
    return [str(checkpoint), "--out", str(out), "--int8", "--calibration-data", str(root),
            "--calibration-clips", str(clips), *extra]  # fmt: skip


@pytest.fixture(scope="module")
def trained_cnn(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt") / "cnn.pt", "cnn", steps=120, conv_channels=(4, 8))


@pytest.fixture(scope="module")
def int8_export(trained_cnn: Path, us8k_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "street.onnx"
    named = ["--name", "street", "--version", "1.2.3", "--train-command", "earshot train --arch cnn"]
    assert export_main(int8_args(trained_cnn, out, us8k_root, 12, "--ship", "int8", *named)) == 0
    return out


def read_card(model: Path) -> dict:
    return json.loads(card_path(model).read_text())


def test_int8_export_writes_one_self_describing_file(int8_export: Path) -> None:
    model = onnx.load(str(int8_export), load_external_data=False)
    assert not list(int8_export.parent.glob("*.data"))
    assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    ops = {n.op_type for n in model.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # static QDQ
    sess = ort.InferenceSession(str(int8_export), providers=["CPUExecutionProvider"])
    meta = ModelMetadata.from_props(sess.get_modelmeta().custom_metadata_map)
    assert (meta.name, meta.version, meta.labels, meta.frontend) == (
        "street",
        "1.2.3",
        URBANSOUND8K_LABELS,
        PARAMS,
    )
    assert meta.thresholds["siren"] == 0.6 and meta.metrics["accuracy"] == 1.0
    assert [i.name for i in sess.get_inputs()] == [INPUT_NAME] and sess.get_outputs()[0].name == OUTPUT_NAME
    batch = LogMel(PARAMS)(np.stack([synth_clip(c, PARAMS.window_seconds, 16000, 99) for c in (0, 4, 8)]))
    logits = sess.run(None, {INPUT_NAME: batch})[0]  # dynamic batch axis: 3 windows at once
    assert logits.shape == (3, len(URBANSOUND8K_LABELS))
    assert list(logits.argmax(axis=1)) == [0, 4, 8]


def test_card_records_parity_speed_and_provenance(int8_export: Path, trained_cnn: Path) -> None:
    card = read_card(int8_export)
    assert card["sha256"] == file_sha256(int8_export) and card["size_bytes"] == int8_export.stat().st_size
    assert card["precision"] == "int8" and card["parity_passed"] and "gate" not in card
    assert card["max_abs_logit_diff"] < 1e-3
    assert card["int8_agreement"] >= 0.98 and card["fp32_accuracy"] - card["int8_accuracy"] <= 0.01
    assert card["fp32_accuracy"] > 0.9  # the tones are learnable: the held-out fold is really judged
    assert card["int8_vs_fp32_speedup"] > 0
    assert card["evaluation"]["heldout"] == f"fold {TEST_FOLD}"
    assert card["evaluation"]["heldout_clips"] == len(URBANSOUND8K_LABELS) * CLIPS_PER_CLASS
    assert (
        card["evaluation"]["calibration_folds"] and TEST_FOLD not in card["evaluation"]["calibration_folds"]
    )
    assert card["quantization"]["format"] == "QDQ" and card["quantization"]["per_channel"]
    assert "Conv" in card["quantization"]["int8_ops"]
    source = {"path": str(trained_cnn), "sha256": file_sha256(trained_cnn), "fold": TEST_FOLD}
    assert card["source_checkpoint"] == source  # absolute: the test's checkpoint is outside the tree
    assert card["command"].startswith("earshot export ") and "--int8" in card["command"]
    assert card["train_command"] == "earshot train --arch cnn"
    assert "CC BY-NC 3.0" in card["license"] and card["labels"] == list(URBANSOUND8K_LABELS)
    assert card["params"] > 0 and card["macs_per_window"] > card["params"]
    twin = int8_export.with_name(card["twin"]["path"])
    assert card["twin"]["precision"] == "fp32" and file_sha256(twin) == card["twin"]["sha256"]


def test_fp32_export_matches_pytorch_without_data(trained_cnn: Path, tmp_path: Path) -> None:
    out = tmp_path / "plain.onnx"
    assert export_main([str(trained_cnn), "--out", str(out)]) == 0
    card = read_card(out)
    assert card["precision"] == "fp32" and card["int8_accuracy"] is None and card["exporter"] == "dynamo"
    torch_model = load_checkpoint(trained_cnn).build()
    x = LogMel(PARAMS)(np.random.default_rng(1).normal(0, 0.1, (5, PARAMS.window_samples)).astype(np.float32))
    expected = torch_model(torch.from_numpy(x)).detach().numpy()
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {INPUT_NAME: x})[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_forced_parity_failure_exits_non_zero_and_writes_nothing(
    us8k_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fragile = make_checkpoint(tmp_path / "fragile.pt", "cnn", steps=120, fragile=True, conv_channels=(4, 8))
    out = tmp_path / "fragile.onnx"
    args = int8_args(fragile, out, us8k_root, 8, "--min-agreement", "1.0")  # forced: 100% agreement
    assert export_main(args) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the progress bars
    assert err.startswith("earshot export: parity check failed")
    assert "held-out clips (fold 3): INT8 top-1 agreement" in err  # which clips disagreed
    assert not out.exists() and not card_path(out).exists()
    assert export_main([*args, "--allow-parity-failure", "--twin-budget", "1"]) == 0
    card = read_card(out)
    assert not card["parity_passed"] and card["int8_agreement"] < 0.9
    assert card["twin"]["dropped"] and not list(tmp_path.glob("fragile.*.onnx"))  # over its byte budget


def test_checkpoint_path_is_relative_inside_the_working_tree(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # a repo checkout: the card must survive a clone elsewhere
    relative = portable_path(tmp_path / "training" / "best.pt", tmp_path / "edge_agent" / "models")
    assert relative == "../../training/best.pt"
    assert portable_path(Path("/elsewhere/best.pt"), tmp_path / "models") == "/elsewhere/best.pt"


def test_the_faster_precision_ships_unless_told(tmp_path: Path) -> None:
    def config(**kw: object) -> ExportConfig:
        return ExportConfig(tmp_path / "c.pt", tmp_path / "m.onnx", calibration_data=tmp_path, **kw)

    assert choose_precision(config(int8=True), {"int8_vs_fp32_speedup": 1.7})[0] == "int8"
    precision, why = choose_precision(config(int8=True), {"int8_vs_fp32_speedup": 0.9})
    assert precision == "fp32" and "slower" in why
    assert choose_precision(config(int8=True, ship="int8"), {"int8_vs_fp32_speedup": 0.9})[0] == "int8"
    assert choose_precision(config(), {"int8_vs_fp32_speedup": None})[0] == "fp32"


def test_parity_policy_names_each_failure() -> None:
    policy = ParityPolicy()
    good = {"max_abs_logit_diff": 1e-5, "int8_agreement": 0.99, "fp32_accuracy": 0.80, "int8_accuracy": 0.795}
    assert parity_failures(good, policy) == []
    bad = {"max_abs_logit_diff": 0.1, "int8_agreement": 0.97, "fp32_accuracy": 0.80, "int8_accuracy": 0.78}
    problems = parity_failures(bad, policy)
    assert len(problems) == 3 and "agreement" in problems[1] and "2.00 pp" in problems[2]
    named = parity_failures(bad, policy, "held-out clips (fold 10)")
    assert named[0] == problems[0]  # PyTorch vs ONNX: not one split's figure
    assert named[1:] == [f"held-out clips (fold 10): {reason}" for reason in problems[1:]]
    with pytest.raises(ValueError, match="min_agreement"):
        ParityPolicy(min_agreement=1.5)


def test_a_small_source_check_fails_only_on_more_than_one_clip() -> None:
    policy = ParityPolicy()
    one_flip = {"clips": 80, "fp32_accuracy": 0.725, "int8_accuracy": 0.7125, "int8_agreement": 79 / 80}
    assert parity_failures({"source_checks": {"esc10-fold4": one_flip}}, policy) == []
    two_flips = {**one_flip, "int8_accuracy": 0.70, "int8_agreement": 78 / 80}
    agreement, drop = parity_failures({"source_checks": {"esc10-fold4": two_flips}}, policy)
    assert agreement.startswith("esc10-fold4: INT8 top-1 agreement 97.50% < 98.00%")
    assert drop.startswith("esc10-fold4: INT8 accuracy drop 2.50 pp > 1.25 pp")
    # The held-out check gives no clip count: one clip of 80 there still fails the 1 pp bound.
    assert len(parity_failures({"fp32_accuracy": 0.725, "int8_accuracy": 0.7125}, policy)) == 1


@pytest.mark.parametrize(
    "args, message",
    [
        (["--int8"], "--int8 needs --calibration-data"),
        (["--calibration-data", "/nonexistent"], "is not a directory"),
    ],
)
def test_bad_input_is_one_clear_line(
    trained_cnn: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    assert export_main([str(trained_cnn), "--out", str(tmp_path / "m.onnx"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


def test_missing_or_foreign_checkpoint_is_one_clear_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    foreign = tmp_path / "foreign.pt"
    foreign.write_bytes(b"not a checkpoint")
    for path in (tmp_path / "absent.pt", foreign):
        assert export_main([str(path), "--out", str(tmp_path / "m.onnx")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("earshot export: error:") and "\n" not in err


def damage(model: Path, how: str, into: Path) -> Path:
    """A truncated copy, or one with bytes overwritten in the middle of the protobuf."""
    raw = model.read_bytes()
    into.write_bytes(raw[: len(raw) // 2] if how == "truncate" else raw[:64] + b"\xff" * 512 + raw[576:])
    return into


@pytest.mark.parametrize("how", ["truncate", "corrupt"])
def test_damaged_model_is_refused_by_the_agent_loader_in_one_line(
    int8_export: Path, tmp_path: Path, how: str
) -> None:
    # With its card beside it, the agent refuses the changed bytes before onnxruntime sees them.
    shutil.copy(card_path(int8_export), tmp_path / "street.card.json")
    broken = damage(int8_export, how, tmp_path / "street.onnx")
    with pytest.raises(ModelError, match="does not match its card") as refused:
        OnnxModel.load(broken, allow_ungated=True)
    assert "\n" not in str(refused.value)
    # Without a card (ungated run allowed), onnxruntime's parse failure becomes one clear line too.
    bare = damage(int8_export, how, tmp_path / "bare.onnx")
    with pytest.raises(ModelError, match="not a valid ONNX model") as invalid:
        OnnxModel.load(bare, allow_ungated=True)
    assert "\n" not in str(invalid.value)


def test_exported_model_loads_in_the_agent(int8_export: Path) -> None:
    model = OnnxModel.load(int8_export, allow_ungated=True)  # gated later by 'earshot gate'
    assert model.labels == URBANSOUND8K_LABELS and model.frontend == PARAMS
    assert model.sha256 == read_card(int8_export)["sha256"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "arch, overrides, method, int8_op, fp32_op",
    [
        # No INT8 GRU kernel exists in onnxruntime: the GRU stays FP32, the rest is static QDQ.
        ("gru", {"rnn_hidden": 16, "rnn_layers": 1}, "static", "Gemm", "GRU"),
        ("crnn", {"conv_channels": (4, 8), "rnn_hidden": 16}, "static", "Conv", "GRU"),
        # Static QDQ cannot take an LSTM: the whole model is quantized dynamically.
        ("lstm", {"rnn_hidden": 16, "rnn_layers": 1}, "dynamic", "DynamicQuantizeLSTM", "BatchNormalization"),
        # Mean+max pooling (a Concat) defeats onnxruntime's symbolic shape inference: the fallback runs.
        ("rescnn", {"conv_channels": (4, 8)}, "static", "Add", "BatchNormalization"),
    ],
)
def test_every_family_exports_and_quantizes(
    arch: str, overrides: dict, method: str, int8_op: str, fp32_op: str, us8k_root: Path, tmp_path: Path
) -> None:
    ckpt = make_checkpoint(tmp_path / f"{arch}.pt", arch, steps=15, **overrides)
    out = tmp_path / f"{arch}.onnx"
    assert export_main(int8_args(ckpt, out, us8k_root, 6, "--ship", "int8", "--allow-parity-failure")) == 0
    card = read_card(out)
    assert card["max_abs_logit_diff"] < 1e-3 and card["quantization"]["method"] == method
    int8_ops, fp32_ops = describe_ops(onnx.load(str(out)))
    assert int8_op in int8_ops and fp32_op in fp32_ops
    assert (list(int8_ops), list(fp32_ops)) == (
        card["quantization"]["int8_ops"],
        card["quantization"]["fp32_ops"],
    )
