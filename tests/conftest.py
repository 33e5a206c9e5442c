"""Shared test setup: import paths, the shared-data skip, and small real models built per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"
SHARED_DATA = ROOT.parent / "shared" / "data"

# Tests import helpers as ``support.*`` and the code under test from the checkout, however pytest is run.
for path in (str(TESTS), str(ROOT)):
    if path not in sys.path:
        sys.path.insert(0, path)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``shared_data`` tests cleanly where ../shared/data is absent."""
    if SHARED_DATA.is_dir():
        return
    skip = pytest.mark.skip(reason=f"shared data not found at {SHARED_DATA}")
    for item in items:
        if "shared_data" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The read-only real datasets (UrbanSound8K subset, ESC-10)."""
    return SHARED_DATA


@pytest.fixture(scope="session")
def siren_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real band-energy ONNX model (siren ~ 700-1500 Hz) with a card carrying a passing gate."""
    from support.onnx_models import band_energy_model, write_card

    path = band_energy_model(tmp_path_factory.mktemp("models") / "siren.onnx")
    write_card(path)
    return path
