"""``earshot calibrate``: the threshold search over recorded scores (pure, against the real detector), the
TOML snippet, and end to end: the agent run with the snippet raises exactly the alarms it promised."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from hypothesis import given, settings
from hypothesis import strategies as st
from support.onnx_models import noise, siren_sweep, write_audio

from edge_agent.config import DetectorConfig, load_config
from edge_agent.detector import Detector, detector_windows, trailing_mean
from edge_agent.labels import URBANSOUND8K_LABELS
from edge_agent.tools.calibrate import (
    MAX_THRESHOLD,
    ScoreTrack,
    calibrate,
    count_alarms,
    render_table,
    render_toml,
    suggest_threshold,
)

ROOT = Path(__file__).resolve().parents[1]
HOP = 0.256


def naive_alarms(scores: np.ndarray, times: np.ndarray, threshold: float, config: DetectorConfig) -> int:
    """Every window through the real detector: what ``count_alarms`` must equal."""
    detector = Detector(
        ("x",),
        DetectorConfig(
            listen=("x",),
            thresholds={"x": threshold},
            confirm_n=config.confirm_n,
            confirm_m=config.confirm_m,
            cooldown_s=config.cooldown_s,
            end_after_s=config.end_after_s,
            pool_windows=config.pool_windows,
        ),
    )
    return sum(
        d.kind == "start"
        for s, t in zip(scores, times, strict=True)
        for d in detector.update((float(s),), float(t))
    )


def bursts(
    levels: list[float], gap_windows: int = 200, burst_windows: int = 8, floor: float = 0.05
) -> tuple[np.ndarray, np.ndarray]:
    """A score track: quiet floor with one burst per level; (scores, times)."""
    scores = np.full(gap_windows, floor)
    for level in levels:
        scores = np.concatenate([scores, np.full(burst_windows, level), np.full(gap_windows, floor)])
    return scores, 1.0 + HOP * np.arange(len(scores))


@settings(max_examples=60, deadline=None)
@given(
    scores=st.lists(st.sampled_from([0.0, 0.2, 0.45, 0.5, 0.55, 0.9]), min_size=1, max_size=300),
    threshold=st.sampled_from([0.2, 0.5, 0.55, 0.9]),
    n=st.integers(1, 3),
    extra_m=st.integers(0, 3),
    cooldown=st.sampled_from([0.0, 0.5, 3.0]),
    end_after=st.sampled_from([0.0, 0.256, 1.0, 2.0]),
    pool=st.sampled_from([1, 2, 4]),
)
def test_skipping_quiet_windows_counts_exactly_what_the_detector_counts(
    scores: list[float], threshold: float, n: int, extra_m: int, cooldown: float, end_after: float, pool: int
) -> None:
    config = DetectorConfig(
        confirm_n=n, confirm_m=n + extra_m, cooldown_s=cooldown, end_after_s=end_after, pool_windows=pool
    )
    values = np.asarray(scores)
    times = 1.0 + HOP * np.arange(len(values))
    expected = naive_alarms(values, times, threshold, config)
    assert count_alarms("x", values, times, threshold, config) == expected


def test_trailing_mean_is_the_mean_of_the_last_k_windows() -> None:
    scores = np.random.default_rng(0).random(50)
    for k in (1, 3, 7):
        naive = [scores[max(0, i - k + 1) : i + 1].mean() for i in range(len(scores))]
        np.testing.assert_allclose(trailing_mean(scores, k), naive, rtol=1e-12)


def test_pooling_ignores_one_loud_window_and_waits_for_a_sustained_sound() -> None:
    config = DetectorConfig(listen=("x",), thresholds={"x": 0.5}, confirm_n=1, confirm_m=1, pool_windows=4)
    detector = Detector(("x",), config)
    click = [0.1, 0.1, 0.1, 0.95, 0.1, 0.1]  # one loud window: mean of 4 stays at 0.31
    assert not [d for i, s in enumerate(click) for d in detector.update((s,), float(i))]
    sustained = [0.7, 0.7, 0.7]  # the mean of the last four reaches 0.5 on the third window
    starts = [(i, d.score) for i, s in enumerate(sustained) for d in detector.update((s,), 10.0 + i)]
    assert starts == [(2, pytest.approx((0.1 + 3 * 0.7) / 4))]


def test_windows_fed_are_few_when_hits_are_rare() -> None:
    scores, times = bursts([0.9])
    fed = detector_windows(scores >= 0.5, times, confirm_m=3, end_after_s=2.0)
    assert 8 < len(fed) < 30 < len(scores)
    assert len(detector_windows(scores >= 0.95, times, 3, 2.0)) == 0


def test_the_threshold_lands_just_above_the_bursts_the_target_forbids() -> None:
    # Bursts peaking at 0.3, 0.6, 0.6 and 0.8 over ~0.06 h.
    scores, times = bursts([0.3, 0.6, 0.6, 0.8])
    config = DetectorConfig()
    hours = (times[-1] + HOP) / 3600
    one_burst_rate = 1 / hours
    allow_one = suggest_threshold("x", scores, times, hours, config, one_burst_rate, 0.1, current=0.5)
    assert allow_one.met and allow_one.threshold == 0.61 and allow_one.alarms == 1  # only the 0.8 burst
    allow_three = suggest_threshold("x", scores, times, hours, config, 3 * one_burst_rate, 0.1, 0.5)
    assert allow_three.threshold == 0.31 and allow_three.alarms == 3
    allow_all = suggest_threshold("x", scores, times, hours, config, 4 * one_burst_rate, 0.1, 0.5)
    assert allow_all.threshold == 0.1 and allow_all.alarms == 4  # the floor of the search
    none = suggest_threshold("x", scores, times, hours, config, 0.0, 0.1, 0.5)
    assert none.threshold == 0.81 and none.alarms == 0 and none.alarms_per_hour == 0.0


def test_a_class_too_loud_even_at_the_top_is_reported_not_hidden() -> None:
    scores, times = bursts([0.995, 0.995], gap_windows=100)
    hours = (times[-1] + HOP) / 3600
    suggestion = suggest_threshold("x", scores, times, hours, DetectorConfig(), 0.5 / hours, 0.1, 0.5)
    assert not suggestion.met and suggestion.threshold == MAX_THRESHOLD and suggestion.alarms == 2
    assert "TARGET NOT MET" in render_table([suggestion])


def test_the_snippet_is_a_valid_config_with_a_comment_per_class(tmp_path: Path) -> None:
    labels = ("a", "b")
    a, times = bursts([0.7])
    track = ScoreTrack(labels, times, np.stack([a, np.full_like(a, 0.999)], axis=1), times[-1] + HOP)
    config = DetectorConfig(listen=labels)
    suggestions = calibrate(track, labels, config, {"a": 0.5, "b": 0.5}, target_per_hour=0.0)
    snippet = render_toml(suggestions, "site.wav", track.duration_s, 0.0, config)
    path = tmp_path / "snippet.toml"
    path.write_text(snippet)
    loaded = load_config(path, environ={})
    assert dict(loaded.detector.thresholds) == {"a": 0.71, "b": MAX_THRESHOLD}
    assert re.search(
        r"^a = 0\.71  # expected 0\.00 false alarms/hour \(0 in the recording\); was 0\.50$", snippet, re.M
    )
    assert re.search(
        r"^b = 0\.99  # expected [\d.]+ false alarms/hour \(1 in the recording\); was 0\.50; "
        r"TARGET NOT MET even at 0\.99",
        snippet,
        re.M,
    )


def calibrate_cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edge_agent.cli", "calibrate", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def agent_starts(audio: Path, model: Path, config: Path) -> dict[str, int]:
    """Run the real agent with ``config``; count detection starts per label."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edge_agent.cli",
            "agent",
            "--source",
            str(audio),
            "--model",
            str(model),
            "--config",
            str(config),
            "--fast",
            "--mqtt",
            "none",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    counts: dict[str, int] = {}
    for event in map(json.loads, result.stdout.splitlines()):
        if event["kind"] == "start":
            counts[event["label"]] = counts.get(event["label"], 0) + 1
    return counts


