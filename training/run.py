"""Leave-one-fold-out cross-validation, the all-folds default model, and its open-set thresholds."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_agent.frontend import FrontendParams
from edge_agent.labels import DEFAULT_ALERT_LABELS, URBANSOUND8K_LABELS
from training.catalog import DEBIAN_SOUNDS, ESC10, URBANSOUND8K
from training.checkpoint import Checkpoint
from training.complexity import count_macs, count_params
from training.data import (
    ClipFeatures,
    concat_features,
    folds_present,
    load_features,
    read_esc10_negatives,
    read_urbansound8k,
    split_by_group,
)
from training.debian_sounds import TRAINING_PACKAGES
from training.licences import source_licences
from training.metrics import (
    aggregate_windows,
    alert_order,
    classification_metrics,
    detection_recall,
    false_positive_rates,
    suggest_thresholds,
)
from training.models import ModelConfig, build_model
from training.sources import OTHER, TRAIN_ONLY_FOLD, debian_backgrounds, load_sources
from training.train import (
    NO_DIST,
    Dist,
    FitResult,
    TrainConfig,
    fit,
    predict_clips,
    resolve_device,
    window_scores,
)

logger = logging.getLogger(__name__)

# ESC-10 folds: 1-3 are mixed in as background noise, 4 calibrates thresholds, 5 measures open-set FPR,
# so no number we report comes from a clip the model or the thresholds were fitted on.
ESC10_NOISE_FOLDS = (1, 2, 3)
ESC10_CALIBRATION_FOLDS = (4,)
ESC10_TEST_FOLDS = (5,)
# Target clip-level false-positive rate on non-target sounds: strictest for the alert classes.
TARGET_FPR = {"siren": 0.02, "gun_shot": 0.02, "*": 0.05}
LABELS = URBANSOUND8K_LABELS


@dataclass
class Corpus:
    """Cached features of every UrbanSound8K clip, and the ESC-10 negatives split by role."""

    clips: ClipFeatures
    noise: ClipFeatures | None = None
    calibration: ClipFeatures | None = None
    openset_test: ClipFeatures | None = None
    labels: tuple[str, ...] = LABELS  # the model's outputs: UrbanSound8K's ten, plus ``other`` if open-set
    sources: list[dict] = field(default_factory=list)  # what trained, with licences (training/licences.py)


def _esc10_part(negatives: ClipFeatures, folds: tuple[int, ...]) -> ClipFeatures:
    return negatives.subset([i for i, r in enumerate(negatives.records) if r.fold in folds])


def load_corpus(data_root: str | Path, noise_root: str | Path | None, params: FrontendParams) -> Corpus:
    """Read metadata, decode (or load cached) features of UrbanSound8K and, if given, ESC-10."""
    clips = load_features(read_urbansound8k(data_root), params, desc="decode UrbanSound8K")
    if noise_root is None:
        return Corpus(clips, sources=source_licences((URBANSOUND8K,), None))
    negatives = load_features(read_esc10_negatives(noise_root), params, desc="decode ESC-10")
    return Corpus(
        clips,
        _esc10_part(negatives, ESC10_NOISE_FOLDS),
        _esc10_part(negatives, ESC10_CALIBRATION_FOLDS),
        _esc10_part(negatives, ESC10_TEST_FOLDS),
        sources=source_licences((URBANSOUND8K, ESC10), None),  # ESC-10 trains as background noise
    )


def load_sources_corpus(
    data_root: Path, sources: tuple[str, ...], noise_root: Path | None, params: FrontendParams
) -> Corpus:
    """Several sources under one data root (training/sources.py); ESC-10 keeps its three roles."""
    negatives = None
    if noise_root is not None:
        negatives = load_features(read_esc10_negatives(noise_root), params, desc="decode ESC-10")
    clips, labels = load_sources(data_root, sources, negatives, params)
    heard = sources if negatives is None or ESC10 in sources else (*sources, ESC10)  # ESC-10 as noise
    licences = source_licences(heard, data_root, TRAINING_PACKAGES)
    if negatives is None:
        return Corpus(clips, labels=labels, sources=licences)
    roles = (ESC10_NOISE_FOLDS, ESC10_CALIBRATION_FOLDS, ESC10_TEST_FOLDS)
    noise, calibration, openset_test = [_esc10_part(negatives, folds) for folds in roles]
    if DEBIAN_SOUNDS in sources:
        noise = concat_features([noise, debian_backgrounds(clips, params)])
    return Corpus(clips, noise, calibration, openset_test, labels=labels, sources=licences)


def testable_folds(records: list) -> list[int]:
    """Folds a model may be tested on: every fold present but the train-only one."""
    return [f for f in folds_present(records) if f != TRAIN_ONLY_FOLD]


def complexity(model_config: ModelConfig, params: FrontendParams, n_classes: int = len(LABELS)) -> dict:
    """Parameters and MACs per input window."""
    model = build_model(model_config, n_mels=params.n_mels, n_classes=n_classes)
    return {
        "params": count_params(model),
        "macs_per_window": count_macs(model, (1, params.n_mels, params.n_frames)),
    }


def _train_val(clips: ClipFeatures, pool: list[int], cfg: TrainConfig) -> tuple[ClipFeatures, ClipFeatures]:
    """Split the training pool into train and validation by recording."""
    train_idx, val_idx = split_by_group([clips.records[i] for i in pool], cfg.val_fraction, cfg.seed)
    return clips.subset([pool[i] for i in train_idx]), clips.subset([pool[i] for i in val_idx])


def _fold_entry(fitted: FitResult, metrics: dict, wall: float) -> dict:
    return {
        **metrics,
        "best_epoch": fitted.best_epoch,
        "epochs_run": len(fitted.history),
        "wall_s": round(wall, 1),
        "history": fitted.history,
    }


def run_fold(
    corpus: Corpus,
    model_config: ModelConfig,
    fold: int,
    cfg: TrainConfig,
    params: FrontendParams,
    out_dir: Path,
    dist: Dist = NO_DIST,
) -> dict:
    """Train on every other fold (validation from them), test on ``fold``, save the fold's checkpoint."""
    start = time.perf_counter()
    records = corpus.clips.records
    test = corpus.clips.subset([i for i, r in enumerate(records) if r.fold == fold])
    train, val = _train_val(corpus.clips, [i for i, r in enumerate(records) if r.fold != fold], cfg)
    fitted = fit(
        model_config,
        train,
        val,
        corpus.noise,
        params,
        cfg,
        len(corpus.labels),
        dist,
        desc=f"{model_config.arch} fold {fold}",
    )
    device = resolve_device(cfg.device, dist)
    predicted = predict_clips(fitted.model, test, params, cfg.hop_frames, device).argmax(axis=1)
    metrics = classification_metrics(test.labels.numpy(), predicted, len(corpus.labels))
    if dist.main:
        Checkpoint(
            model_config,
            params,
            corpus.labels,
            fitted.model.cpu().state_dict(),
            fold=fold,
            metrics={k: metrics[k] for k in ("accuracy", "macro_f1", "macro_recall")},
            train_config=cfg.to_dict(),
            sources=corpus.sources,
        ).save(out_dir / f"{model_config.arch}-fold{fold}.pt")
    logger.info("%s fold %s: accuracy %.3f", model_config.arch, fold, metrics["accuracy"])
    return _fold_entry(fitted, metrics, time.perf_counter() - start)


