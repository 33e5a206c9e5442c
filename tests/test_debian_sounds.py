"""``earshot fetch-sounds``: Debian packages unpacked with the real dpkg, indexed with their licences, split
so that held-out packages and music never train."""

from __future__ import annotations

import csv
import shutil
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from edge_agent.frontend import FrontendParams
from training.catalog import DEBIAN_SOUNDS, read_source
from training.cross_source import resolve_split
from training.data import ClipFeatures, ClipRecord
from training.debian_sounds import (
    EFFECT,
    MUSIC,
    FetchError,
    fetch,
    kind_of,
    license_summary,
)
from training.fetch_sounds_cli import main as fetch_main
from training.sources import (
    DEBIAN_CLIPS_PER_PACKAGE,
    MUSIC_PIECE_SECONDS,
    OPEN_SET_LABELS,
    OTHER,
    debian_music_records,
    debian_train_records,
    music_pieces,
)

pytestmark = pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb (Debian tools)")

TRAINING_PACKAGE, HELD_OUT_PACKAGE = "megaglest-data", "widelands-data"  # one of each list
OTHER_HELD_OUT_PACKAGE = "freeorion-data"
PACKAGES = (TRAINING_PACKAGE, HELD_OUT_PACKAGE, OTHER_HELD_OUT_PACKAGE)
COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Files: *
Copyright: 2010 Somebody
License: CC-BY-SA-3.0