def snippet_alarms(snippet: str) -> dict[str, tuple[float, int, bool]]:
    """label -> (threshold, alarms in the recording, target met) from the written snippet."""
    promised = {}
    for line in snippet.splitlines():
        match = re.match(r"^(\w+) = ([\d.]+)  # expected [\d.]+ false alarms/hour \((\d+) in ", line)
        if match:
            promised[match[1]] = (float(match[2]), int(match[3]), "TARGET NOT MET" not in line)
    return promised


def check_end_to_end(
    site: Path, model: Path, tmp_path: Path, target: float
) -> dict[str, tuple[float, int, bool]]:
    """Calibrate every class on ``site``, then run the agent with the snippet: the alarms must match."""
    listen_all = tmp_path / "listen.toml"
    listen_all.write_text("[detector]\nlisten = [" + ", ".join(f'"{x}"' for x in URBANSOUND8K_LABELS) + "]\n")
    out = tmp_path / "snippet.toml"
    result = calibrate_cli(
        "--source",
        str(site),
        "--model",
        str(model),
        "--config",
        str(listen_all),
        "--labels",
        "all",
        "--target-false-alarms-per-hour",
        str(target),
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout.splitlines()[0].split() == ["class", "threshold", "alarms/h", "was", "note"]
    snippet = out.read_text()
    promised = snippet_alarms(snippet)
    assert set(promised) == set(URBANSOUND8K_LABELS), snippet
    combined = tmp_path / "agent.toml"
    combined.write_text(listen_all.read_text() + snippet)
    starts = agent_starts(site, model, combined)
    assert {label: n for label, n in starts.items() if n} == {
        label: alarms for label, (_, alarms, _) in promised.items() if alarms
    }
    hours = sf.info(str(site)).duration / 3600
    for label, (threshold, alarms, met) in promised.items():
        assert (alarms / hours <= target + 1e-9) == met, label
        assert met or threshold == MAX_THRESHOLD, label
    return promised


def test_end_to_end_on_synthetic_street_noise_with_faint_sirens(tmp_path: Path, siren_model: Path) -> None:
    parts = []
    for i in range(6):  # 6 faint siren-like passes in ~2 minutes of noise
        parts += [noise(18.0, amplitude=0.05, seed=i), 0.25 * siren_sweep(3.0) + noise(3.0, amplitude=0.05)]
    site = write_audio(tmp_path / "site.flac", np.concatenate(parts))
    hours = sf.info(str(site)).duration / 3600
    promised = check_end_to_end(site, siren_model, tmp_path, target=2 / hours)
    threshold, alarms, met = promised["siren"]
    assert met and alarms <= 2 and threshold > 0.1  # raised above the faint passes


@pytest.mark.shared_data
def test_end_to_end_on_a_site_made_of_real_esc10_background_clips(
    tmp_path: Path, siren_model: Path, shared_data: Path
) -> None:
    meta = (shared_data / "esc10" / "meta.csv").read_text().splitlines()[1:]
    # Every 10th non-target clip (dog_bark is a target class): 36 clips, 3 minutes, 9 categories.
    clips = sorted(line.split(",")[0] for line in meta if line.split(",")[2] != "dog_bark")[::10]
    audio = shared_data / "esc10" / "audio"
    samples = [sf.read(str(audio / name), dtype="float32", always_2d=True)[0].mean(axis=1) for name in clips]
    site = write_audio(tmp_path / "esc10-site.flac", np.concatenate(samples))
    check_end_to_end(site, siren_model, tmp_path, target=20.0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target-false-alarms-per-hour", "-1"], "--target-false-alarms-per-hour: must be a number >= 0"),
        (["--labels", "siren,banjo"], "--labels: 'banjo' is not a label of this model"),
        (["--min-threshold", "2"], "--min-threshold: must be in 0..0.99, got 2"),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str, siren_model: Path, tmp_path: Path) -> None:
    site = write_audio(tmp_path / "short.wav", noise(3.0))
    result = calibrate_cli("--source", str(site), "--model", str(siren_model), *args)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1 and message in result.stderr, result.stderr


def test_a_live_mic_is_refused_with_a_hint(siren_model: Path) -> None:
    result = calibrate_cli("--source", "mic", "--model", str(siren_model))
    assert result.returncode == 2 and "calibrate needs a recording of the site" in result.stderr
