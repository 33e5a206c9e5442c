"""Several training sources under one data root -> one labelled corpus with an open-set ``other`` class.

``earshot train --data-root ../shared/data --sources us8k,street-extra,esc10`` reads:
- UrbanSound8K's clips with its ten labels and folds (the only folds a model is tested on);
- street-extra's TRAIN half of ``street_extra_partition`` (never the recordings ``street-extra-test``
  judges): ``siren`` and ``gun_shot`` as the UrbanSound8K labels of that name, ``negative`` as ``other``;
- ESC-10's noise folds (1-3) of the classes that are none of ours as ``other``; its folds 4-5 stay out of
  training (threshold calibration, open-set rates, the ``esc10-fold4``/``esc10-fold5`` splits);
- ``debian-sounds`` (``earshot fetch-sounds``): the effects of the training packages as ``other`` and
  their music, cut into ``MUSIC_PIECE_SECONDS`` pieces, as ``street_music``; at most
  ``DEBIAN_CLIPS_PER_PACKAGE`` of each per package so that no one game dominates; the evaluation
  packages stay out (the ``debian-heldout`` split).
Clips that only train get fold ``TRAIN_ONLY_FOLD``: cross-validation never tests on them.
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from edge_agent.frontend import FrontendParams
from edge_agent.labels import URBANSOUND8K_LABELS
from training.catalog import (
    DEBIAN_SOUNDS,
    ESC10,
    STREET_EXTRA,
    STREET_EXTRA_NEGATIVE,
    URBANSOUND8K,
    esc10_group,
    read_source,
    source_dir,
)
from training.cross_source import street_extra_partition
from training.data import (
    ClipFeatures,
    ClipRecord,
    concat_features,
    load_features,
    read_esc10_negatives,
    read_urbansound8k,
)
from training.debian_sounds import EFFECT, MUSIC, TRAINING_PACKAGES

logger = logging.getLogger(__name__)

OTHER = "other"  # the open-set target: none of the ten classes
OPEN_SET_LABELS = (*URBANSOUND8K_LABELS, OTHER)
TRAIN_ONLY_FOLD = 0  # fold of clips that only ever train (street-extra train half, ESC-10 negatives)
ESC10_OTHER_FOLDS = (1, 2, 3)  # the same folds training mixes in as background noise
SOURCE_NAMES = {
    "us8k": URBANSOUND8K,
    URBANSOUND8K: URBANSOUND8K,
    STREET_EXTRA: STREET_EXTRA,
    ESC10: ESC10,
    "debian": DEBIAN_SOUNDS,
    DEBIAN_SOUNDS: DEBIAN_SOUNDS,
}
NEGATIVE_SOURCES = (STREET_EXTRA, ESC10, DEBIAN_SOUNDS)  # sources of real negatives: the ``other`` class
DEBIAN_CLIPS_PER_PACKAGE = 300
DEBIAN_SEED = 0
MUSIC_LABEL = "street_music"  # the ten classes' one music class
MUSIC_PIECE_SECONDS = 10.0  # a soundtrack is cut so that its crops weigh like other clips' per epoch


def parse_sources(text: str) -> tuple[str, ...]:
    """``us8k,street-extra,esc10`` -> catalog source names, in order, once each; ValueError on a typo."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [n for n in names if n not in SOURCE_NAMES]
    if unknown or not names:
        raise ValueError(
            f"unknown source {unknown[0] if unknown else text!r} (known: {', '.join(SOURCE_NAMES)})"
        )
    return tuple(dict.fromkeys(SOURCE_NAMES[n] for n in names))


