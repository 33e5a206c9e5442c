"""Events from a file say where in the file they are (issue 11, item 25): a ``source`` block with the file
name and the offsets of the episode, and times from the file's own recorded start when it has one (a BWF
``bext`` origination, or a date-time tag with a zone); otherwise from when the agent began reading it."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import jsonschema
import numpy as np
import pytest
import soundfile as sf
from support.onnx_models import noise, siren_sweep, write_audio

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "edge_agent/schemas/event.schema.json").read_text())
SIREN_AT_S = 20.0  # far into the file: with --fast it is processed in well under a second


def street() -> np.ndarray:
    """20 s of quiet noise, 3 s of siren, 3 s of quiet noise, at 16 kHz."""
    siren = siren_sweep(3.0) + noise(3.0, amplitude=0.05, seed=1)
    return np.concatenate(
        [noise(SIREN_AT_S, amplitude=0.05), siren, noise(3.0, amplitude=0.05, seed=2)]
    ).astype(np.float32)


def events(path: Path, model: Path, env: dict[str, str] | None = None) -> list[dict]:
    """The agent's events for ``path`` with --fast, each checked against the event schema."""
    command = [
        sys.executable,
        "-m",
        "edge_agent.cli",
        "agent",
        "--source",
        str(path),
        "--model",
        str(model),
        "--fast",
        "--mqtt",
        "none",
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    found = [json.loads(line) for line in result.stdout.splitlines()]
    validator = jsonschema.Draft202012Validator(SCHEMA, format_checker=jsonschema.FormatChecker())
    for event in found:
        validator.validate(event)
    assert [e["kind"] for e in found] == ["start", "end"], result.stderr[-3000:]
    return found


def unix(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def with_bext(path: Path, date: str, clock: str) -> Path:
    """Insert a Broadcast WAV ``bext`` chunk (origination date and time, local time) after the RIFF header."""
    data = path.read_bytes()
    body = bytearray(602)  # description, originator, reference, date, time, time reference, version, ...
    body[320:330], body[330:338] = date.encode(), clock.encode()
    chunk = b"bext" + struct.pack("<I", len(body)) + bytes(body)
    riff_size = struct.unpack("<I", data[4:8])[0] + len(chunk)
    path.write_bytes(b"RIFF" + struct.pack("<I", riff_size) + data[8:12] + chunk + data[12:])
    return path


def test_file_events_carry_their_offsets_and_say_their_clock(tmp_path: Path, siren_model: Path) -> None:
    path = write_audio(tmp_path / "street.wav", street())
    before = time.time()
    start, end = events(path, siren_model)
    source = start["source"]
    assert source["kind"] == "file" and source["name"] == "street.wav" and source["clock"] == "read"
    assert SIREN_AT_S <= source["started_s"] <= SIREN_AT_S + 1.5 and source["ended_s"] is None
    assert end["source"]["started_s"] == source["started_s"]
    assert SIREN_AT_S + 3.0 <= end["source"]["ended_s"] <= SIREN_AT_S + 6.0
    # Without a recorded start, times count from when the agent began reading: offsets are the truth.
    assert abs(unix(start["started_at"]) - (before + source["started_s"])) < 30


def test_a_bwf_origination_time_dates_the_events(tmp_path: Path, siren_model: Path) -> None:
    path = with_bext(write_audio(tmp_path / "recorder.wav", street()), "2026-05-01", "14:03:00")
    start, _ = events(path, siren_model, env={"TZ": "UTC"})
    assert start["source"]["clock"] == "file"
    recorded = datetime(2026, 5, 1, 14, 3, tzinfo=timezone.utc).timestamp()
    assert unix(start["started_at"]) == pytest.approx(recorded + start["source"]["started_s"], abs=0.002)


def test_a_zoned_date_tag_dates_the_events_and_a_bare_year_does_not(
    tmp_path: Path, siren_model: Path
) -> None:
    for tag, clock in (("2026-05-01T12:00:00+02:00", "file"), ("2026", "read")):
        path = tmp_path / f"tagged-{clock}.flac"
        with sf.SoundFile(path, "w", 16000, 1, format="FLAC") as handle:
            handle.date = tag
            handle.write(street())
        start, _ = events(path, siren_model)
        assert start["source"]["clock"] == clock, tag
        if clock == "file":
            expected = datetime(2026, 5, 1, 10, 0, tzinfo=timezone.utc).timestamp()
            assert unix(start["started_at"]) == pytest.approx(
                expected + start["source"]["started_s"], abs=0.002
            )


def test_live_sources_carry_no_source_block(siren_model: Path) -> None:
    pcm = (np.clip(street()[: 16000 * 26], -1, 1) * 32767).astype("<i2").tobytes()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "agent",
            "--source",
            "-",
            "--model",
            str(siren_model),
            "--mqtt",
            "none",
        ],
        input=pcm,
        capture_output=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    found = [json.loads(line) for line in result.stdout.splitlines()]
    assert found and all("source" not in event for event in found), result.stderr[-2000:]
