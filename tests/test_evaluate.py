"""``earshot evaluate``: stream building, event metrics, group-disjoint splits, and the command end to end."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.onnx_models import noise, siren_sweep, write_audio

from edge_agent.config import AgentConfig, DetectorConfig
from edge_agent.detector import replay_starts
from edge_agent.onnx_model import OnnxModel
from training.catalog import ESC10, STREET_EXTRA, Clip, esc10_group, read_source
from training.cross_source import group_disjoint_split, resolve_split, street_extra_partition
from training.evaluate.cli import main
from training.evaluate.metrics import (
    LabelResult,
    label_result,
    match_starts,
    percentile,
    pool,
)
from training.evaluate.runner import run_stream
from training.evaluate.streams import FILLER, NEGATIVE, TARGET, StreamPlan, plan_stream, plan_within, render

RATE = 16000
FAST_DETECTOR = "[detector]\ncooldown_s = 1.0\nend_after_s = 0.5\n"  # short gaps keep the streams short


def clip(name: str, label: str, group: str | None = None, source: str = STREET_EXTRA) -> Clip:
    return Clip(Path(name), label, source, group or name, None, label)


# --- stream builder ---------------------------------------------------------------------------------


def test_the_plan_places_every_target_once_between_gaps_and_every_negative_once() -> None:
    targets = [(clip(f"t{i}", "siren"), 1.5) for i in range(4)]
    negatives = [(clip(f"n{i}", "negative"), 2.0) for i in range(20)]
    plan = plan_stream("s", targets, negatives, seed=3, min_gap_s=5.0)
    placed = [p for p in plan.placements if p.role == TARGET]
    assert sorted(p.clip.path.name for p in placed) == ["t0", "t1", "t2", "t3"]
    assert sorted(p.clip.path.name for p in plan.placements if p.role == NEGATIVE) == sorted(
        f"n{i}" for i in range(20)
    )
    assert not [p for p in plan.placements if p.role == FILLER]
    onsets = [p.onset_s for p in plan.placements]
    assert onsets == sorted(onsets) and plan.duration_s == pytest.approx(plan.placements[-1].offset_s)
    assert placed[0].onset_s >= 5.0 - 0.2  # the gap before the first target (less the crossfades)
    for before, after in zip(placed, placed[1:], strict=False):
        assert after.onset_s - before.offset_s >= 5.0 - 0.2
    assert plan_stream("s", targets, negatives, seed=3, min_gap_s=5.0) == plan  # seeded
    assert plan_stream("s", targets, negatives, seed=4, min_gap_s=5.0) != plan


def test_too_few_negatives_are_heard_again_as_filler_which_is_not_counted() -> None:
    plan = plan_stream(
        "s", [(clip("t", "siren"), 1.0)] * 3, [(clip("n", "negative"), 2.0)], seed=0, min_gap_s=6.0
    )
    assert [p.role for p in plan.placements].count(NEGATIVE) == 1
    assert plan.seconds(FILLER) > 0
    result = label_result(plan, "siren", [], tolerance_s=1.0, window_s=1.0)
    assert result.nontarget_s == pytest.approx(2.0)  # only the first hearing counts


def test_the_rendered_stream_holds_each_clip_where_the_plan_says() -> None:
    levels = {"t0": 0.5, "t1": -0.4, "n0": 0.1, "n1": 0.2, "n2": -0.3}
    targets = [(clip("t0", "siren"), 1.0), (clip("t1", "gun_shot"), 0.5)]
    negatives = [(clip(name, "negative"), 2.0) for name in ("n0", "n1", "n2")]
    plan = plan_stream("s", targets, negatives, seed=1, min_gap_s=2.0)
    sound = {name: np.full(RATE * 3, level, np.float32) for name, level in levels.items()}
    audio = np.concatenate(
        list(render(plan, RATE, lambda c: sound[c.path.name], seed=0, block=999, floor_dbfs=-300.0))
    )
    assert len(audio) == round(plan.duration_s * RATE)
    for placement in plan.placements:  # inside each clip, past its crossfades: that clip's samples alone
        inner = audio[round((placement.onset_s + 0.06) * RATE) : round((placement.offset_s - 0.06) * RATE)]
        assert np.allclose(inner, levels[placement.clip.path.name], atol=1e-6), placement


def test_a_cap_on_hours_shortens_the_stream_and_keeps_every_label() -> None:
    targets = [(clip(f"s{i}", "siren"), 3.0) for i in range(60)] + [
        (clip(f"g{i}", "gun_shot"), 1.0) for i in range(20)
    ]
    negatives = [(clip(f"n{i}", "negative"), 4.0) for i in range(300)]
    full = plan_within("s", targets, negatives, seed=0, min_gap_s=8.0, hours=None)
    capped = plan_within("s", targets, negatives, seed=0, min_gap_s=8.0, hours=0.1)
    assert full.duration_s > 3600 * 0.2 and capped.duration_s <= 3600 * 0.1
    assert {"siren", "gun_shot"} <= {p.clip.label for p in capped.placements if p.role == TARGET}


# --- metrics on made-up detections ------------------------------------------------------------------


def test_starts_match_events_within_the_tolerance_once_each() -> None:
    latencies, unmatched = match_starts(
        [10.0, 30.0, 50.0], [12.0, 31.0, 51.0], [9.0, 11.5, 12.0, 20.0, 32.2, 60.0], tolerance_s=1.25
    )
    assert latencies == [-1.0, pytest.approx(2.2), None]  # 9.0 is in 10 - 1.25 .. 12 + 1.25: the first
    assert unmatched == [20.0, 60.0]  # 11.5 and 12.0 repeat an already detected event: not false


def test_false_alerts_are_counted_per_hour_of_non_target_audio() -> None:
    plan = StreamPlan(
        "s",
        (
            _placed("n0", "negative", 0.0, 600.0, NEGATIVE),
            _placed("t0", "siren", 600.0, 4.0, TARGET),
            _placed("g0", "gun_shot", 604.0, 2.0, TARGET),
            _placed("n1", "dog_bark", 606.0, 594.0, NEGATIVE),
            _placed("n0", "negative", 1200.0, 600.0, FILLER),
        ),
        1800.0,
    )
    starts = [601.5, 605.5, 700.0, 1500.0]  # a hit; one on the gunshot and one on the dog: false; filler
    result = label_result(plan, "siren", starts, tolerance_s=1.25, window_s=1.0)
    assert (result.events, result.detected, result.recall) == (1, 1, 1.0)
    assert result.latencies_s == (1.5,)
    assert result.false_alerts == 2 and result.nontarget_s == pytest.approx(1196.0)
    assert result.false_per_hour == pytest.approx(2 / (1196 / 3600))
    assert dict(result.false_by_category) == {"street-extra:gun_shot": 1, "street-extra:dog_bark": 1}
    one_in_twenty_minutes = LabelResult("siren", 0, 0, 1, 1200.0, ())
    assert one_in_twenty_minutes.false_per_hour == pytest.approx(3.0)
    assert one_in_twenty_minutes.recall is None


def test_latency_percentiles_and_pooling_add_counts_and_hours() -> None:
    a = LabelResult("siren", 4, 3, 1, 1800.0, (1.0, 1.2, 2.0), (("x:a", 1),))
    b = LabelResult("siren", 0, 0, 2, 1800.0, (), (("x:a", 1), ("y:b", 1)))
    pooled = pool([a, b])
    assert (pooled.events, pooled.detected, pooled.false_alerts) == (4, 3, 3)
    assert pooled.false_per_hour == pytest.approx(3.0)
    assert dict(pooled.false_by_category) == {"x:a": 2, "y:b": 1}
    assert percentile(pooled.latencies_s, 50) == pytest.approx(1.2)
    assert percentile(pooled.latencies_s, 95) == pytest.approx(1.92)
    assert percentile((), 50) is None and pooled.to_json()["latency_p50_s"] == pytest.approx(1.2)


def _placed(name: str, label: str, onset: float, seconds: float, role: str):
    from training.evaluate.streams import Placement

    return Placement(clip(name, label), onset, seconds, role)


def test_the_threshold_sweep_reruns_the_detector_as_the_pipeline_did(siren_model: Path) -> None:
    """The curve's operating point is the live run: the pure detector over cached scores gives its starts."""
    model = OnnxModel.load(siren_model)
    config = AgentConfig(detector=DetectorConfig(cooldown_s=1.0, end_after_s=0.5))
    sounds = {"s": siren_sweep(2.0), "n": noise(3.0, seed=1)}
    targets = [(clip("s", "siren", group=f"r{i}"), 2.0) for i in range(3)]
    plan = plan_stream("s", targets, [(clip("n", "negative"), 3.0)] * 4, seed=0, min_gap_s=3.0)
    run = run_stream(plan, model, config, lambda c: sounds[c.path.name], seed=0, progress=False)
    scores = run.track.scores[:, model.labels.index("siren")]
    again = replay_starts(scores, run.track.times, "siren", 0.5, config.detector)
    assert again == run.starts["siren"] and len(again) == 3
    assert len(run.track.times) == pytest.approx((plan.duration_s - 1.0) / 0.256 + 1, abs=2)  # every window


