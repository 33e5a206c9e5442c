"""The gate's clean-accuracy interval resamples recordings, not clips (training/metrics.py)."""

from __future__ import annotations

import numpy as np
import pytest

from training.metrics import recording_bootstrap_interval


def test_clips_of_one_recording_count_as_one_draw() -> None:
    # 10 recordings of 30 clips each, half of them wholly right: the clips say nothing more than the
    # recordings, so the interval is as wide as for 10 independent clips.
    correct = np.repeat([True, False] * 5, 30)
    recordings = [f"rec{i // 30}" for i in range(300)]
    low, high = recording_bootstrap_interval(correct, recordings)
    assert low <= 0.5 <= high and high - low > 0.4
    # The same 300 outcomes as 300 separate recordings: the usual binomial width (about +-0.057).
    low, high = recording_bootstrap_interval(correct, [f"clip{i}" for i in range(300)])
    assert 0.4 < low < 0.5 < high < 0.6 and high - low < 0.15


def test_a_model_right_or_wrong_everywhere_has_no_spread() -> None:
    recordings = ["a", "a", "b", "c"]
    assert recording_bootstrap_interval(np.ones(4, dtype=bool), recordings) == (1.0, 1.0)
    assert recording_bootstrap_interval(np.zeros(4, dtype=bool), recordings) == (0.0, 0.0)


def test_the_interval_is_fixed_by_its_seed_and_checks_its_input() -> None:
    rng = np.random.default_rng(3)
    correct, recordings = rng.random(50) < 0.6, [f"r{k}" for k in rng.integers(0, 12, 50)]
    first = recording_bootstrap_interval(correct, recordings, seed=1)
    assert recording_bootstrap_interval(correct, recordings, seed=1) == first
    assert recording_bootstrap_interval(correct, recordings, draws=50, seed=2) != first
    with pytest.raises(ValueError, match="4 clips but 3 recording names"):
        recording_bootstrap_interval(np.ones(4, dtype=bool), ["a", "b", "c"])
    assert recording_bootstrap_interval(np.zeros(0, dtype=bool), []) == (0.0, 0.0)
