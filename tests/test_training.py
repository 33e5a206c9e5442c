"""Training on tiny synthetic UrbanSound8K-layout data: folds, decoding, augmentation, determinism, CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from edge_agent.frontend import FrontendParams, LogMel
from training.checkpoint import load_checkpoint
from training.cli import main as train_main
from training.data import (
    ClipFeatures,
    RandomCropDataset,
    WindowDataset,
    folds_present,
    load_features,
    load_waveform,
    read_esc10_negatives,
    read_urbansound8k,
    split_by_group,
    window_starts,
)
from training.frontend import TorchLogMel
from training.metrics import classification_metrics
from training.models import architecture
from training.report import goal_checks
from training.run import load_corpus
from training.synthetic import SYNTHETIC_CLASSES, write_esc10, write_urbansound8k
from training.train import (
    TrainConfig,
    fit,
    train_dataset,
    validation_score,
    warmed_decay,
    weight_average,
    window_scores,
)

PARAMS = FrontendParams()
TINY = architecture("cnn", conv_channels=(4, 8))


@pytest.fixture(scope="module")
def dataset_dirs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A synthetic UrbanSound8K (folds 1-3) and ESC-10, side by side as on the shared disk."""
    base = tmp_path_factory.mktemp("data")
    return write_urbansound8k(base / "urbansound8k"), write_esc10(base / "esc10")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EARSHOT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


def test_folds_come_from_the_csv_and_absent_audio_is_skipped(dataset_dirs: tuple[Path, Path]) -> None:
    root = dataset_dirs[0]
    records = read_urbansound8k(root)
    assert folds_present(records) == [1, 2, 3]
    assert len(records) == 3 * len(SYNTHETIC_CLASSES) * 4
    assert all(r.path.parent.name == f"fold{r.fold}" for r in records)
    assert {r.label for r in records} == set(SYNTHETIC_CLASSES)


def test_any_rate_channels_and_length_become_one_mono_window_or_more(dataset_dirs: tuple[Path, Path]) -> None:
    records = read_urbansound8k(dataset_dirs[0])
    suffixes = {r.path.suffix for r in records}
    assert suffixes == {".wav", ".ogg"}
    for record in records[:8]:
        wave = load_waveform(record.path, PARAMS)
        assert wave.ndim == 1 and wave.numel() >= PARAMS.window_samples


def test_short_clips_are_looped_not_padded(tmp_path: Path) -> None:
    import soundfile as sf

    burst = np.linspace(-0.5, 0.5, 4000, dtype=np.float32)  # 0.25 s at 16 kHz
    sf.write(str(tmp_path / "short.wav"), burst, 16000)
    wave = load_waveform(tmp_path / "short.wav", PARAMS).numpy()
    assert wave.shape == (PARAMS.window_samples,)
    np.testing.assert_allclose(wave[4000:8000], burst, atol=1e-4)


def test_feature_cache_is_reused_and_identical(dataset_dirs: tuple[Path, Path]) -> None:
    records = read_urbansound8k(dataset_dirs[0])[:5]
    first = load_features(records, PARAMS)
    second = load_features(records, PARAMS)
    assert torch.equal(first.power, second.power) and torch.equal(first.offsets, second.offsets)


def test_cached_window_crops_equal_the_agents_window_features(dataset_dirs: tuple[Path, Path]) -> None:
    """No centre padding, so a frame-aligned crop of the clip's features IS the agent's window."""
    record = read_urbansound8k(dataset_dirs[0])[0]
    features = load_features([record], PARAMS)
    wave = load_waveform(record.path, PARAMS)
    windows = WindowDataset(features, PARAMS.n_frames, hop_frames=16)
    assert len(windows) == len(window_starts(features.clip(0).shape[1], PARAMS.n_frames, 16)) > 1
    start = window_starts(features.clip(0).shape[1], PARAMS.n_frames, 16)[2]
    samples = wave[start * PARAMS.hop_length : start * PARAMS.hop_length + PARAMS.window_samples]
    expected = TorchLogMel(PARAMS)(samples.unsqueeze(0))[0, 0]  # (n_mels, frames)
    crop, _ = windows[2]
    torch.testing.assert_close(torch.log(crop + PARAMS.log_offset), expected, atol=1e-4, rtol=1e-4)
    agent = LogMel(PARAMS)(samples.numpy())[0, 0]
    np.testing.assert_allclose(torch.log(crop + PARAMS.log_offset).numpy(), agent, atol=2e-3, rtol=1e-3)


