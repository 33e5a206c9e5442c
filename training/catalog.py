"""Every shared source's clips as one record (label name, source, recording group), for evaluation streams
and cross-source splits.

Three sources sit side by side under one data root (``../shared/data``): UrbanSound8K (the subset or the
full dataset, found by its ``metadata/UrbanSound8K.csv``), ``esc10`` and ``street-extra``. A clip's
``group`` is its recording, so that a split can keep every slice of a recording on one side.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

from edge_agent.labels import URBANSOUND8K_LABELS
from training.data import cache_dir, read_urbansound8k
from training.debian_sounds import SOURCE_NAME as DEBIAN_SOUNDS

URBANSOUND8K, STREET_EXTRA, ESC10 = "urbansound8k", "street-extra", "esc10"
SOURCES = (URBANSOUND8K, STREET_EXTRA, ESC10, DEBIAN_SOUNDS)
STREET_EXTRA_NEGATIVE = "negative"  # street-extra's label for clips that are none of the ten classes


class DataError(ValueError):
    """A source is missing or malformed; one-line message naming the file."""


@dataclass(frozen=True)
class Clip:
    """One audio clip of one source."""

    path: Path
    label: str  # a model label (siren, dog_bark, ...), or the source's own name for none-of-ours clips
    source: str  # one of SOURCES
    group: str  # the recording (fsID, street-extra group, Freesound id): splits never share one
    fold: int | None = None  # the source's own fold, where it has folds
    category: str = ""  # the finer description reports show (street-extra category, ESC-10 class)

    @property
    def recording(self) -> tuple[str, str]:
        """(source, group): a recording's identity across sources."""
        return self.source, self.group


def find_urbansound8k(data_root: Path) -> Path:
    """The folder under ``data_root`` holding ``metadata/UrbanSound8K.csv`` (the subset or the full set)."""
    found = sorted(p.parent.parent for p in data_root.glob("*/metadata/UrbanSound8K.csv"))
    if not found:
        raise DataError(f"no UrbanSound8K under {data_root} (looked for */metadata/UrbanSound8K.csv)")
    return found[0]


def read_urbansound8k_clips(root: Path) -> list[Clip]:
    """UrbanSound8K clips present on disk, labelled by class name, grouped by ``fsID``."""
    try:
        records = read_urbansound8k(root)
    except ValueError as error:
        raise DataError(str(error)) from None
    return [
        Clip(
            r.path, URBANSOUND8K_LABELS[r.label], URBANSOUND8K, r.group, r.fold, URBANSOUND8K_LABELS[r.label]
        )
        for r in records
    ]


def _rows(meta: Path, columns: tuple[str, ...]) -> list[dict[str, str]]:
    """A metadata CSV's rows; DataError when it is missing or lacks a column."""
    if not meta.is_file():
        raise DataError(f"{meta} is missing")
    with meta.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{meta} has no column {missing[0]!r}")
        return list(reader)


def esc10_group(filename: str) -> str:
    """The Freesound recording of an ESC-10 file ``{class}-{fold}-{freesound id}-{take}.ogg``."""
    parts = Path(filename).stem.rsplit("-", 3)
    return parts[2] if len(parts) == 4 else Path(filename).stem


def read_esc10_clips(root: Path) -> list[Clip]:
    """All ESC-10 clips present, labelled by their category (only ``dog_bark`` is also one of ours)."""
    rows = _rows(root / "meta.csv", ("filename", "fold", "category"))
    return [
        Clip(
            root / "audio" / r["filename"],
            r["category"],
            ESC10,
            esc10_group(r["filename"]),
            int(r["fold"]),
            r["category"],
        )
        for r in rows
        if (root / "audio" / r["filename"]).is_file()
    ]


def read_street_extra_clips(root: Path) -> list[Clip]:
    """All street-extra clips present: ``siren``, ``gun_shot`` and ``negative``, grouped by ``group``."""
    rows = _rows(root / "meta.csv", ("filename", "label", "category", "group"))
    return [
        Clip(root / "audio" / r["filename"], r["label"], STREET_EXTRA, r["group"], None, r["category"])
        for r in rows
        if (root / "audio" / r["filename"]).is_file()
    ]


def read_debian_sounds_clips(root: Path) -> list[Clip]:
    """Sounds ``earshot fetch-sounds`` indexed: label is the kind (``effect`` or ``music``, none of ours),
    group the Debian package (a package is one source: splits keep it whole)."""
    rows = _rows(root / "meta.csv", ("filename", "package", "kind", "category"))
    return [
        Clip(
            root / r["filename"],
            r["kind"],
            DEBIAN_SOUNDS,
            r["package"],
            None,
            f"{r['package']}:{r['category']}",
        )
        for r in rows
        if (root / r["filename"]).is_file()
    ]


READERS: dict[str, Callable[[Path], list[Clip]]] = {
    URBANSOUND8K: read_urbansound8k_clips,
    STREET_EXTRA: read_street_extra_clips,
    ESC10: read_esc10_clips,
    DEBIAN_SOUNDS: read_debian_sounds_clips,
}


def source_dir(data_root: Path, source: str) -> Path:
    """Where ``source`` lives under the data root; DataError naming what is missing.

    ``debian-sounds`` is fetched, not shared: it may sit under the data root or in the training cache
    (``$EARSHOT_CACHE/debian-sounds``, where ``earshot fetch-sounds`` puts it)."""
    if source == URBANSOUND8K:
        return find_urbansound8k(data_root)
    if source == DEBIAN_SOUNDS:
        for path in (data_root / source, cache_dir() / source):
            if (path / "meta.csv").is_file():
                return path
        raise DataError(f"no {source} under {data_root} or {cache_dir()}: run 'earshot fetch-sounds' first")
    path = data_root / source
    if not path.is_dir():
        raise DataError(f"no {source} under {data_root} ({path} is missing)")
    return path


def read_source(data_root: Path, source: str) -> list[Clip]:
    """Every clip of one source under the data root; DataError when it holds none."""
    root = source_dir(data_root, source)
    clips = READERS[source](root)
    if not clips:
        raise DataError(f"{root} lists no clip whose audio is present")
    return clips


def clip_seconds(path: Path) -> float:
    """A clip's length from its header (no decoding)."""
    try:
        info = sf.info(str(path))
    except Exception as error:  # soundfile.LibsndfileError: unreadable or not audio
        raise DataError(f"cannot read audio file {path}: {str(error).strip().splitlines()[0]}") from None
    return info.frames / info.samplerate
