"""Licensed non-target sound from Debian's DFSG-free data packages, fetched once into a training cache.

``earshot fetch-sounds`` runs ``apt-get download`` + ``dpkg -x`` for each package, keeps the sound
effects and ambiences that are none of the ten classes, and writes a source folder in the layout the
catalog reads (``meta.csv`` + the files, one ``licenses/<package>.copyright`` per package):

    <root>/meta.csv            filename, package, version, license, seconds, category, group
    <root>/<package>/...       the extracted files, as the package ships them
    <root>/licenses/<package>.copyright

Every file whose path names one of our classes or something a gunshot detector must not learn to ignore
(explosions, weapons, alarms) is left out: a game's "gun" effect labelled ``other`` would teach the model
to miss gunshots. Music is kept as kind ``music``: hours of tonal sound a siren detector must not fire
on. The training packages' music trains as ``street_music`` (music is not "none of these" for a model
with a street-music class); the evaluation packages' music is held out with their effects.

Only training and evaluation commands read this; the agent never does. Packages reserved for release
judging are refused.
"""

from __future__ import annotations

import csv
import logging
import re
import shutil
import subprocess
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf

logger = logging.getLogger(__name__)

SOURCE_NAME = "debian-sounds"
RESERVED_FOR_JUDGING = frozenset({"scorched3d-data", "simutrans-pak64", "lincity-ng-data"})
# Packages whose sound is used: game and desktop data with effects and ambiences (nature, water, weather,
# machines, crowds, household, voices). The first ones train; EVALUATION_PACKAGES are held out for
# false-alarm hours and threshold calibration, so a threshold is never set on audio the model learned.
TRAINING_PACKAGES = (
    "megaglest-data",
    "wesnoth-1.16-data",
    "freedroidrpg-data",
    "openttd-opensfx",
    "supertux-data",
    "frozen-bubble-data",
    "pingus-data",
    "tuxpaint-data",
    "neverball-data",
    "xmoto-data",
    "7kaa-data",
    "sound-theme-freedesktop",
    "oxygen-sounds",
    "0ad-data",
    "minetest-data",
    "warzone2100-data",
)
EVALUATION_PACKAGES = (
    "widelands-data",
    "freeciv-data",
    "extremetuxracer-data",
    "freeorion-data",
    "wesnoth-1.16-music",
    "supertuxkart-data",
    "hedgewars-data",
)
AUDIO_SUFFIXES = (".ogg", ".wav", ".flac", ".oga")
ZIP_SUFFIXES = (".zip", ".wz", ".pk3")
EFFECT, MUSIC = "effect", "music"  # a file's kind: effects may train as ``other``; music only evaluates
MIN_SECONDS = 0.3  # clicks shorter than a third of a window teach nothing
MAX_SECONDS = {EFFECT: 90.0, MUSIC: 600.0}  # longer "effects" are soundtracks in disguise
MUSIC_WORDS = re.compile(r"music|song|soundtrack", re.IGNORECASE)
# Path words that name one of our ten classes or an impulsive/alarm sound too close to an alert label.
EXCLUDED_WORDS = re.compile(
    r"theme|jingle|siren|alarm|horn|klaxon|gun|shot|shoot|rifle|pistol|musket|"
    r"attack|bullet|ricochet|grenade|weapon|cannon|mortar|artillery|fire|explo|bang|blast|bomb|boom|missile|"
    r"rocket|dog|bark|woof|drill|jackhammer|hammer|engine|motor|car|truck|tank|child|kid|aircon|street",
    re.IGNORECASE,
)
META_COLUMNS = ("filename", "package", "version", "license", "seconds", "kind", "category", "group")


class FetchError(RuntimeError):
    """A package could not be fetched or unpacked; the message names it and the command."""


@dataclass(frozen=True)
class SoundFile:
    """One kept file of one package."""

    filename: str  # relative to the source root
    package: str
    version: str
    license: str
    seconds: float
    kind: str  # EFFECT or MUSIC
    category: str  # the folder the package files it under (ambient, birds, ui, ...)


def refuse_reserved(packages: Iterable[str]) -> None:
    """ValueError naming the first package that is reserved for release judging."""
    for package in packages:
        if package in RESERVED_FOR_JUDGING:
            raise ValueError(f"{package} is reserved for release judging: it may not be fetched for training")


def kind_of(relative: str) -> str | None:
    """EFFECT or MUSIC for a package file we may use as non-target sound; None for the rest."""
    if not relative.lower().endswith(AUDIO_SUFFIXES) or EXCLUDED_WORDS.search(relative):
        return None
    return MUSIC if MUSIC_WORDS.search(relative) else EFFECT


def license_summary(copyright_text: str) -> str:
    """The distinct ``License:`` short names of a Debian copyright file, e.g. ``GPL-2+ / CC-BY-SA-3.0``."""
    names = dict.fromkeys(
        m.group(1).strip() for m in re.finditer(r"^License:\s*(\S[^\n]*)$", copyright_text, re.MULTILINE)
    )
    return " / ".join(names) or "see copyright file"


