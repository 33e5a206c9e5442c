"""``earshot train --sources``: several sources, an open-set ``other`` class, no test group trained."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_agent.config import load_config
from edge_agent.frontend import FrontendParams
from edge_agent.labels import URBANSOUND8K_LABELS
from edge_agent.model_card import card_path
from edge_agent.onnx_model import OnnxModel
from export.cli import main as export_main
from export.parity import ParityPolicy, parity_failures
from training.adversarial import split_records
from training.catalog import STREET_EXTRA, read_source
from training.checkpoint import load_checkpoint
from training.cli import main as train_main
from training.cross_source import resolve_split, street_extra_partition
from training.data import ClipFeatures, concat_features
from training.evaluate.calibrate import calibrate_label, thresholds_toml
from training.evaluate.cli import main as evaluate_main
from training.evaluate.report import at_budget
from training.run import load_sources_corpus
from training.sources import OPEN_SET_LABELS, OTHER, TRAIN_ONLY_FOLD, parse_sources, training_labels
from training.splits import split_for_checkpoint
from training.synthetic import write_esc10, write_street_extra, write_urbansound8k

PARAMS = FrontendParams()
TINY_FLAGS = "--arch cnn --epochs 2 --crops-per-clip 1 --batch-size 8 --threads 1 --device cpu".split()


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """UrbanSound8K (folds 1-2), ESC-10 and street-extra side by side, as in ../shared/data."""
    root = tmp_path_factory.mktemp("shared-data")
    write_urbansound8k(root / "urbansound8k-subset", folds=(1, 2), per_class=2)
    write_esc10(root / "esc10", per_fold=1)
    write_street_extra(root / "street-extra")
    return root


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EARSHOT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_sources_parse_aliases_and_reject_typos() -> None:
    assert parse_sources("us8k, street-extra,esc10,us8k") == ("urbansound8k", "street-extra", "esc10")
    assert training_labels(("urbansound8k",)) == URBANSOUND8K_LABELS
    assert training_labels(("urbansound8k", "esc10"))[-1] == OTHER
    with pytest.raises(ValueError, match="unknown source 'us9k'"):
        parse_sources("us9k")


def test_concat_features_keeps_each_clip() -> None:
    a = ClipFeatures(torch.arange(6.0).reshape(1, 6), torch.tensor([0, 2, 6]), ["a0", "a1"])  # type: ignore[list-item]
    b = ClipFeatures(torch.arange(3.0).reshape(1, 3), torch.tensor([0, 3]), ["b0"])  # type: ignore[list-item]
    both = concat_features([a.subset([1]), b])
    assert both.records == ["a1", "b0"]
    assert both.clip(0).tolist() == [[2.0, 3.0, 4.0, 5.0]] and both.clip(1).tolist() == [[0.0, 1.0, 2.0]]


def test_street_extra_test_groups_never_reach_training(data_root: Path) -> None:
    corpus = load_sources_corpus(
        data_root, ("urbansound8k", "street-extra", "esc10"), data_root / "esc10", PARAMS
    )
    trained = {r.path.resolve() for r in corpus.clips.records}
    test = resolve_split("street-extra-test").select(read_source(data_root, STREET_EXTRA))
    _, held_out = street_extra_partition(read_source(data_root, STREET_EXTRA))
    assert test and {c.path.resolve() for c in test}.isdisjoint(trained)
    assert {c.group for c in held_out} == {c.group for c in test}
    street = [r for r in corpus.clips.records if r.group.startswith("street-extra:")]
    assert street and all(r.fold == TRAIN_ONLY_FOLD for r in street)
    names = {OPEN_SET_LABELS[r.label] for r in street}
    assert names == {"siren", "gun_shot", OTHER}  # negatives are ``other``; targets keep their US8K labels
    esc = [r for r in corpus.clips.records if r.group.startswith("esc10:")]
    assert esc and all(OPEN_SET_LABELS[r.label] == OTHER for r in esc)
    assert all("dog_bark" not in r.path.name for r in esc)  # an ESC-10 class that is one of ours
    assert {int(r.path.name.split("-")[1]) for r in esc} == {1, 2, 3}  # folds 4-5 stay out of training


@pytest.fixture(scope="module")
def open_set_checkpoint(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny 11-label model trained for seconds on all three sources."""
    out = tmp_path_factory.mktemp("open-set")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("EARSHOT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        code = train_main(
            [
                "--data-root",
                str(data_root),
                "--sources",
                "us8k,street-extra,esc10",
                "--all-folds",
                *TINY_FLAGS,
                "--out",
                str(out),
            ]
        )
    assert code == 0
    return out / "default" / "cnn.pt"


