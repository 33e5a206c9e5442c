"""Model loading: the card's tamper and gate checks, and one-line errors for broken or foreign models."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from support.onnx_models import band_energy_model, card_path, plain_onnx_model, tone, write_audio, write_card

from edge_agent.config import AgentConfig, AudioConfig
from edge_agent.frontend import FrontendParams
from edge_agent.metrics import AgentMetrics
from edge_agent.model_metadata import ModelMetadata
from edge_agent.onnx_model import ModelError, OnnxModel
from edge_agent.pipeline import Pipeline
from edge_agent.sources import open_source


@pytest.fixture()
def model(tmp_path: Path) -> Path:
    return band_energy_model(tmp_path / "m.onnx")


def test_a_gated_model_loads_with_its_metadata(model: Path) -> None:
    write_card(model)
    loaded = OnnxModel.load(model)
    assert loaded.check.gated and loaded.labels[8] == "siren"
    assert loaded.frontend == FrontendParams() and loaded.sha256 == loaded.check.card["sha256"]


def test_a_modified_model_is_refused_even_when_ungated_is_allowed(model: Path) -> None:
    write_card(model)
    data = bytearray(model.read_bytes())
    data[-1] ^= 0x01  # one flipped bit in a weight
    model.write_bytes(bytes(data))
    for allow in (False, True):
        refusal = r"does not match its card m\.card\.json.*refusing a modified model"
        with pytest.raises(ModelError, match=refusal):
            OnnxModel.load(model, allow_ungated=allow)


@pytest.mark.parametrize(
    ("gate", "gate_sha", "reason"),
    [
        (None, None, "the card has no gate record"),
        (False, None, "the release gate did not pass"),
        (True, "0" * 64, "the gate record is for a different file"),
    ],
)
def test_ungated_models_need_allow_ungated(
    model: Path, gate: bool | None, gate_sha: str | None, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    write_card(model, gate=gate, gate_sha256=gate_sha)
    with pytest.raises(ModelError, match=f"is not cleared to run: {reason}.*--allow-ungated"):
        OnnxModel.load(model)
    with caplog.at_level(logging.WARNING):
        loaded = OnnxModel.load(model, allow_ungated=True)
    assert not loaded.check.gated and reason in caplog.text


def test_no_card_means_ungated(model: Path) -> None:
    with pytest.raises(ModelError, match="not cleared to run: no model card"):
        OnnxModel.load(model)
    assert OnnxModel.load(model, allow_ungated=True).check.reason == "no model card"


def test_an_unreadable_card_is_an_error(model: Path) -> None:
    card_path(model).write_text("{not json")
    with pytest.raises(ModelError, match=r"model card .*m\.card\.json is unreadable"):
        OnnxModel.load(model, allow_ungated=True)


def test_ungated_runs_set_the_metric(tmp_path: Path, model: Path) -> None:
    audio = write_audio(tmp_path / "a.wav", tone(440, 1.0))
    metrics = AgentMetrics()
    loaded = OnnxModel.load(model, allow_ungated=True)
    config = AgentConfig(audio=AudioConfig(source=str(audio), fast=True))
    Pipeline(config, loaded, open_source(config.audio, 16000), metrics=metrics).run()
    assert metrics.registry.get_sample_value("earshot_model_ungated") == 1.0
    assert (
        metrics.registry.get_sample_value(
            "earshot_model_info", {"name": "band-energy", "version": "test-1", "sha256": loaded.sha256}
        )
        == 1.0
    )


def test_broken_model_files_are_one_line_errors(tmp_path: Path, model: Path) -> None:
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(model.read_bytes()[: model.stat().st_size // 2])
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(bytes(range(256)) * 8)
    (tmp_path / "empty.onnx").write_bytes(b"")
    cases = {
        tmp_path / "missing.onnx": "model file not found: ",
        tmp_path / "empty.onnx": "is empty",
        truncated: "not a valid ONNX model",
        garbage: "not a valid ONNX model",
        plain_onnx_model(tmp_path / "foreign.onnx"): "model has no earshot metadata",
    }
    for path, message in cases.items():
        with pytest.raises(ModelError) as caught:
            OnnxModel.load(path, allow_ungated=True)
        assert message in str(caught.value) and "\n" not in str(caught.value), path


def test_metadata_that_contradicts_the_graph_is_refused(tmp_path: Path) -> None:
    labels = tuple(f"c{i}" for i in range(10))
    says_40_mels = ModelMetadata("liar", "1", labels, FrontendParams(n_mels=40))
    path = band_energy_model(tmp_path / "liar.onnx", bands={}, labels=labels, metadata=says_40_mels)  # 64 in
    mismatch = r"expects input .* but its front-end metadata gives \(batch, 1, 40, 61\)"
    with pytest.raises(ModelError, match=mismatch):
        OnnxModel.load(path, allow_ungated=True)