def category_of(relative: Path) -> str:
    """The innermost folder a package files a sound under (its own category word)."""
    return relative.parent.name or "top"


def _run(command: list[str], cwd: Path) -> None:
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        raise FetchError(f"{' '.join(command)} failed: {detail[-1] if detail else result.returncode}")


def _version(deb: Path) -> str:
    result = subprocess.run(
        ["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() or "unknown"


def extract_zipped_audio(target: Path) -> int:
    """Unpack the audio members of zip archives a package ships (0 A.D. keeps its sounds in public.zip)
    beside each archive, in ``<archive>.d/``; returns how many files were written. Warzone 2100's ``.wz``
    and Quake-style ``.pk3`` files are zip archives too."""
    written = 0
    archives = [p for p in target.rglob("*") if p.suffix.lower() in ZIP_SUFFIXES and zipfile.is_zipfile(p)]
    for archive in sorted(archives):
        with zipfile.ZipFile(archive) as bundle:
            members = [m for m in bundle.namelist() if m.lower().endswith(AUDIO_SUFFIXES) and ".." not in m]
            bundle.extractall(archive.with_name(f"{archive.name}.d"), members)
            written += len(members)
    return written


def apt_download(package: str, folder: Path) -> None:
    """``apt-get download``: the package's .deb into ``folder`` (needs the apt sources, not root)."""
    _run(["apt-get", "download", package], folder)


Download = Callable[[str, Path], None]


def unpack_package(package: str, root: Path, download: Download = apt_download) -> tuple[Path, str]:
    """Download + ``dpkg -x`` into ``root/<package>``; (its folder, its version). Idempotent."""
    target = root / package
    done = target / ".unpacked"
    debs = root / ".debs"
    debs.mkdir(parents=True, exist_ok=True)
    if not done.is_file():
        for old in debs.glob(f"{package}_*.deb"):
            old.unlink()
        download(package, debs)
        deb = next(debs.glob(f"{package}_*.deb"), None)
        if deb is None:
            raise FetchError(f"downloading {package} left no .deb in {debs}")
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        _run(["dpkg", "-x", str(deb), str(target)], root)
        extract_zipped_audio(target)
        done.write_text(_version(deb))
        deb.unlink()  # the unpacked tree is what is used; the archive only costs disk
    return target, done.read_text().strip()


def package_sounds(package: str, root: Path, download: Download = apt_download) -> list[SoundFile]:
    """Unpack one package and list its kept sound files with their lengths and licence."""
    target, version = unpack_package(package, root, download)
    copyright_file = target / "usr" / "share" / "doc" / package / "copyright"
    licenses = root / "licenses"
    licenses.mkdir(exist_ok=True)
    text = copyright_file.read_text(errors="replace") if copyright_file.is_file() else ""
    (licenses / f"{package}.copyright").write_text(text or f"{package}: no copyright file shipped\n")
    summary = license_summary(text)
    sounds = []
    for path in sorted(p for p in target.rglob("*") if p.is_file() and not p.is_symlink()):
        relative = path.relative_to(target)
        kind = kind_of(str(relative))
        if kind is None:
            continue
        try:
            info = sf.info(str(path))
        except Exception:  # soundfile.LibsndfileError: a format libsndfile cannot read; not ours to fix
            continue
        seconds = info.frames / info.samplerate if info.samplerate else 0.0
        if MIN_SECONDS <= seconds <= MAX_SECONDS[kind]:
            filename = str(path.relative_to(root))
            category = category_of(relative)
            sounds.append(SoundFile(filename, package, version, summary, round(seconds, 3), kind, category))
    return sounds


def write_meta(root: Path, sounds: list[SoundFile]) -> Path:
    """``root/meta.csv``, one row per kept file (``group`` is the package: splits keep a package whole)."""
    meta = root / "meta.csv"
    partial = meta.with_suffix(".partial")
    with partial.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(META_COLUMNS)
        for s in sounds:
            writer.writerow(
                [s.filename, s.package, s.version, s.license, s.seconds, s.kind, s.category, s.package]
            )
    partial.replace(meta)
    return meta


def fetch(packages: Iterable[str], root: Path, download: Download = apt_download) -> list[SoundFile]:
    """Fetch and index every package under ``root``; the index covers exactly ``packages``."""
    packages = list(dict.fromkeys(packages))
    refuse_reserved(packages)
    root.mkdir(parents=True, exist_ok=True)
    sounds: list[SoundFile] = []
    for package in packages:
        found = package_sounds(package, root, download)
        hours = {kind: sum(s.seconds for s in found if s.kind == kind) / 3600 for kind in (EFFECT, MUSIC)}
        logger.info(
            "%s: %s files kept, %.2f h of effects, %.2f h of music",
            package,
            len(found),
            hours[EFFECT],
            hours[MUSIC],
        )
        sounds.extend(found)
    write_meta(root, sounds)
    return sounds