def sources_argument(text: str) -> tuple[str, ...]:
    """``parse_sources`` for argparse: a typo is its one-line error naming the known sources."""
    try:
        return parse_sources(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def training_labels(sources: tuple[str, ...]) -> tuple[str, ...]:
    """The model's labels: UrbanSound8K's ten, plus ``other`` when a source brings real negatives."""
    return OPEN_SET_LABELS if any(s in NEGATIVE_SOURCES for s in sources) else URBANSOUND8K_LABELS


def street_extra_train_records(data_root: Path, labels: tuple[str, ...]) -> list[ClipRecord]:
    """street-extra's train half (group-disjoint from ``street-extra-test``) as training records."""
    train, test = street_extra_partition(read_source(data_root, STREET_EXTRA))
    logger.info("street-extra: %s train clips (%s test clips held out)", len(train), len(test))
    label_of = {STREET_EXTRA_NEGATIVE: OTHER}
    return [
        ClipRecord(
            c.path, labels.index(label_of.get(c.label, c.label)), TRAIN_ONLY_FOLD, f"{STREET_EXTRA}:{c.group}"
        )
        for c in train
    ]


def debian_train_records(data_root: Path, labels: tuple[str, ...]) -> list[ClipRecord]:
    """The training packages' effects as ``other``, at most DEBIAN_CLIPS_PER_PACKAGE per package (seeded)."""
    by_package: dict[str, list] = {}
    for clip in read_source(data_root, DEBIAN_SOUNDS):
        if clip.label == EFFECT and clip.group in TRAINING_PACKAGES:
            by_package.setdefault(clip.group, []).append(clip)
    rng = np.random.default_rng(DEBIAN_SEED)
    records = []
    for package, clips in sorted(by_package.items()):
        chosen = sorted(rng.permutation(len(clips))[:DEBIAN_CLIPS_PER_PACKAGE].tolist())
        records += [
            ClipRecord(
                clips[i].path, labels.index(OTHER), TRAIN_ONLY_FOLD, f"{DEBIAN_SOUNDS}:{clips[i].category}"
            )
            for i in chosen
        ]
        logger.info("debian-sounds: %s of %s effects of %s train as other", len(chosen), len(clips), package)
    return records


def debian_music_records(data_root: Path, labels: tuple[str, ...]) -> list[ClipRecord]:
    """The training packages' music as ``street_music`` (whole files; ``music_pieces`` cuts them)."""
    return [
        ClipRecord(c.path, labels.index(MUSIC_LABEL), TRAIN_ONLY_FOLD, f"{DEBIAN_SOUNDS}:{c.group}:{MUSIC}")
        for c in read_source(data_root, DEBIAN_SOUNDS)
        if c.label == MUSIC and c.group in TRAINING_PACKAGES
    ]


def music_pieces(music: ClipFeatures, params: FrontendParams) -> ClipFeatures:
    """Each track cut into MUSIC_PIECE_SECONDS pieces (a last piece shorter than a window is dropped),
    at most DEBIAN_CLIPS_PER_PACKAGE per package, seeded."""
    piece = int(MUSIC_PIECE_SECONDS * params.sample_rate / params.hop_length)
    spans: dict[str, list[tuple[int, int, int]]] = {}  # group -> (clip, start, end) frame spans
    for index, record in enumerate(music.records):
        frames = music.clip(index).shape[1]
        for start in range(0, frames - params.n_frames + 1, piece):
            spans.setdefault(record.group, []).append((index, start, min(start + piece, frames)))
    rng = np.random.default_rng(DEBIAN_SEED)
    chosen = []
    for group in sorted(spans):
        picks = sorted(rng.permutation(len(spans[group]))[:DEBIAN_CLIPS_PER_PACKAGE].tolist())
        chosen += [spans[group][i] for i in picks]
        logger.info("debian-sounds: %s of %s music pieces of %s train", len(picks), len(spans[group]), group)
    parts = [music.clip(i)[:, start:end] for i, start, end in chosen]  # (n_mels, frames) each
    return ClipFeatures.from_parts(parts, [music.records[i] for i, _, _ in chosen], params.n_mels)


def esc10_other_record(record: ClipRecord, labels: tuple[str, ...]) -> ClipRecord:
    """An ESC-10 negative relabelled ``other`` (train-only, grouped by its source recording)."""
    group = f"{ESC10}:{esc10_group(record.path.name)}"
    return replace(record, label=labels.index(OTHER), fold=TRAIN_ONLY_FOLD, group=group)


def trains_as_other(negative: ClipRecord) -> bool:
    """Whether an ESC-10 negative trains as ``other``: only those of the folds mixed in as noise."""
    return negative.fold in ESC10_OTHER_FOLDS


def esc10_other(negatives: ClipFeatures, labels: tuple[str, ...]) -> ClipFeatures:
    """ESC-10 negatives of the noise folds relabelled ``other`` (``esc10_other_record``)."""
    keep = [i for i, r in enumerate(negatives.records) if trains_as_other(r)]
    part = negatives.subset(keep)
    part.records = [esc10_other_record(r, labels) for r in part.records]
    return part


def source_records(data_root: Path, sources: tuple[str, ...], labels: tuple[str, ...]) -> list[ClipRecord]:
    """Every training clip of ``sources`` as a labelled record, for code that needs waveforms rather than
    cached features (adversarial fine-tuning). Debian music tracks come whole, one record per track."""
    records: list[ClipRecord] = []
    if URBANSOUND8K in sources:
        records += read_urbansound8k(source_dir(data_root, URBANSOUND8K))
    if STREET_EXTRA in sources:
        records += street_extra_train_records(data_root, labels)
    if ESC10 in sources and OTHER in labels:
        negatives = read_esc10_negatives(source_dir(data_root, ESC10))
        records += [esc10_other_record(r, labels) for r in negatives if trains_as_other(r)]
    if DEBIAN_SOUNDS in sources:
        records += debian_train_records(data_root, labels) + debian_music_records(data_root, labels)
    return records


BACKGROUND_MIN_SECONDS = 2.0  # shorter Debian effects are events, not backgrounds


def debian_backgrounds(clips: ClipFeatures, params: FrontendParams) -> ClipFeatures:
    """The training Debian effects long enough to be a background (ambiences, rain, crowds, machines):
    they join ESC-10 as noise that targets are mixed into, so a siren is also heard over them."""
    frames = BACKGROUND_MIN_SECONDS * params.sample_rate / params.hop_length
    keep = [
        i
        for i, r in enumerate(clips.records)
        if r.group.startswith(f"{DEBIAN_SOUNDS}:")
        and not r.group.endswith(f":{MUSIC}")
        and clips.clip(i).shape[1] >= frames
    ]
    return clips.subset(keep)


def load_sources(
    data_root: Path, sources: tuple[str, ...], negatives: ClipFeatures | None, params: FrontendParams
) -> tuple[ClipFeatures, tuple[str, ...]]:
    """Cached features of every training clip of ``sources`` and the model's labels."""
    labels = training_labels(sources)
    parts = []
    if URBANSOUND8K in sources:
        us8k = source_dir(data_root, URBANSOUND8K)
        parts.append(load_features(read_urbansound8k(us8k), params, desc="decode UrbanSound8K"))
    if STREET_EXTRA in sources:
        records = street_extra_train_records(data_root, labels)
        parts.append(load_features(records, params, desc="decode street-extra (train half)"))
    if ESC10 in sources:
        if negatives is None:
            raise ValueError(f"source esc10 needs ESC-10 under {data_root} (or --noise-root)")
        parts.append(esc10_other(negatives, labels))
    if DEBIAN_SOUNDS in sources:
        records = debian_train_records(data_root, labels)
        parts.append(load_features(records, params, desc="decode debian-sounds (training packages)"))
        music = load_features(debian_music_records(data_root, labels), params, desc="decode debian music")
        parts.append(music_pieces(music, params))
    clips = concat_features(parts)
    counts = {label: sum(r.label == i for r in clips.records) for i, label in enumerate(labels)}
    logger.info("training clips per label: %s", counts)
    return clips, labels
