"""NOTICE names every source each committed model learned from, as the model's card lists them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCE_TITLES = {  # how NOTICE names each catalog source
    "urbansound8k": "UrbanSound8K",
    "esc10": "ESC-10",
    "street-extra": "street-extra",
    "debian-sounds": "Debian",
}
CARDS = sorted((ROOT / "edge_agent" / "models").glob("*.card.json")) + sorted(
    (ROOT / "training" / "results").glob("*/*.card.json")
)


@pytest.mark.parametrize("card_file", [c for c in CARDS if "training_sources" in json.loads(c.read_text())])
def test_notice_names_every_training_source_and_package(card_file: Path) -> None:
    card = json.loads(card_file.read_text())
    notice = " ".join((ROOT / "NOTICE").read_text().split())  # wrapped lines read as one
    assert str(card_file.parent.relative_to(ROOT)) in notice or card_file.name.startswith("default.")
    for entry in card["training_sources"]:
        assert SOURCE_TITLES[entry["source"]] in notice, entry["source"]
        assert entry["license"].split(" (")[0].split(";")[0] in notice, entry["source"]
        for package in entry.get("packages", []):
            assert f"{package['package']} {package['version']}" in notice, package["package"]
    assert "non-commercial" not in card["license"] or "non-commercial" in notice
