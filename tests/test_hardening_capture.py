"""Clip capture on a read-only or full file system (issue 11, item 22): one log line, not a traceback per
clip; every failure counted in earshot_clip_write_failures_total; no ``.part`` file left, and those a
crash left behind are removed at start."""

from __future__ import annotations

import logging
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from support.tmpfs import mounted_tmpfs

from edge_agent.config import CaptureConfig
from edge_agent.metrics import AgentMetrics
from edge_agent.publishers.capture import ClipCapture

RATE = 16000
CLIPS = 5


@pytest.fixture()
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs; skipped where this host cannot mount one."""
    (tmp_path / "fs").mkdir()
    with mounted_tmpfs(tmp_path / "fs", "1m") as base:
        yield base


def make_read_only(mount: Path) -> None:
    """Remount read-only: root's writes fail too, as on a card the kernel remounted after errors."""
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, capture_output=True)


def fill(mount: Path) -> None:
    """Fill the file system to the last block."""
    with (mount / "ballast").open("wb") as handle:
        try:
            while True:
                handle.write(b"\0" * 65536)
                handle.flush()
        except OSError:
            pass


def capture_clips(directory: Path, count: int) -> tuple[ClipCapture, AgentMetrics]:
    """Alert ``count`` times with 1 s of audio around each, then close (all writes are attempted)."""
    metrics = AgentMetrics(CollectorRegistry())
    capture = ClipCapture(
        CaptureConfig(enabled=True, dir=str(directory), pre_roll_s=0.5, post_roll_s=0.5), RATE, metrics
    )
    capture.start()
    noise = np.random.default_rng(0).normal(0, 0.1, RATE).astype(np.float32)
    for n in range(count):
        capture.hear(noise)
        event = {
            "label": "siren",
            "kind": "start",
            "event_id": str(uuid.uuid4()),
            "started_at": f"2026-01-01T00:00:{n:02d}.000Z",
        }
        capture.publish_event(event, (n + 1) * RATE)
    capture.hear(noise)
    capture.close()
    return capture, metrics


def failures(metrics: AgentMetrics) -> float | None:
    return metrics.registry.get_sample_value("earshot_clip_write_failures_total")


@pytest.mark.parametrize("trouble", ["read-only", "full"])
def test_a_clip_dir_that_cannot_be_written_is_one_line_a_metric_and_no_part_files(
    small_fs: Path, trouble: str, caplog: pytest.LogCaptureFixture
) -> None:
    directory = small_fs / "captures"
    directory.mkdir()
    (make_read_only if trouble == "read-only" else fill)(small_fs)
    caplog.set_level(logging.INFO)
    capture, metrics = capture_clips(directory, CLIPS)
    loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(loud) == 1 and loud[0].exc_info is None, [r.getMessage() for r in loud]
    assert "earshot_clip_write_failures_total" in loud[0].getMessage()
    assert failures(metrics) == CLIPS and capture.written == []
    assert not [p.name for p in directory.iterdir() if p.name.endswith(".part")]


def test_part_files_left_by_a_crash_are_removed_at_start(tmp_path: Path) -> None:
    directory = tmp_path / "captures"
    directory.mkdir()
    stale = directory / ".20260101T000000.000Z_siren_1a2b3c4d.flac.part"
    stale.write_bytes(b"half a clip")
    foreign = directory / "notes.part"  # not a name the agent makes: left alone
    foreign.write_text("mine")
    capture, metrics = capture_clips(directory, 1)
    assert not stale.exists() and foreign.exists()
    assert len(capture.written) == 1 and failures(metrics) == 0