# --- group-disjoint splits --------------------------------------------------------------------------

recordings = st.lists(
    st.tuples(st.sampled_from(["siren", "gun_shot", "negative"]), st.integers(0, 12)), min_size=1, max_size=80
)


@settings(max_examples=60, deadline=None)
@given(rows=recordings, fraction=st.floats(0.05, 0.95), seed=st.integers(0, 10))
def test_group_disjoint_split_never_shares_a_recording(
    rows: list[tuple[str, int]], fraction: float, seed: int
) -> None:
    clips = [
        clip(f"{label}-{group}-{i}.ogg", label, group=f"{label}{group}")
        for i, (label, group) in enumerate(rows)
    ]
    train, test = group_disjoint_split(clips, fraction, seed)
    assert not {c.recording for c in train} & {c.recording for c in test}
    assert sorted(map(str, [c.path for c in train + test])) == sorted(str(c.path) for c in clips)
    for label in {c.label for c in clips}:
        groups = {c.recording for c in clips if c.label == label}
        if len(groups) >= 2:  # every label with two recordings is on both sides
            assert any(c.label == label for c in train) and any(c.label == label for c in test)
    assert group_disjoint_split(clips, fraction, seed) == (train, test)


def test_a_recording_with_several_labels_stays_whole() -> None:
    clips = [
        clip("a1", "siren", "A"),
        clip("a2", "negative", "A"),
        clip("b", "siren", "B"),
        clip("c", "siren", "C"),
        clip("d", "negative", "D"),
    ]
    train, test = group_disjoint_split(clips, 0.5, seed=2)
    assert not {c.recording for c in train} & {c.recording for c in test}


