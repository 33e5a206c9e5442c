"""Pure metric and open-set threshold logic on numpy arrays: no torch, no I/O."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts, rows = true class, columns = predicted class."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> dict:
    """Accuracy, macro-F1 and macro-recall over the classes present, per-class recall, confusion matrix."""
    matrix = confusion_matrix(y_true, y_pred, n_classes)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    hits = np.diag(matrix)
    recall = np.divide(hits, support, out=np.zeros(n_classes), where=support > 0)
    precision = np.divide(hits, predicted, out=np.zeros(n_classes), where=predicted > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros(n_classes), where=denom > 0)
    present = support > 0  # a fold may lack a class; it must not drag the macro means to zero
    return {
        "accuracy": float(hits.sum() / max(matrix.sum(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "macro_recall": float(recall[present].mean()) if present.any() else 0.0,
        "per_class_recall": [float(r) for r in recall],
        "confusion": matrix.tolist(),
    }


def aggregate_windows(
    window_scores: np.ndarray, clip_index: np.ndarray, n_clips: int, how: str = "mean"
) -> np.ndarray:
    """Per-clip scores (n_clips, classes) from window scores: mean (classification) or max (alerting)."""
    out = np.zeros((n_clips, window_scores.shape[1]))
    if how == "mean":
        np.add.at(out, clip_index, window_scores)
        return out / np.maximum(np.bincount(clip_index, minlength=n_clips), 1)[:, None]
    if how == "max":
        np.maximum.at(out, clip_index, window_scores)
        return out
    raise ValueError(f"how must be 'mean' or 'max', got {how!r}")


def suggest_thresholds(
    negative_max: np.ndarray,
    labels: tuple[str, ...],
    target_fpr: dict[str, float],
    floor: float = 0.5,
    ceiling: float = 0.99,
) -> dict[str, float]:
    """Per-class threshold: the lowest score that keeps clip false positives on non-target sounds at
    ``target_fpr[label]`` (a default key ``"*"`` covers the rest), kept within [floor, ceiling].

    ``negative_max`` is (negative clips, classes): each clip's highest window score per class.
    """
    thresholds = {}
    for c, label in enumerate(labels):
        fpr = target_fpr.get(label, target_fpr["*"])
        quantile = float(np.quantile(negative_max[:, c], 1.0 - fpr)) if len(negative_max) else floor
        thresholds[label] = round(min(max(quantile + 1e-3, floor), ceiling), 3)
    return thresholds


def alert_order(thresholds: dict[str, float], first: tuple[str, ...]) -> dict[str, float]:
    """The same thresholds with the alert labels (siren, gun_shot) listed first."""
    ordered = {label: thresholds[label] for label in first if label in thresholds}
    ordered.update({k: v for k, v in thresholds.items() if k not in ordered})
    return ordered


def false_positive_rates(
    negative_max: np.ndarray, labels: tuple[str, ...], thresholds: dict[str, float]
) -> dict[str, float]:
    """Fraction of non-target clips where some window scores a class at or above its threshold."""
    return {
        label: float((negative_max[:, c] >= thresholds[label]).mean()) if len(negative_max) else 0.0
        for c, label in enumerate(labels)
    }


def detection_recall(
    positive_max: np.ndarray, y_true: np.ndarray, labels: tuple[str, ...], thresholds: dict[str, float]
) -> dict[str, float]:
    """Per class, the fraction of its clips where some window reaches the class's threshold."""
    out = {}
    for c, label in enumerate(labels):
        rows = positive_max[y_true == c, c]
        out[label] = float((rows >= thresholds[label]).mean()) if len(rows) else float("nan")
    return out


def recording_bootstrap_interval(
    correct: np.ndarray, recordings: list[str], draws: int = 2000, level: float = 0.95, seed: int = 0
) -> tuple[float, float]:
    """A bootstrap interval of accuracy that resamples whole recordings, not clips.

    Clips cut from one recording are not independent (a model tends to get all of them right or all
    wrong), so the recordings are the sample: on a split of a few recordings per class the interval is
    wide, however many clips there are. ``correct`` is (clips,) bool; ``recordings`` names each clip's.
    """
    if len(correct) != len(recordings):
        raise ValueError(f"{len(correct)} clips but {len(recordings)} recording names")
    if not len(correct):
        return 0.0, 0.0
    names, index = np.unique(np.asarray(recordings), return_inverse=True)
    hits = np.bincount(index, weights=np.asarray(correct, dtype=float), minlength=len(names))
    sizes = np.bincount(index, minlength=len(names)).astype(float)
    picks = np.random.default_rng(seed).integers(0, len(names), size=(draws, len(names)))
    accuracies = hits[picks].sum(axis=1) / sizes[picks].sum(axis=1)
    tail = (1.0 - level) / 2.0
    return float(np.quantile(accuracies, tail)), float(np.quantile(accuracies, 1.0 - tail))