def test_several_sources_train_an_open_set_model(open_set_checkpoint: Path) -> None:
    out = open_set_checkpoint.parent.parent
    checkpoint = load_checkpoint(open_set_checkpoint)
    assert checkpoint.labels == OPEN_SET_LABELS
    assert OTHER not in checkpoint.thresholds and list(checkpoint.thresholds)[:2] == ["siren", "gun_shot"]
    model = checkpoint.build()
    assert model(torch.zeros(2, 1, PARAMS.n_mels, PARAMS.n_frames)).shape == (2, 11)  # (batch, classes)
    report = json.loads((out / "default" / "report.json").read_text())
    assert report["labels"][-1] == OTHER and report["folds_used"] == [1, 2]


def test_cross_validation_tests_only_on_urbansound8k_folds(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "cv"
    code = train_main(
        [
            "--data-root",
            str(data_root),
            "--sources",
            "us8k,street-extra",
            "--folds",
            "2",
            *TINY_FLAGS,
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads((out / "cnn" / "report.json").read_text())
    assert list(report["folds"]) == ["2"] and len(report["mean_per_class_recall"]) == 11
    # Adversarial fine-tuning of this fold model keeps every source it trained on and is judged on fold 2.
    split = split_records(data_root, load_checkpoint(out / "cnn" / "cnn-fold2.pt"))
    assert split.heldout_name == "fold 2" and split.heldout
    assert all(r.fold == 2 and not r.group.startswith("street-extra:") for r in split.heldout)
    assert not [r for r in split.train if r.fold == 2]
    street = [r for r in split.train if r.group.startswith("street-extra:")]
    assert street and OPEN_SET_LABELS.index(OTHER) in {r.label for r in street}


def test_single_urbansound8k_form_is_unchanged(data_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "old"
    code = train_main(
        ["--data-root", str(data_root / "urbansound8k-subset"), "--all-folds", *TINY_FLAGS, "--out", str(out)]
    )
    assert code == 0
    assert load_checkpoint(out / "default" / "cnn.pt").labels == URBANSOUND8K_LABELS


def test_bad_sources_are_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        train_main(["--data-root", str(tmp_path), "--sources", "us8k,nope"])
    assert exit_info.value.code == 2 and "unknown source 'nope'" in capsys.readouterr().err
    assert train_main(["--data-root", str(tmp_path), "--sources", "us8k", "--all-folds", *TINY_FLAGS]) == 2


@pytest.fixture(scope="module")
def open_set_onnx(open_set_checkpoint: Path) -> Path:
    """The tiny 11-label model exported to FP32 ONNX by ``earshot export``."""
    model = open_set_checkpoint.parent / "candidate.onnx"
    assert export_main([str(open_set_checkpoint), "--out", str(model)]) == 0
    return model


def test_export_agent_and_evaluate_read_the_extra_label(
    open_set_onnx: Path, data_root: Path, tmp_path: Path
) -> None:
    model = open_set_onnx
    loaded = OnnxModel.load(model, threads=1, allow_ungated=True)
    assert loaded.metadata.labels[-1] == OTHER and "other" not in loaded.metadata.thresholds
    config = tmp_path / "agent.toml"
    config.write_text("[detector]\ncooldown_s = 1.0\nend_after_s = 0.5\n")
    code = evaluate_main(
        [
            "--model",
            str(model),
            "--config",
            str(config),
            "--data-root",
            str(data_root),
            "--splits",
            "street-extra-test",
            "esc10-fold5",
            "--out",
            str(tmp_path / "eval"),
            "--json",
            "--no-progress",
        ]
    )
    assert code == 0
    data = json.loads((tmp_path / "eval" / "evaluate.json").read_text())
    splits = {s["name"]: s for s in data["splits"]}
    assert set(splits["street-extra-test"]["labels"]) == {"siren", "gun_shot"}  # ``other`` never alerts
    assert splits["street-extra-test"]["target_events"] > 0 and splits["esc10-fold5"]["target_events"] == 0


def test_operating_point_at_a_false_alarm_budget() -> None:
    def point(threshold: float, recall: float, per_hour: float) -> dict:
        return {"threshold": threshold, "recall": recall, "false_alerts_per_hour": per_hour}

    curve = [point(0.3, 0.9, 4.0), point(0.5, 0.7, 0.0), point(0.7, 0.7, 0.0)]
    assert at_budget(curve, 1.0)["threshold"] == 0.7  # same recall: the higher threshold
    assert at_budget(curve, 5.0)["recall"] == 0.9
    assert at_budget(curve[:1], 1.0) is None


def _curve(*points: tuple[float, float, int]) -> list[dict]:
    return [{"threshold": t, "false_alerts_per_hour": rate, "false_alerts": n} for t, rate, n in points]


def test_calibration_refuses_too_few_hours_and_never_dips_into_a_violation(tmp_path: Path) -> None:
    curve = _curve((0.3, 2.0, 8), (0.5, 0.5, 2), (0.6, 1.5, 6), (0.7, 0.5, 2), (0.9, 0.0, 0))
    entry = calibrate_label(curve, hours=4.0, budget=1.0)
    assert entry["threshold"] == 0.7  # 0.5 is within budget, but 0.6 above it is not
    refused = calibrate_label(curve, hours=0.42, budget=1.0)
    assert refused["threshold"] is None and "needs >= 3 h" in refused["refused"]
    assert calibrate_label(_curve((0.9, 5.0, 20)), hours=4.0, budget=1.0)["threshold"] is None
    toml = thresholds_toml({"siren": entry, "gun_shot": refused})
    assert "siren = 0.7  # 2 false alerts in 4.00 h" in toml and "# gun_shot: refused" in toml
    fragment = tmp_path / "thresholds.toml"
    fragment.write_text(toml)
    assert load_config(fragment).detector.thresholds == {"siren": 0.7}  # the agent reads it as config


def test_evaluate_calibrate_writes_thresholds_or_refuses(
    open_set_onnx: Path, data_root: Path, tmp_path: Path
) -> None:
    model = open_set_onnx
    out = tmp_path / "cal"
    code = evaluate_main(
        [
            "--model",
            str(model),
            "--data-root",
            str(data_root),
            "--splits",
            "esc10-fold5",
            "--calibrate",
            "1",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    assert "# siren: refused" in (out / "thresholds.toml").read_text()  # seconds of audio resolve no 1/h


def test_the_card_names_every_training_source_and_its_licence(open_set_onnx: Path) -> None:
    card = json.loads(card_path(open_set_onnx).read_text())
    sources = {entry["source"]: entry for entry in card["training_sources"]}
    assert list(sources) == ["urbansound8k", "street-extra", "esc10"]
    assert sources["urbansound8k"]["license"] == "CC BY-NC 3.0" and sources["esc10"]["license"] == "CC BY 3.0"
    assert (
        "non-commercial use only" in card["license"] and "street-extra: no licence stated" in card["license"]
    )
    assert card["thresholds_source"] == "checkpoint"


def test_export_ships_calibrated_thresholds_with_their_hours(
    open_set_checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    thresholds = tmp_path / "thresholds.toml"
    thresholds.write_text(
        "[detector.thresholds]\nsiren = 0.7  # 2 false alerts in 3.10 h\n# gun_shot: refused, 0.2 h\n"
    )
    model = tmp_path / "calibrated.onnx"
    assert export_main([str(open_set_checkpoint), "--out", str(model), "--thresholds", str(thresholds)]) == 0
    metadata = OnnxModel.load(model, threads=1, allow_ungated=True).metadata
    before = load_checkpoint(open_set_checkpoint).thresholds
    assert metadata.thresholds == {**before, "siren": 0.7}  # the file's labels replace, the rest stay
    provenance = json.loads(card_path(model).read_text())["thresholds_source"]
    assert provenance["notes"] == ["siren = 0.7  # 2 false alerts in 3.10 h", "# gun_shot: refused, 0.2 h"]
    for bad, message in (
        ("[detector.thresholds]\nsirn = 0.5\n", "'sirn' is not one of the model's labels"),
        ("[detector.thresholds]\nsiren = 1.5\n", "threshold of siren must be a number in (0, 1]"),
        ("[mqtt]\nhost = 'x'\n", "has no [detector.thresholds] table"),
    ):
        thresholds.write_text(bad)
        assert (
            export_main(
                [
                    str(open_set_checkpoint),
                    "--out",
                    str(tmp_path / "bad.onnx"),
                    "--thresholds",
                    str(thresholds),
                ]
            )
            == 2
        )
        assert message in capsys.readouterr().err
    assert not (tmp_path / "bad.onnx").exists()


def test_export_checks_and_calibrates_on_every_source(
    open_set_checkpoint: Path, data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = tmp_path / "checked.onnx"
    args = [
        str(open_set_checkpoint),
        "--out",
        str(model),
        "--int8",
        "--ship",
        "fp32",
        "--allow-parity-failure",
    ]
    args += ["--calibration-data", str(data_root / "urbansound8k-subset"), "--data-root", str(data_root)]
    assert export_main(args) == 0
    card = json.loads(card_path(model).read_text())
    checks = card["source_checks"]
    assert list(checks) == ["street-extra-test", "esc10-fold4", "esc10-fold5"]  # no debian-sounds here
    assert all(
        0.0 <= c["fp32_accuracy"] <= 1.0 and 0.0 <= c["int8_agreement"] <= 1.0 for c in checks.values()
    )
    assert (
        checks["street-extra-test"]["clips"] == card["evaluation"]["source_checks"]["street-extra-test"] > 0
    )
    assert card["quantization"]["calibration_windows"] > card["evaluation"]["calibration_clips"] - 1
    assert "street-extra-test (" in capsys.readouterr().out


def test_a_source_that_loses_agreement_fails_the_parity_policy() -> None:
    figures = {"max_abs_logit_diff": 1e-5, "int8_agreement": 1.0, "fp32_accuracy": 0.9, "int8_accuracy": 0.9}
    figures["source_checks"] = {
        "esc10-fold5": {"fp32_accuracy": 0.8, "int8_accuracy": 0.7, "int8_agreement": 0.9}
    }
    failures = parity_failures(figures, ParityPolicy())
    assert failures[0].startswith("esc10-fold5: INT8 top-1 agreement 90.00%") and len(failures) == 2


def test_an_all_folds_checkpoint_names_its_validation_recordings(
    open_set_checkpoint: Path, data_root: Path
) -> None:
    checkpoint = load_checkpoint(open_set_checkpoint)
    assert [s["source"] for s in checkpoint.sources] == ["urbansound8k", "street-extra", "esc10"]
    held = set(checkpoint.validation_groups)
    assert held
    split = split_for_checkpoint(data_root / "urbansound8k-subset", checkpoint)
    assert split.heldout and {r.group for r in split.heldout} <= held  # export and the gate judge on them
    assert not {r.group for r in split.calibration} & held  # and INT8 calibrates on training clips only


def test_adversarial_fine_tuning_of_an_all_folds_open_set_model(
    open_set_checkpoint: Path, data_root: Path, tmp_path: Path
) -> None:
    checkpoint = load_checkpoint(open_set_checkpoint)
    split = split_records(data_root, checkpoint)
    held = set(checkpoint.validation_groups)
    assert split.heldout and {r.group for r in split.heldout} <= held  # judged on what it never saw
    assert not {r.group for r in split.train} & held
    assert {r.label for r in split.train} >= {
        OPEN_SET_LABELS.index(OTHER),
        URBANSOUND8K_LABELS.index("siren"),
    }
    out = tmp_path / "adv.pt"
    flags = [
        "--epochs",
        "1",
        "--pgd-steps",
        "2",
        "--clip-p",
        "0.5",
        "--anchor-weight",
        "1",
        "--max-clips",
        "40",
        "--out",
        str(out),
    ]
    assert (
        train_main(
            [
                "--adversarial",
                "pgd",
                "--init",
                str(open_set_checkpoint),
                "--data-root",
                str(data_root),
                *flags,
            ]
        )
        == 0
    )
    tuned = load_checkpoint(out)
    assert tuned.fold is None and tuned.labels == OPEN_SET_LABELS
    assert tuned.validation_groups == checkpoint.validation_groups  # export and the gate still find them
    record = tuned.train_config["adversarial"]
    assert record["clip_p"] == 0.5 and record["anchor_weight"] == 1.0
    assert 0.0 <= tuned.metrics["accuracy"] <= 1.0


def test_a_sigmoid_head_trains_fine_tunes_and_tells_the_agent_how_to_score(
    data_root: Path, tmp_path: Path
) -> None:
    out = tmp_path / "sigmoid"
    common = ["--data-root", str(data_root), "--sources", "us8k,street-extra,esc10", "--all-folds"]
    assert train_main([*common, *TINY_FLAGS, "--head", "sigmoid", "--out", str(out)]) == 0
    checkpoint = out / "default" / "cnn.pt"
    assert load_checkpoint(checkpoint).model_config.head == "sigmoid"
    tuned = tmp_path / "tuned.pt"
    fine_tune = ["--adversarial", "pgd", "--init", str(checkpoint), "--data-root", str(data_root)]
    flags = ["--epochs", "1", "--pgd-steps", "2", "--anchor-weight", "1", "--max-clips", "20"]
    assert train_main([*fine_tune, *flags, "--out", str(tuned)]) == 0  # BCE and its anchor, not softmax's
    model = tmp_path / "sigmoid.onnx"
    assert export_main([str(tuned), "--out", str(model)]) == 0
    loaded = OnnxModel.load(model, threads=1, allow_ungated=True)
    assert loaded.metadata.scoring == "sigmoid"
    assert json.loads(card_path(model).read_text())["scoring"] == "sigmoid"
    window = np.random.default_rng(0).normal(size=(3, 1, PARAMS.n_mels, PARAMS.n_frames)).astype(np.float32)
    np.testing.assert_allclose(loaded.scores(window), 1 / (1 + np.exp(-loaded.logits(window))), rtol=1e-5)