def test_split_names_and_esc10_recordings() -> None:
    assert resolve_split("us8k-fold3").name == "us8k-fold3"
    with pytest.raises(ValueError, match="unknown split 'nope'"):
        resolve_split("nope")
    assert esc10_group("person_sneeze-1-115545-A.ogg") == "115545"
    with pytest.raises(ValueError, match="test_fraction"):
        group_disjoint_split([], 1.0, 0)


# --- the command end to end, on a tiny dataset laid out like the shared one -------------------------


def make_data_root(root: Path) -> Path:
    """UrbanSound8K (fold 10), street-extra and ESC-10 folders with a few seconds of synthetic audio."""
    us8k = root / "urbansound8k-subset"
    rows = [
        ("1-8-0-0.wav", "1", "8", "siren", siren_sweep(2.0)),
        ("2-8-0-0.wav", "2", "8", "siren", siren_sweep(1.5, period_s=0.7)),
        ("3-3-0-0.wav", "3", "3", "dog_bark", noise(2.0, seed=3)),
        ("4-5-0-0.wav", "4", "5", "engine_idling", noise(3.0, seed=4)),
        ("5-3-0-1.wav", "5", "3", "dog_bark", noise(2.0, seed=5)),
        ("6-3-0-0.wav", "6", "3", "dog_bark", noise(2.0, seed=6)),
    ]
    (us8k / "metadata").mkdir(parents=True)
    with (us8k / "metadata" / "UrbanSound8K.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"])
        for name, fs_id, class_id, label, audio in rows:
            write_audio(us8k / "audio" / "fold10" / name, audio)
            writer.writerow([name, fs_id, 0, 2, 1, 10, class_id, label])
    extra = root / "street-extra"
    extra_rows = [
        ("siren/a_0.ogg", "siren", "police", "a", siren_sweep(2.0)),
        ("siren/b_0.ogg", "siren", "samu", "b", siren_sweep(1.5, low_hz=900)),
        ("gun_shot/g_0.ogg", "gun_shot", "AK-47", "AK-47", noise(0.5, amplitude=0.5, seed=9)),
    ]
    extra_rows += [
        (f"negative/n{i}.ogg", "negative", "traffic", f"n{i}", noise(2.5, seed=10 + i)) for i in range(4)
    ]
    _write_meta(
        extra,
        ["filename", "label", "category", "group", "seconds"],
        [(f, label, cat, group, len(a) / RATE, a) for f, label, cat, group, a in extra_rows],
    )
    esc = root / "esc10"
    _write_meta(
        esc,
        ["filename", "fold", "category"],
        [
            (f"{cat}-1-{100 + i}-A.ogg", 1, cat, noise(2.0, seed=20 + i))
            for i, cat in enumerate(("rain", "dog_bark", "chainsaw"))
        ],
    )
    return root


