"""When a recording started, from the file's own metadata, so file events carry the time they were heard.

Two sources, in this order:

- a Broadcast WAV ``bext`` chunk's OriginationDate and OriginationTime (field recorders write it). BWF
  stores local time without a zone; it is read in the agent's time zone (``TZ``), so run the agent in the
  recorder's zone;
- a date tag (WAV LIST/INFO ``ICRD``, FLAC/Ogg ``DATE``) holding a full ISO 8601 date-time *with* a zone
  (``2026-05-01T14:03:00+02:00``). A bare date or year (common in music files) says nothing about the
  time of day and is ignored.

Anything else (no metadata, an implausible time) gives None: the file's events then count from when the
agent began reading it, and their ``source`` offsets are the reliable part (events.py).
"""

from __future__ import annotations

import logging
import re
import struct
import time
from datetime import datetime
from pathlib import Path

logger = logging.getLogger(__name__)

BEXT_DATE_OFFSET = 320  # after Description (256), Originator (32), OriginatorReference (32)
MAX_CHUNKS = 64  # a RIFF header is scanned this far for ``bext``; a hostile file cannot make it loop
_BEXT_STAMP = re.compile(r"^(\d{4})\D(\d{2})\D(\d{2})(\d{2})\D(\d{2})\D(\d{2})$")  # BWF allows any separator
EARLIEST = 946684800.0  # 2000-01-01: an unset recorder clock reads 1970 or 1980
TOLERANCE_S = 86400.0  # a start later than tomorrow is a wrong clock, not a recording


def recorded_start(path: str | Path) -> tuple[float, str] | None:
    """(Unix time of the file's first sample, where it came from), or None when the file does not say."""
    for how, reader in (("its BWF bext origination time", _bext_start), ("its date tag", _date_tag_start)):
        try:
            start = reader(Path(path))
        except (OSError, ValueError, RuntimeError, struct.error):  # unreadable metadata is no metadata
            start = None
        if start is not None and EARLIEST <= start <= time.time() + TOLERANCE_S:
            return start, how
    return None


def _bext_start(path: Path) -> float | None:
    """OriginationDate + OriginationTime of a RIFF/WAVE file's ``bext`` chunk, as local time."""
    with path.open("rb") as handle:
        head = handle.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
            return None
        for _ in range(MAX_CHUNKS):
            header = handle.read(8)
            if len(header) < 8:
                return None
            chunk_id, size = header[:4], struct.unpack("<I", header[4:])[0]
            if chunk_id == b"bext":
                body = handle.read(min(size, BEXT_DATE_OFFSET + 18))
                return _bext_stamp(body[BEXT_DATE_OFFSET : BEXT_DATE_OFFSET + 18])
            handle.seek(size + (size & 1), 1)  # chunks are word-aligned
    return None


def _bext_stamp(raw: bytes) -> float | None:
    """``yyyy-mm-ddhh:mm:ss`` (any separators) in local time -> Unix time."""
    match = _BEXT_STAMP.match(raw.decode("ascii", errors="replace"))
    if match is None:
        return None
    year, month, day, hour, minute, second = map(int, match.groups())
    return datetime(year, month, day, hour, minute, second).timestamp()  # naive: the local zone


def _date_tag_start(path: Path) -> float | None:
    """A date tag that is a full ISO 8601 date-time with a zone."""
    import soundfile

    with soundfile.SoundFile(str(path)) as handle:
        text = (handle.copy_metadata().get("date") or "").strip()
    if "T" not in text and " " not in text:
        return None  # a date or a year: no time of day
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment.timestamp() if moment.tzinfo is not None else None
