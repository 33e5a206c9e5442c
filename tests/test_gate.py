"""The release gate end to end on a tiny model: figures, plots, exit codes, and the card's gate record."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from support.gate_fixtures import export_with_card, train_tiny_checkpoint, write_datasets

from deploy.gate.cli import DEFAULT_POLICY, main
from deploy.gate.policy import FIGURE_BOUNDS, POLICY_KEYS, load_policy
from edge_agent.model_card import file_sha256, gate_problem

FAST_ATTACK = "[attack]\npgd_steps = 5\n"  # DeepFool keeps its 50 steps: it stops early per clip
PLOTS = ("accuracy_vs_snr.png", "deepfool_snr_hist.png", "corruption_accuracy.png", "spectrogram_pair.png")


def policy_text(weak: bool) -> str:
    """A complete policy every model passes (weak), or one no model can pass (strict)."""
    lines = ["[thresholds]"]
    for key in POLICY_KEYS:
        side, figure = key.split("_", 1)
        if figure == "attacked_clips":
            value = 1.0
        elif side == "min":
            value = 0.0 if weak else 1.01
        else:
            value = 1000.0 if weak else -1000.0
        lines.append(f"{key} = {value}")
    return "\n".join(lines) + "\n" + FAST_ATTACK


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Synthetic data, a tiny checkpoint, its INT8 ONNX export with card, and weak/strict policies."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core box: one thread is many times faster than two contending
    root = tmp_path_factory.mktemp("gate")
    us8k, esc10 = write_datasets(root)
    checkpoint = train_tiny_checkpoint(us8k, root / "tiny.pt", fold=2)
    model = export_with_card(checkpoint, root / "tiny.onnx")
    (root / "weak.toml").write_text(policy_text(weak=True))
    (root / "strict.toml").write_text(policy_text(weak=False))
    yield {"root": root, "us8k": us8k, "esc10": esc10, "checkpoint": checkpoint, "model": model}
    torch.set_num_threads(threads)


def fresh_model(world: dict[str, Path], tmp_path: Path) -> Path:
    """A copy of the ONNX model and its card, so a test may write the card."""
    shutil.copy(world["model"], tmp_path / "tiny.onnx")
    shutil.copy(world["model"].with_suffix(".card.json"), tmp_path / "tiny.card.json")
    return tmp_path / "tiny.onnx"


def gate(world: dict[str, Path], model: Path, policy: str, report: Path, *extra: str) -> int:
    """Run ``earshot gate`` on the synthetic data with a small class-balanced sample."""
    return main(
        [
            str(model),
            "--data-root",
            str(world["us8k"]),
            "--policy",
            str(world["root"] / policy),
            "--report",
            str(report),
            "--max-clips",
            "3",
            *extra,
        ]
    )


def figures_clean(report: dict) -> float:
    return report["figures"]["clean_accuracy"]


def test_weak_policy_passes_with_every_figure_and_plot_and_records_the_pass(world, tmp_path):
    model = fresh_model(world, tmp_path)
    assert gate(world, model, "weak.toml", tmp_path / "report") == 0
    report = json.loads((tmp_path / "report" / "report.json").read_text())
    assert report["passed"] is True
    assert set(report["figures"]) == set(FIGURE_BOUNDS)
    assert all(v is not None for v in report["figures"].values()), report["figures"]
    assert report["model"]["quantised"] is True
    assert report["clips"] == 3 and report["fold"] == 2
    interval = report["clean_accuracy_interval"]
    assert 0 <= interval["low"] <= figures_clean(report) <= interval["high"] <= 1
    assert 1 <= interval["recordings"] <= 3 and interval["method"] == "bootstrap over recordings"
    assert f"{interval['low']:.3f}-{interval['high']:.3f}" in (tmp_path / "report" / "report.md").read_text()
    for plot in PLOTS:
        assert (tmp_path / "report" / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "PASSED" in (tmp_path / "report" / "report.md").read_text()
    card = json.loads(model.with_suffix(".card.json").read_text())
    record = card["gate"]
    assert record["passed"] is True and record["sha256"] == file_sha256(model)
    assert record["policy_sha256"] == file_sha256(world["root"] / "weak.toml")
    assert record["figures"] == report["figures"] and record["created_at"]
    assert gate_problem(card, file_sha256(model)) == ""  # the agent now accepts it
    figures = report["figures"]
    for attack in ("linf", "l2"):  # a bigger budget (30 dB SNR) never leaves more clips standing than 40 dB
        assert figures[f"robust_accuracy_{attack}_30db"] <= figures[f"robust_accuracy_{attack}_40db"]
    assert 0 < figures["deepfool_median_snr_db"] < 120


def test_strict_policy_fails_and_leaves_the_card_alone(world, tmp_path, capsys):
    model = fresh_model(world, tmp_path)
    before = model.with_suffix(".card.json").read_text()
    assert gate(world, model, "strict.toml", tmp_path / "report") == 1
    out = capsys.readouterr().out
    assert "FAIL clean_accuracy" in out and "gate FAILED" in out
    assert model.with_suffix(".card.json").read_text() == before
    assert json.loads((tmp_path / "report" / "report.json").read_text())["passed"] is False


def test_checkpoint_is_judged_without_int8_figures(world, tmp_path):
    assert gate(world, world["checkpoint"], "weak.toml", tmp_path / "r") == 0
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["model"]["kind"] == "checkpoint"
    assert report["figures"]["int8_clean_accuracy"] is None
    assert any("no INT8" in note for note in report["notes"])
    assert {c["status"] for c in report["checks"] if c["figure"].startswith("int8")} == {"not measured"}


def one_line_error(capsys) -> str:
    """The error line (progress bars may precede it on stderr), with no traceback anywhere."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return err.strip().splitlines()[-1]