def _write_meta(folder: Path, columns: list[str], rows: list[tuple]) -> None:
    folder.mkdir(parents=True)
    with (folder / "meta.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for *fields, audio in rows:
            write_audio(folder / "audio" / fields[0], audio)
            writer.writerow(fields)


def test_evaluate_end_to_end_on_a_tiny_dataset(
    tmp_path: Path, siren_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data, out = make_data_root(tmp_path / "data"), tmp_path / "out"
    config = tmp_path / "agent.toml"
    config.write_text(FAST_DETECTOR)
    code = main(
        [
            "--model",
            str(siren_model),
            "--config",
            str(config),
            "--data-root",
            str(data),
            "--out",
            str(out),
            "--json",
            "--no-progress",
        ]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    splits = {s["name"]: s for s in report["splits"]}
    assert list(splits) == ["street-extra", "us8k-fold10", "esc10"]
    siren = splits["street-extra"]["labels"]["siren"]
    assert (siren["events"], siren["detected"], siren["false_alerts"]) == (2, 2, 0)
    assert 0 < siren["latency_p50_s"] <= report["tolerance_s"] + 2.0
    assert splits["street-extra"]["labels"]["gun_shot"]["recall"] == 0.0  # a noise burst is no gunshot here
    assert splits["us8k-fold10"]["labels"]["siren"]["recall"] == 1.0
    assert splits["esc10"]["target_events"] == 0 and splits["esc10"]["labels"]["siren"]["recall"] is None
    assert splits["esc10"]["labels"]["siren"]["nontarget_hours"] == pytest.approx(6.0 / 3600, rel=0.05)
    pooled = report["pooled"]["siren"]
    assert (pooled["events"], pooled["detected"]) == (4, 4)
    assert pooled["nontarget_hours"] == pytest.approx(
        sum(s["labels"]["siren"]["nontarget_hours"] for s in report["splits"])
    )
    curve = pooled["curve"]
    assert [p["threshold"] for p in curve] == sorted(p["threshold"] for p in curve)
    assert curve[0]["recall"] >= curve[-1]["recall"]
    for name in (
        "evaluate.md",
        "evaluate.json",
        "tradeoff-siren.png",
        "tradeoff-gun_shot.png",
        "ground-truth/street-extra.csv",
    ):
        assert (out / name).stat().st_size > 0, name
    assert "| **pooled** | siren | 1.00 (4/4) |" in (out / "evaluate.md").read_text()
    truth = list(csv.DictReader((out / "ground-truth" / "street-extra.csv").open()))
    assert sorted(r["file"] for r in truth if r["role"] == "target") == [
        "street-extra/audio/gun_shot/g_0.ogg",
        "street-extra/audio/siren/a_0.ogg",
        "street-extra/audio/siren/b_0.ogg",
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--data-root", "{tmp}/absent"], "data root not found"),
        (["--data-root", "{data}", "--model", "{tmp}/none.onnx"], "model file not found"),
        (["--data-root", "{data}", "--splits", "us8k-fold10", "moon"], "unknown split 'moon'"),
        (["--data-root", "{tmp}"], "no street-extra under"),
        (["--data-root", "{data}", "--hours", "0"], "--hours must be positive"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_data_root(tmp_path / "data")
    argv = [a.format(tmp=tmp_path, data=data) for a in args] + ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("earshot evaluate: ")


# --- the real shared data ---------------------------------------------------------------------------


@pytest.mark.shared_data
def test_street_extra_partition_is_group_disjoint(shared_data: Path) -> None:
    clips = read_source(shared_data, STREET_EXTRA)
    train, test = street_extra_partition(clips)
    assert not {c.group for c in train} & {c.group for c in test}
    assert {c.category for c in test if c.label == "gun_shot"}  # at least one gun model is held out
    assert len(train) + len(test) == len(clips)
    assert {c.label for c in read_source(shared_data, ESC10)} >= {"dog_bark", "rain"}


@pytest.mark.shared_data
def test_evaluate_the_default_model_on_the_shared_data(
    tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.perf_counter()
    code = main(
        [
            "--data-root",
            str(shared_data),
            "--hours",
            "0.03",
            "--out",
            str(tmp_path),
            "--json",
            "--no-progress",
        ]
    )
    assert code == 0 and time.perf_counter() - started < 60
    report = json.loads(capsys.readouterr().out)
    assert report["model"]["name"] == "earshot-default"
    assert [s["name"] for s in report["splits"]] == ["street-extra", "us8k-fold10", "esc10"]
    for split in report["splits"]:
        assert split["stream_hours"] <= 0.03 + 1e-9
        assert split["labels"]["siren"]["nontarget_hours"] > 0
    assert report["pooled"]["siren"]["events"] > 0 and report["pooled"]["gun_shot"]["events"] > 0
    assert (tmp_path / "tradeoff-siren.png").is_file()


def test_an_unreadable_clip_is_one_line_naming_it(
    tmp_path: Path, siren_model: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = make_data_root(tmp_path / "data")
    (data / "esc10" / "audio" / "rain-1-100-A.ogg").write_bytes(b"not audio")
    assert (
        main(
            [
                "--model",
                str(siren_model),
                "--data-root",
                str(data),
                "--splits",
                "esc10",
                "--out",
                str(tmp_path / "out"),
                "--no-progress",
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "cannot read audio file" in err and "rain-1-100-A.ogg" in err and len(err.splitlines()) == 1