def test_validation_split_keeps_recordings_whole(dataset_dirs: tuple[Path, Path]) -> None:
    records = read_urbansound8k(dataset_dirs[0])
    train, val = split_by_group(records, 0.25, seed=0)
    assert train and val and not set(train) & set(val)
    assert not {records[i].group for i in train} & {records[i].group for i in val}


def test_augmentation_only_in_training_mode(dataset_dirs: tuple[Path, Path]) -> None:
    corpus = load_corpus(dataset_dirs[0], dataset_dirs[1], PARAMS)
    augmented = train_dataset(corpus.clips, corpus.noise, PARAMS, TrainConfig())
    torch.manual_seed(0)
    a = torch.stack([augmented[i][0] for i in range(6)])
    b = torch.stack([augmented[i][0] for i in range(6)])
    assert a.shape == (6, 1, PARAMS.n_mels, PARAMS.n_frames) and not torch.equal(a, b)
    plain = train_dataset(
        corpus.clips, None, PARAMS, TrainConfig(noise_p=0, gain_db=0, freq_mask=0, time_mask=0)
    )
    crop_only = RandomCropDataset(corpus.clips, PARAMS.n_frames)
    torch.manual_seed(1)
    x, _ = plain[3]
    torch.manual_seed(1)
    power, _ = crop_only[3]
    torch.testing.assert_close(x[0], torch.log(power + PARAMS.log_offset))
    windows = WindowDataset(corpus.clips, PARAMS.n_frames, 16)
    assert torch.equal(windows[5][0], windows[5][0])  # evaluation windows are fixed, never augmented


def _fold3_held_out(dirs: tuple[Path, Path]) -> tuple[ClipFeatures, ClipFeatures, ClipFeatures | None]:
    """(train, validation, noise) of the synthetic corpus: fold 3 validates."""
    corpus = load_corpus(dirs[0], dirs[1], PARAMS)
    records = corpus.clips.records
    train = corpus.clips.subset([i for i, r in enumerate(records) if r.fold != 3])
    val = corpus.clips.subset([i for i, r in enumerate(records) if r.fold == 3])
    return train, val, corpus.noise


QUICK = TrainConfig(epochs=12, batch_size=8, lr=1e-2, mixup_alpha=0.0, noise_p=0.0, crops_per_clip=1)


def test_training_is_deterministic_and_learns(dataset_dirs: tuple[Path, Path]) -> None:
    train, val, noise = _fold3_held_out(dataset_dirs)
    first = fit(TINY, train, val, noise, PARAMS, QUICK, n_classes=10)
    second = fit(TINY, train, val, noise, PARAMS, QUICK, n_classes=10)
    for key, value in first.model.state_dict().items():
        assert torch.equal(value, second.model.state_dict()[key]), key
    timeless = [
        [{k: v for k, v in h.items() if k != "seconds"} for h in run.history] for run in (first, second)
    ]
    assert timeless[0] == timeless[1]
    assert max(h["val_accuracy"] for h in first.history) > 0.6  # chance is 1/3


def test_a_sigmoid_head_learns_and_scores_each_label_apart(dataset_dirs: tuple[Path, Path]) -> None:
    train, val, noise = _fold3_held_out(dataset_dirs)
    fitted = fit(replace(TINY, head="sigmoid"), train, val, noise, PARAMS, QUICK, n_classes=10)
    assert max(h["val_accuracy"] for h in fitted.history) > 0.6  # chance is 1/3
    scores, _ = window_scores(fitted.model, val, PARAMS, 16, torch.device("cpu"))  # (windows, classes)
    assert scores.min() >= 0.0 and scores.max() <= 1.0
    assert not np.allclose(scores.sum(axis=1), 1.0)  # independent per label, not one distribution


