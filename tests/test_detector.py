"""The detector state machine on made-up score sequences, with the clock passed in."""

from __future__ import annotations

import pytest

from edge_agent.config import ConfigError, DetectorConfig
from edge_agent.detector import Detection, Detector

LABELS = ("siren", "gun_shot", "dog_bark", "street_music")


def scores(**by_label: float) -> list[float]:
    return [by_label.get(label, 0.0) for label in LABELS]


def run(detector: Detector, sequence: list[dict[str, float]], hop: float = 0.25) -> list[tuple]:
    """Feed one score dict per hop; return (time, label, kind) for every detection."""
    out = []
    for i, by_label in enumerate(sequence):
        now = (i + 1) * hop
        out += [(now, d.label, d.kind) for d in detector.update(scores(**by_label), now)]
    return out


def make(**overrides: object) -> Detector:
    values = {"confirm_n": 2, "confirm_m": 3, "cooldown_s": 1.0, "end_after_s": 0.5, "top_k": 2}
    values.update(overrides)
    return Detector(LABELS, DetectorConfig(**values))


def test_n_of_m_confirmation_starts_an_episode() -> None:
    detector = make()
    sequence = [{"siren": 0.9}, {}, {}, {"siren": 0.9}, {}, {"siren": 0.9}]
    assert run(detector, sequence) == [(1.5, "siren", "start")]


def test_single_spikes_never_start() -> None:
    detector = make()
    assert run(detector, [{"siren": 0.9}, {}, {}] * 5) == []


def test_end_after_the_class_is_not_heard_for_end_after_s() -> None:
    detector = make(end_after_s=0.5)
    events = run(detector, [{"siren": 0.9}] * 4 + [{}] * 4)
    assert events == [(0.5, "siren", "start"), (1.5, "siren", "end")]  # last hit at 1.0, quiet 0.5 s


def test_short_gaps_do_not_end_an_episode() -> None:
    detector = make(end_after_s=0.6)
    sequence = [{"siren": 0.9}] * 3 + [{}, {}] + [{"siren": 0.9}] * 3 + [{}] * 3
    assert run(detector, sequence) == [(0.5, "siren", "start"), (2.75, "siren", "end")]


def test_cooldown_suppresses_a_restart_then_allows_it() -> None:
    detector = make(cooldown_s=1.0, end_after_s=0.25)
    sequence = [{"siren": 0.9}] * 2 + [{}] + [{"siren": 0.9}] * 2 + [{}] * 2 + [{"siren": 0.9}] * 4
    events = run(detector, sequence)
    # ends at 0.75; hits at 1.0/1.25 fall inside the cooldown (until 1.75); the run from 2.0 restarts at 2.25
    assert events == [(0.5, "siren", "start"), (0.75, "siren", "end"), (2.25, "siren", "start")]


def test_per_class_thresholds_and_listen_list() -> None:
    detector = make(listen=("siren", "gun_shot"), thresholds={"siren": 0.8, "gun_shot": 0.3})
    sequence = [{"siren": 0.7, "gun_shot": 0.35, "dog_bark": 0.99}] * 3
    assert run(detector, sequence) == [(0.5, "gun_shot", "start")]  # dog_bark is not listened to


def test_thresholds_default_to_the_models_suggestion_then_half() -> None:
    detector = Detector(LABELS, DetectorConfig(thresholds={"siren": 0.9}), {"siren": 0.2, "gun_shot": 0.7})
    assert detector.thresholds == {"siren": 0.9, "gun_shot": 0.7, "dog_bark": 0.5, "street_music": 0.5}


def test_events_carry_scores_times_and_top_k() -> None:
    detector = make(end_after_s=0.25)
    starts = detector.update(scores(siren=0.6, street_music=0.3), 1.0)
    starts += detector.update(scores(siren=0.7, street_music=0.2), 1.25)
    detector.update(scores(siren=0.95, dog_bark=0.05), 1.5)
    end = detector.update(scores(), 1.75)
    assert starts == [Detection("siren", "start", 0.7, 1.25, None, (("siren", 0.7), ("street_music", 0.2)))]
    assert end == [Detection("siren", "end", 0.95, 1.25, 1.75, (("siren", 0.95), ("dog_bark", 0.05)))]


def test_flush_ends_open_episodes() -> None:
    detector = make()
    run(detector, [{"siren": 0.9, "gun_shot": 0.9}] * 2)
    assert sorted(detector.active()) == ["gun_shot", "siren"]
    ended = detector.flush(9.0)
    assert sorted((d.label, d.kind, d.ended_at) for d in ended) == [
        ("gun_shot", "end", 9.0),
        ("siren", "end", 9.0),
    ]
    assert detector.active() == [] and detector.flush(10.0) == []


def test_labels_the_model_lacks_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="^detector.listen: 'jackhammer' is not a label of this model"):
        Detector(LABELS, DetectorConfig(listen=("jackhammer",)))
    with pytest.raises(ConfigError, match="^detector.thresholds.horn: not a label of this model"):
        Detector(LABELS, DetectorConfig(thresholds={"horn": 0.5}))


def test_wrong_score_count_is_rejected() -> None:
    with pytest.raises(ValueError, match="expected 4 scores, got 2"):
        make().update([0.1, 0.2], 0.0)