def test_tampered_model_is_an_error(world, tmp_path, capsys):
    model = fresh_model(world, tmp_path)
    model.write_bytes(model.read_bytes() + b"\0")
    assert gate(world, model, "weak.toml", tmp_path / "r") == 2
    assert "does not match its card" in one_line_error(capsys)


def test_wrong_source_checkpoint_is_an_error(world, tmp_path, capsys):
    other = train_tiny_checkpoint(world["us8k"], tmp_path / "other.pt", steps=1, seed=1)
    assert (
        gate(world, fresh_model(world, tmp_path), "weak.toml", tmp_path / "r", "--checkpoint", str(other))
        == 2
    )
    assert "not the one this model was exported from" in one_line_error(capsys)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--fold", "7"], "fold 7 is not in"),
        (["--noise-root", "/nonexistent/esc10"], "not an ESC-10 directory"),
    ],
)
def test_bad_data_is_an_error(world, tmp_path, capsys, args, message):
    assert gate(world, world["checkpoint"], "weak.toml", tmp_path / "r", *args) == 2
    assert message in one_line_error(capsys)


def test_bad_model_and_policy_are_errors(world, tmp_path, capsys):
    assert main([str(world["checkpoint"]), "--data-root", str(tmp_path)]) == 2
    assert "is not an UrbanSound8K directory" in one_line_error(capsys)
    assert gate(world, tmp_path / "missing.onnx", "weak.toml", tmp_path / "r") == 2
    assert "model not found" in one_line_error(capsys)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    assert gate(world, garbage, "weak.toml", tmp_path / "r") == 2
    assert "not a readable checkpoint" in one_line_error(capsys)
    (world["root"] / "typo.toml").write_text(
        policy_text(weak=True).replace("min_clean_accuracy", "min_clean_acuracy")
    )
    assert gate(world, world["checkpoint"], "typo.toml", tmp_path / "r") == 2
    assert "unknown policy key: thresholds.min_clean_acuracy" in one_line_error(capsys)


def test_shipped_policy_is_complete_and_parses():
    policy = load_policy(DEFAULT_POLICY)
    assert set(policy.thresholds) == set(FIGURE_BOUNDS)
    assert policy.attack.pgd_steps >= 20  # the shipped gate attacks in earnest
    assert np.isfinite(list(policy.thresholds.values())).all()


def test_a_model_trained_on_every_fold_is_judged_on_its_validation_split(world: dict[str, Path]) -> None:
    from deploy.gate.clips import held_out_records
    from training.checkpoint import load_checkpoint

    checkpoint = load_checkpoint(world["checkpoint"])
    checkpoint.fold = None
    checkpoint.train_config = {"val_fraction": 0.5, "seed": 0}
    records, source = held_out_records(world["us8k"], checkpoint, fold=None)
    assert source.startswith("validation split") and records
    all_records, _ = held_out_records(world["us8k"], checkpoint, fold=1)
    fold_two, _ = held_out_records(world["us8k"], checkpoint, fold=2)
    assert 0 < len(records) < len(all_records) + len(fold_two)