def summarise(
    arch: str,
    model_config: ModelConfig,
    folds: dict[str, dict],
    params: FrontendParams,
    cfg: TrainConfig,
    wall: float,
    labels: tuple[str, ...] = LABELS,
) -> dict:
    """Mean and sample std over folds, plus size, for report.json."""
    report = {
        "arch": arch,
        "model_config": model_config.to_dict(),
        **complexity(model_config, params, len(labels)),
        "labels": list(labels),
        "train_config": cfg.to_dict(),
        "folds": folds,
        "wall_s": round(wall, 1),
    }
    for key in ("accuracy", "macro_f1", "macro_recall"):
        values = np.array([f[key] for f in folds.values()])
        report[f"mean_{key}"] = float(values.mean())
        report[f"std_{key}"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    recalls = np.array([f["per_class_recall"] for f in folds.values()])
    report["mean_per_class_recall"] = dict(zip(labels, recalls.mean(axis=0).round(4).tolist(), strict=True))
    return report


def cross_validate(
    corpus: Corpus,
    model_config: ModelConfig,
    cfg: TrainConfig,
    params: FrontendParams,
    out_dir: Path,
    folds: list[int] | None = None,
    dist: Dist = NO_DIST,
) -> dict:
    """Leave-one-fold-out over ``folds`` (default: every fold present)."""
    present = testable_folds(corpus.clips.records)
    folds = folds or present
    missing = sorted(set(folds) - set(present))
    if missing:
        raise ValueError(f"folds {missing} are not in the data (present: {present})")
    if len(present) < 2:
        raise ValueError("leave-one-fold-out needs at least two folds")
    start = time.perf_counter()
    entries = {str(f): run_fold(corpus, model_config, f, cfg, params, out_dir, dist) for f in folds}
    return summarise(
        model_config.arch, model_config, entries, params, cfg, time.perf_counter() - start, corpus.labels
    )


def open_set(
    model: object, corpus: Corpus, val: ClipFeatures, params: FrontendParams, cfg: TrainConfig, device: object
) -> dict:
    """Suggest thresholds on ESC-10 calibration clips, then measure FPR on held-out ESC-10 clips."""

    def clip_max(features: ClipFeatures) -> np.ndarray:
        scores, clips = window_scores(model, features, params, cfg.hop_frames, device)  # type: ignore[arg-type]
        return aggregate_windows(scores, clips, len(features.records), "max")

    labels = corpus.labels
    suggested = suggest_thresholds(clip_max(corpus.calibration), labels, TARGET_FPR)
    thresholds = alert_order({k: v for k, v in suggested.items() if k != OTHER}, DEFAULT_ALERT_LABELS)
    scored = tuple(label for label in labels if label != OTHER)  # ``other`` is never an alert: no threshold
    return {
        "thresholds": thresholds,
        "target_fpr": TARGET_FPR,
        "false_positive_rate": false_positive_rates(
            clip_max(corpus.openset_test)[:, : len(scored)], scored, thresholds
        ),
        "negative_clips": len(corpus.openset_test.records),
        "recall_at_threshold": detection_recall(
            clip_max(val)[:, : len(scored)], val.labels.numpy(), scored, thresholds
        ),
        "esc10_folds": {
            "noise": ESC10_NOISE_FOLDS,
            "calibration": ESC10_CALIBRATION_FOLDS,
            "test": ESC10_TEST_FOLDS,
        },
    }


def train_default(
    corpus: Corpus,
    model_config: ModelConfig,
    cfg: TrainConfig,
    params: FrontendParams,
    out_path: Path,
    dist: Dist = NO_DIST,
) -> dict:
    """Train on every fold (validation split from them), add open-set thresholds, save the checkpoint."""
    start = time.perf_counter()
    train, val = _train_val(corpus.clips, list(range(len(corpus.clips.records))), cfg)
    fitted = fit(
        model_config,
        train,
        val,
        corpus.noise,
        params,
        cfg,
        len(corpus.labels),
        dist,
        desc=f"{model_config.arch} all folds",
    )
    device = resolve_device(cfg.device, dist)
    predicted = predict_clips(fitted.model, val, params, cfg.hop_frames, device).argmax(axis=1)
    metrics = classification_metrics(val.labels.numpy(), predicted, len(corpus.labels))
    opened = open_set(fitted.model, corpus, val, params, cfg, device) if corpus.calibration else {}
    summary = {k: metrics[k] for k in ("accuracy", "macro_f1", "macro_recall")}
    summary.update(
        evaluated_on="validation recordings held out of the training folds",
        open_set_fpr=opened.get("false_positive_rate", {}),
    )
    if dist.main:
        Checkpoint(
            model_config,
            params,
            corpus.labels,
            fitted.model.cpu().state_dict(),
            fold=None,
            metrics=summary,
            train_config=cfg.to_dict(),
            thresholds=opened.get("thresholds", {}),
            sources=corpus.sources,
            validation_groups=sorted({r.group for r in val.records}),
        ).save(out_path)
    wall = time.perf_counter() - start
    report = summarise(
        model_config.arch,
        model_config,
        {"all": _fold_entry(fitted, metrics, wall)},
        params,
        cfg,
        wall,
        corpus.labels,
    )
    return {
        **report,
        "checkpoint": str(out_path),
        "open_set": opened,
        "folds_used": testable_folds(corpus.clips.records),
    }
