"""Tiny synthetic datasets in the UrbanSound8K and ESC-10 layouts, for tests and smoke runs without real data.

Classes are tones and noise bands a small model separates in a few epochs; files deliberately vary in
rate, channel count, length and container, as the full UrbanSound8K does.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import soundfile as sf

# classID -> (kind, frequency Hz): a tone, or noise band-passed around the frequency.
SYNTHETIC_CLASSES = {0: ("tone", 400.0), 3: ("tone", 2500.0), 8: ("noise", 5000.0)}
_VARIANTS = ((16000, 1, 4.0, "wav"), (22050, 2, 2.5, "wav"), (8000, 1, 0.6, "wav"), (16000, 1, 3.0, "ogg"))


def synth_clip(kind: str, freq: float, rate: int, seconds: float, rng: np.random.Generator) -> np.ndarray:
    """One mono clip (samples,) float32 in [-1, 1]."""
    t = np.arange(int(rate * seconds)) / rate
    if kind == "tone":
        wave = np.sin(2 * np.pi * freq * (1 + 0.01 * rng.standard_normal()) * t)
    else:
        spectrum = np.fft.rfft(rng.standard_normal(t.size))
        bins = np.fft.rfftfreq(t.size, 1 / rate)
        spectrum[np.abs(bins - min(freq, rate / 2 - 500)) > 600] = 0
        wave = np.fft.irfft(spectrum, n=t.size)
        wave /= np.abs(wave).max() + 1e-9
    wave = 0.3 * wave + 0.01 * rng.standard_normal(t.size)
    return wave.astype(np.float32)


def write_urbansound8k(
    root: str | Path, folds: tuple[int, ...] = (1, 2, 3), per_class: int = 4, seed: int = 0
) -> Path:
    """Write ``metadata/UrbanSound8K.csv`` + ``audio/foldN/``, ``per_class`` recordings per class and fold."""
    root, rng = Path(root), np.random.default_rng(seed)
    rows = []
    for fold in folds:
        for class_id, (kind, freq) in SYNTHETIC_CLASSES.items():
            for n in range(per_class):
                rate, channels, seconds, ext = _VARIANTS[(n + fold) % len(_VARIANTS)]
                fs_id = 1000 * fold + 10 * class_id + n
                name = f"{fs_id}-{class_id}-0-0.{ext}"
                wave = synth_clip(kind, freq, rate, seconds, rng)
                data = np.stack([wave] * channels, axis=1) if channels > 1 else wave
                path = root / "audio" / f"fold{fold}" / name
                path.parent.mkdir(parents=True, exist_ok=True)
                sf.write(str(path), data, rate)
                rows.append([name, fs_id, 0.0, seconds, 1, fold, class_id, f"class{class_id}"])
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    with (root / "metadata" / "UrbanSound8K.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"])
        writer.writerows(rows)
    return root


def write_esc10(root: str | Path, per_fold: int = 2, seed: int = 1) -> Path:
    """Write an ESC-10-layout ``meta.csv`` + ``audio/`` of non-target noise (and dog_bark, to be excluded)."""
    root, rng = Path(root), np.random.default_rng(seed)
    (root / "audio").mkdir(parents=True, exist_ok=True)
    rows = []
    for fold in range(1, 6):
        for category, freq in (("rain", 1200.0), ("chainsaw", 3500.0), ("dog_bark", 2500.0)):
            for n in range(per_fold):
                name = f"{category}-{fold}-{n}.wav"
                sf.write(str(root / "audio" / name), synth_clip("noise", freq, 16000, 5.0, rng), 16000)
                rows.append([name, fold, category])
    with (root / "meta.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "fold", "category"])
        writer.writerows(rows)
    return root


def write_street_extra(
    root: str | Path, groups_per_label: int = 4, clips_per_group: int = 2, seed: int = 2
) -> Path:
    """Write a street-extra-layout ``meta.csv`` + ``audio/``: siren, gun_shot and negative recordings."""
    root, rng = Path(root), np.random.default_rng(seed)
    kinds = {"siren": ("noise", 5000.0), "gun_shot": ("tone", 6000.0), "negative": ("noise", 1200.0)}
    rows = []
    for label, (kind, freq) in kinds.items():
        for g in range(groups_per_label):
            for n in range(clips_per_group):
                name = f"{label}/{label}{g}-{n}.wav"
                (root / "audio" / label).mkdir(parents=True, exist_ok=True)
                sf.write(str(root / "audio" / name), synth_clip(kind, freq, 16000, 2.0, rng), 16000)
                rows.append([name, label, f"{label}-kind", f"{label}-group{g}", 2.0])
    with (root / "meta.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "label", "category", "group", "seconds"])
        writer.writerows(rows)
    return root