def test_esc10_negatives_exclude_the_shared_class(dataset_dirs: tuple[Path, Path]) -> None:
    negatives = read_esc10_negatives(dataset_dirs[1])
    assert {r.group for r in negatives} == {"rain", "chainsaw"} and all(r.label == -1 for r in negatives)


def test_cli_cross_validation_writes_reports_and_checkpoints(
    dataset_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code = train_main(
        [
            "--data-root",
            str(dataset_dirs[0]),
            "--compare",
            "--archs",
            "rnn",
            "crnn",
            "--folds",
            "1",
            "2",
            "--epochs",
            "2",
            "--crops-per-clip",
            "1",
            "--batch-size",
            "8",
            "--threads",
            "1",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    table = json.loads((out / "comparison.json").read_text())
    assert set(table) == {"rnn", "crnn"}
    for entry in table.values():
        assert set(entry) == {
            "mean_accuracy",
            "std_accuracy",
            "macro_f1",
            "params",
            "macs_per_window",
            "folds",
        }
        assert set(entry["folds"]) == {"1", "2"} and entry["params"] > 0 and entry["macs_per_window"] > 0
    report = json.loads((out / "rnn" / "report.json").read_text())
    assert len(report["folds"]["1"]["per_class_recall"]) == 10 and report["wall_s"] >= 0
    for name in ("report.md", "confusion.png", "learning_curves.png", "rnn-fold1.pt", "rnn-fold2.pt"):
        assert (out / "rnn" / name).stat().st_size > 0, name
    assert "study" in (out / "comparison.md").read_text() and "Goals:" in (out / "comparison.md").read_text()
    assert (out / "comparison.png").stat().st_size > 0
    (out / "comparison.json").unlink()
    assert train_main(["--report-only", "--out", str(out)]) == 0  # rebuilt from the per-arch reports alone
    assert json.loads((out / "comparison.json").read_text()) == table
    checkpoint = load_checkpoint(out / "rnn" / "rnn-fold2.pt")
    assert checkpoint.fold == 2 and checkpoint.train_config["epochs"] == 2
    assert checkpoint.metrics["accuracy"] == pytest.approx(report["folds"]["2"]["accuracy"])
    model = checkpoint.build()
    assert model(torch.zeros(3, 1, PARAMS.n_mels, PARAMS.n_frames)).shape == (3, 10)


def test_cli_all_folds_default_model_has_thresholds_and_open_set_rates(
    dataset_dirs: tuple[Path, Path], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    code = train_main(
        [
            "--data-root",
            str(dataset_dirs[0]),
            "--all-folds",
            "--arch",
            "rnn",
            "--epochs",
            "2",
            "--crops-per-clip",
            "1",
            "--batch-size",
            "8",
            "--threads",
            "1",
            "--out",
            str(out),
            "--device",
            "cpu",
        ]
    )
    assert code == 0
    checkpoint = load_checkpoint(out / "default" / "rnn.pt")
    assert checkpoint.fold is None
    assert list(checkpoint.thresholds)[:2] == ["siren", "gun_shot"]
    assert all(0.5 <= t <= 0.99 for t in checkpoint.thresholds.values())
    assert set(checkpoint.metrics["open_set_fpr"]) == set(checkpoint.labels)
    report = json.loads((out / "default" / "report.json").read_text())
    assert report["open_set"]["negative_clips"] == 4  # two non-target classes x two clips in ESC-10 fold 5


def test_goal_checks_score_the_best_model_and_each_seed_architecture() -> None:
    def fake(mean: float, params: int = 50_000, macs: int = 5_000_000) -> dict:
        return {"mean_accuracy": mean, "params": params, "macs_per_window": macs}

    checks = goal_checks({"cnn": fake(0.65), "rnn": fake(0.40), "rescnn": fake(0.82, 2_000_000)})
    by_goal = {c["goal"]: c["met"] for c in checks}
    assert by_goal["best model (rescnn) mean accuracy >= 0.80"] is True
    assert by_goal["best model (rescnn) <= 1 M parameters and <= 100 M MACs per window"] is False
    assert by_goal["cnn beats the study's 0.62"] is True and by_goal["rnn beats the study's 0.41"] is False
    assert not any("lstm" in goal for goal in by_goal)  # an architecture not run is not scored


def test_cli_bad_input_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_main(["--data-root", str(tmp_path / "nowhere")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.startswith("earshot train: error:") and "\n" not in error
    assert train_main(["--data-root", str(tmp_path), "--arch", "transformer"]) == 2
    assert "unknown architecture" in capsys.readouterr().err
    assert train_main(["--report-only", "--out", str(tmp_path / "empty")]) == 2
    assert "run 'earshot train --compare' first" in capsys.readouterr().err


def test_weight_average_follows_each_step_parameters_and_batchnorm_statistics() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    assert weight_average(model, 0.0) is None
    averaged = weight_average(model, 0.75)
    assert averaged is not None
    averaged.update_parameters(model)  # the first step copies the weights
    for step in (1, 30):  # warm-up: the second step keeps 2/11 of the average; the 31st keeps 0.75
        keep = warmed_decay(0.75, step)
        assert keep == pytest.approx(min(0.75, (1 + step) / (10 + step)))
        averaged.n_averaged.fill_(step)
        start = {k: v.clone() for k, v in averaged.module.state_dict().items()}
        with torch.no_grad():
            model[0].weight.add_(4.0)
            model[1].running_mean.add_(8.0)
        gap = model[0].weight - start["0.weight"], model[1].running_mean - start["1.running_mean"]
        averaged.update_parameters(model)
        after = averaged.module.state_dict()
        torch.testing.assert_close(after["0.weight"], start["0.weight"] + (1 - keep) * gap[0])
        torch.testing.assert_close(after["1.running_mean"], start["1.running_mean"] + (1 - keep) * gap[1])
    assert warmed_decay(0.999, 9_000) == pytest.approx(0.999, abs=1e-6)


def test_balanced_selection_gives_every_label_the_same_weight() -> None:
    labels = np.array([0] * 8 + [1, 2])
    says_zero = np.zeros(10, dtype=int)  # right on the big label only
    metrics = classification_metrics(labels, says_zero, 3)
    assert validation_score(metrics, "accuracy") == pytest.approx(0.8)
    assert validation_score(metrics, "balanced") == pytest.approx(1 / 3)


def test_training_with_a_weight_average_is_deterministic_and_learns(dataset_dirs: tuple[Path, Path]) -> None:
    train, val, noise = _fold3_held_out(dataset_dirs)
    cfg = replace(QUICK, ema_decay=0.8, select_by="balanced")
    runs = [fit(TINY, train, val, noise, PARAMS, cfg, n_classes=10) for _ in range(2)]
    for key, value in runs[0].model.state_dict().items():
        assert torch.equal(value, runs[1].model.state_dict()[key]), key
    best = runs[0].history[runs[0].best_epoch - 1]
    assert best["val_balanced_accuracy"] == max(h["val_balanced_accuracy"] for h in runs[0].history)
    assert best["val_balanced_accuracy"] > 0.6  # chance is 1/3


def test_cli_refuses_an_unknown_selection_figure(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_urbansound8k(tmp_path / "urbansound8k")
    assert train_main(["--data-root", str(data), "--select-by", "loss", "--out", str(tmp_path / "out")]) == 2
    error = capsys.readouterr().err.strip()
    assert "select_by must be one of accuracy, balanced" in error and "\n" not in error
    assert not (tmp_path / "out").exists()
