"""Who owns the sound a model learned from: each training source's licence and attribution.

Training records this list in every checkpoint (``Checkpoint.sources``); export copies it into the model
card, whose ``license`` line is built from it, and NOTICE repeats it for the shipped default. The
strictest term wins: one non-commercial source makes the weights non-commercial.
"""

from __future__ import annotations

import csv
from pathlib import Path

from training.catalog import DEBIAN_SOUNDS, ESC10, STREET_EXTRA, URBANSOUND8K, DataError, source_dir

KNOWN = {
    URBANSOUND8K: {
        "license": "CC BY-NC 3.0",
        "attribution": 'J. Salamon, C. Jacoby and J. P. Bello, "A Dataset and Taxonomy for Urban Sound '
        'Research", ACM Multimedia 2014',
        "non_commercial": True,
    },
    ESC10: {
        "license": "CC BY 3.0",
        "attribution": 'K. J. Piczak, "ESC: Dataset for Environmental Sound Classification", ACM Multimedia '
        "2015; recordings from Freesound.org",
        "non_commercial": False,
    },
    STREET_EXTRA: {
        "license": "no licence stated by the repositories the clips come from (gunshots: a public research "
        "dataset cut from online videos); research and non-commercial models only, per its README",
        "attribution": "street-extra (see its meta.csv for each clip's repository, commit and path)",
        "non_commercial": True,
    },
}


def debian_packages(data_root: Path) -> list[dict]:
    """Each fetched Debian package's name, version and licence summary, from ``debian-sounds/meta.csv``."""
    meta = source_dir(data_root, DEBIAN_SOUNDS) / "meta.csv"
    with meta.open(newline="", encoding="utf-8") as handle:
        rows = {r["package"]: r for r in csv.DictReader(handle)}
    return [
        {"package": name, "version": rows[name]["version"], "license": rows[name]["license"]}
        for name in sorted(rows)
    ]


def source_licences(
    sources: tuple[str, ...], data_root: Path | None, trained_packages: tuple[str, ...] = ()
) -> list[dict]:
    """One entry per training source; Debian sounds list the packages that trained (``trained_packages``)."""
    entries = []
    for source in sources:
        if source in KNOWN:
            entries.append({"source": source, **KNOWN[source]})
            continue
        if source != DEBIAN_SOUNDS:
            raise DataError(f"no licence is known for training source {source!r}")
        packages = debian_packages(data_root or Path("."))
        if trained_packages:
            packages = [p for p in packages if p["package"] in trained_packages]
        entries.append(
            {
                "source": source,
                "license": "DFSG-free Debian data packages, each under its own licence (packages below; the "
                "full copyright files are in debian-sounds/licenses/)",
                "attribution": "the authors named in each package's debian/copyright",
                "non_commercial": False,
                "packages": packages,
            }
        )
    return entries


def licence_line(entries: list[dict]) -> str:
    """The card's one-line licence: every source's licence, and non-commercial if any source is."""
    parts = "; ".join(f"{e['source']}: {e['license']}" for e in entries)
    terms = (
        "non-commercial use only, with attribution"
        if any(e["non_commercial"] for e in entries)
        else "use with attribution"
    )
    return f"Model weights trained on {parts}. Hence: {terms}."