Files: data/sounds/*
License: GPL-2+
"""


def _tone(path: Path, seconds: float, rate: int = 22050) -> None:
    t = np.arange(int(seconds * rate)) / rate
    sf.write(path, (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), rate)


def build_deb(folder: Path, package: str) -> Path:
    """A real .deb (dpkg-deb --build) holding effects, music, sounds named like our classes and a zip."""
    tree = folder / f"{package}-tree"
    sounds = tree / "usr/share/games/demo/sounds"
    (sounds / "ambient").mkdir(parents=True)
    (tree / "usr/share/games/demo/music").mkdir(parents=True)
    _tone(sounds / "ambient" / "rain.wav", 3.0)
    _tone(sounds / "door_creak.wav", 1.0)
    _tone(sounds / "gunshot1.wav", 1.0)  # named like an alert label: left out
    _tone(sounds / "explosion.wav", 1.0)  # too close to a gunshot to call "none of these": left out
    _tone(sounds / "click.wav", 0.1)  # shorter than MIN_SECONDS
    _tone(tree / "usr/share/games/demo/music/track1.wav", 8.0)
    inner = folder / "bird.wav"
    _tone(inner, 2.0)
    with zipfile.ZipFile(tree / "usr/share/games/demo/data.zip", "w") as bundle:
        bundle.write(inner, "audio/birds/bird.wav")
        bundle.writestr("readme.txt", "not audio")
    doc = tree / "usr/share/doc" / package
    doc.mkdir(parents=True)
    (doc / "copyright").write_text(COPYRIGHT)
    (tree / "DEBIAN").mkdir()
    (tree / "DEBIAN" / "control").write_text(
        f"Package: {package}\nVersion: 1.2-3\nArchitecture: all\nMaintainer: test <t@example.org>\n"
        "Description: test data\n"
    )
    deb = folder / f"{package}_1.2-3_all.deb"
    subprocess.run(
        ["dpkg-deb", "--build", "--root-owner-group", str(tree), str(deb)], check=True, capture_output=True
    )
    return deb


@pytest.fixture(scope="module")
def sounds_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``fetch`` run on two locally built packages (a local download instead of apt-get's)."""
    debs = tmp_path_factory.mktemp("debs")
    built = {name: build_deb(debs, name) for name in PACKAGES}
    root = tmp_path_factory.mktemp("data") / DEBIAN_SOUNDS

    def local_download(package: str, folder: Path) -> None:
        shutil.copy(built[package], folder)

    fetch(PACKAGES, root, local_download)
    return root


def test_kinds_keep_effects_and_music_and_leave_out_our_classes() -> None:
    assert kind_of("usr/share/games/x/sounds/ambient/rain.ogg") == EFFECT
    assert kind_of("usr/share/games/x/music/track.ogg") == MUSIC
    for excluded in (
        "sounds/siren.wav",
        "sfx/Gun_fire.ogg",
        "dog/bark2.wav",
        "sounds/Explosion.wav",
        "x.png",
    ):
        assert kind_of(excluded) is None, excluded


def test_license_summary_lists_each_licence_once() -> None:
    assert license_summary(COPYRIGHT + "\nLicense: GPL-2+\n") == "CC-BY-SA-3.0 / GPL-2+"
    assert license_summary("") == "see copyright file"


def test_a_real_package_is_unpacked_indexed_and_licensed(sounds_root: Path) -> None:
    with (sounds_root / "meta.csv").open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if r["package"] == TRAINING_PACKAGE]
    by_name = {Path(r["filename"]).name: r for r in rows}
    assert set(by_name) == {"rain.wav", "door_creak.wav", "track1.wav", "bird.wav"}
    assert by_name["track1.wav"]["kind"] == MUSIC and by_name["rain.wav"]["kind"] == EFFECT
    assert by_name["bird.wav"]["filename"].endswith("data.zip.d/audio/birds/bird.wav")  # unzipped
    assert float(by_name["rain.wav"]["seconds"]) == pytest.approx(3.0)
    assert {r["version"] for r in rows} == {"1.2-3"}
    assert {r["license"] for r in rows} == {"CC-BY-SA-3.0 / GPL-2+"}
    assert (sounds_root / "licenses" / f"{TRAINING_PACKAGE}.copyright").read_text() == COPYRIGHT
    assert not list((sounds_root / ".debs").glob("*.deb"))  # archives are not kept once unpacked


def test_a_second_fetch_reuses_what_is_unpacked(sounds_root: Path) -> None:
    def no_download(package: str, folder: Path) -> None:
        raise AssertionError(f"{package} was downloaded again")

    again = fetch(PACKAGES, sounds_root, no_download)
    assert len(again) == 4 * len(PACKAGES)


def test_a_failed_download_is_a_fetch_error_naming_the_package(tmp_path: Path) -> None:
    with pytest.raises(FetchError, match="no-such-data"):
        fetch(["no-such-data"], tmp_path, lambda package, folder: None)


def test_reserved_packages_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        fetch_main(["--root", str(tmp_path), "--packages", "openttd-opensfx,scorched3d-data"])
    assert stop.value.code == 2
    assert "scorched3d-data is reserved for release judging" in capsys.readouterr().err
    with pytest.raises(ValueError, match="lincity-ng-data"):
        fetch(["lincity-ng-data"], tmp_path)
    assert not (tmp_path / "lincity-ng-data").exists()


def test_held_out_packages_never_train_and_training_music_is_street_music(sounds_root: Path) -> None:
    data_root = sounds_root.parent
    clips = read_source(data_root, DEBIAN_SOUNDS)
    held_out = resolve_split("debian-heldout").select(clips)
    assert {(c.group, c.label) for c in held_out} == {
        (HELD_OUT_PACKAGE, MUSIC),
        (HELD_OUT_PACKAGE, EFFECT),
        (OTHER_HELD_OUT_PACKAGE, MUSIC),
        (OTHER_HELD_OUT_PACKAGE, EFFECT),
    }
    records = debian_train_records(data_root, OPEN_SET_LABELS)
    assert len(records) == 3 <= DEBIAN_CLIPS_PER_PACKAGE
    assert {r.path.name for r in records} == {"rain.wav", "door_creak.wav", "bird.wav"}
    assert all(OPEN_SET_LABELS[r.label] == OTHER for r in records)
    music = debian_music_records(data_root, OPEN_SET_LABELS)
    assert [r.path.name for r in music] == ["track1.wav"] and OPEN_SET_LABELS[
        music[0].label
    ] == "street_music"
    assert {r.path for r in records + music}.isdisjoint({c.path for c in held_out})


def test_music_is_cut_into_pieces_of_whole_windows() -> None:
    params = FrontendParams()
    piece = int(MUSIC_PIECE_SECONDS * params.sample_rate / params.hop_length)
    frames = 2 * piece + params.n_frames - 1  # two whole pieces and a tail one frame short of a window
    power = torch.arange(float(frames)).expand(params.n_mels, frames)
    record = ClipRecord(Path("t.ogg"), 9, 0, "debian-sounds:x:music")
    pieces = music_pieces(ClipFeatures(power, torch.tensor([0, frames]), [record]), params)
    assert [pieces.clip(i).shape[1] for i in range(len(pieces.records))] == [piece, piece]
    assert pieces.clip(1)[0, 0] == piece  # the second piece starts where the first ended


def test_the_source_says_how_to_get_it_when_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EARSHOT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(ValueError, match="run 'earshot fetch-sounds' first"):
        read_source(tmp_path, DEBIAN_SOUNDS)


def test_reverb_only_follows_the_sound_and_decays() -> None:
    from training.augment import Reverb

    power = torch.zeros(4, 40)
    power[:, 10] = 1.0
    reverb = Reverb(
        torch.utils.data.TensorDataset(power[None], torch.zeros(1)),
        FrontendParams(),
        (0.5, 0.5),
        (0.3, 0.3),
        1.0,
    )
    wet = reverb.apply(power)
    assert torch.equal(wet[:, :10], power[:, :10])  # causal: nothing before the onset
    tail = wet[0, 11:20]
    assert tail[0] == pytest.approx(0.3 * 10 ** (-6 * 256 / 16000 / 0.5), rel=1e-3)
    assert bool((tail[1:] < tail[:-1]).all())


def test_colouration_is_smooth_and_bounded() -> None:
    from training.augment import Colouration

    power = torch.ones(64, 5)
    coloured = Colouration(torch.utils.data.TensorDataset(power[None], torch.zeros(1)), 64, 6.0, 1.0).apply(
        power
    )
    gain_db = 10 * torch.log10(coloured[:, 0])
    assert float(gain_db.abs().max()) == pytest.approx(6.0, abs=1e-4)
    assert float(gain_db.diff().abs().max()) < 1.5  # no band jumps: a response, not noise
    assert torch.equal(coloured[:, 0], coloured[:, 4])  # the same response in every frame


def test_held_out_halves_split_by_package(sounds_root: Path) -> None:
    clips = read_source(sounds_root.parent, DEBIAN_SOUNDS)
    held_out = resolve_split("debian-heldout").select(clips)
    calibration = resolve_split("debian-heldout-cal").select(clips)
    test = resolve_split("debian-heldout-test").select(clips)
    assert calibration and test
    assert sorted(c.path for c in calibration + test) == sorted(c.path for c in held_out)
    assert {c.group for c in calibration}.isdisjoint({c.group for c in test})
