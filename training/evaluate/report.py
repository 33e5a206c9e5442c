"""``evaluate.json``, ``evaluate.md`` and the trade-off PNGs of one evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers and in CI
import matplotlib.pyplot as plt  # noqa: E402

from training.evaluate.metrics import LabelResult  # noqa: E402
from training.evaluate.run import Evaluation, SplitResult  # noqa: E402
from training.evaluate.streams import FILLER, NEGATIVE, TARGET  # noqa: E402

SCHEMA = "earshot-evaluate/1"
POOLED = "pooled"


def _curve_json(curve: list[tuple[float, LabelResult]]) -> list[dict]:
    return [
        {
            "threshold": t,
            "recall": r.recall,
            "false_alerts_per_hour": r.false_per_hour,
            "detected": r.detected,
            "false_alerts": r.false_alerts,
        }
        for t, r in curve
    ]


def _split_json(split: SplitResult) -> dict:
    plan, run = split.plan, split.run
    return {
        "name": split.spec.name,
        "source": split.spec.source,
        "description": split.spec.description,
        "stream_hours": plan.duration_s / 3600,
        "target_events": sum(p.role == TARGET for p in plan.placements),
        "negative_hours": plan.seconds(NEGATIVE) / 3600,
        "filler_hours": plan.seconds(FILLER) / 3600,
        "wall_s": run.wall_s,
        "realtime_factor": run.wall_s / plan.duration_s if plan.duration_s else None,
        "labels": {
            label: result.to_json() | {"curve": _curve_json(split.curves[label])}
            for label, result in split.labels.items()
        },
    }


def to_json(evaluation: Evaluation, command: str) -> dict:
    """The whole evaluation as plain data, for release tooling."""
    model, detector, clock = evaluation.model, evaluation.config.detector, evaluation.timing
    listen = detector.listen
    return {
        "schema": SCHEMA,
        "command": command,
        "model": {
            "path": model.path,
            "name": model.metadata.name,
            "version": model.metadata.version,
            "sha256": model.sha256,
        },
        "detector": {
            "listen": list(listen),
            "thresholds": {k: evaluation.thresholds[k] for k in listen},
            "confirm_n": detector.confirm_n,
            "confirm_m": detector.confirm_m,
            "pool_windows": detector.pool_windows,
            "end_after_s": detector.end_after_s,
            "cooldown_s": detector.cooldown_s,
        },
        "window_s": clock.window_s,
        "hop_s": clock.hop_s,
        "tolerance_s": clock.tolerance_s,
        "min_gap_s": clock.min_gap_s,
        "seed": evaluation.seed,
        "hours_cap": evaluation.hours,
        "wall_s": evaluation.wall_s,
        "splits": [_split_json(s) for s in evaluation.splits],
        POOLED: {
            label: evaluation.pooled(label).to_json() | {"curve": _curve_json(evaluation.pooled_curve(label))}
            for label in listen
        },
    }


def _number(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _row(split: str, result: dict) -> str:
    """One table row: recall, false alerts/h (count over hours), latency."""
    rate = (
        f"{_number(result['false_alerts_per_hour'], 1)}/h ({result['false_alerts']} in "
        f"{result['nontarget_hours']:.2f} h)"
    )
    recall = (
        "—"
        if result["recall"] is None
        else f"{result['recall']:.2f} ({result['detected']}/{result['events']})"
    )
    latency = f"{_number(result['latency_p50_s'])} / {_number(result['latency_p95_s'])}"
    return f"| {split} | {result['label']} | {recall} | {rate} | {latency} |"


def _results_table(data: dict) -> list[str]:
    lines = [
        "| split | label | event recall | false alerts per hour of non-target audio | "
        "latency p50 / p95 (s) |",
        "|---|---|---|---|---|",
    ]
    for split in data["splits"]:
        lines += [_row(split["name"], result) for result in split["labels"].values()]
    lines += [_row(f"**{POOLED}**", result) for result in data[POOLED].values()]
    return lines


FALSE_ALARM_BUDGET = 1.0  # false alerts per hour an operator tolerates (issue 10's goal)


def at_budget(curve: list[dict], budget: float = FALSE_ALARM_BUDGET) -> dict | None:
    """The curve point with the best recall whose false alerts per hour stay within ``budget``.

    Ties go to the higher threshold. None when no swept threshold keeps within it.
    """
    within = [p for p in curve if (p["false_alerts_per_hour"] or 0.0) <= budget and p["recall"] is not None]
    return max(within, key=lambda p: (p["recall"], p["threshold"]), default=None)


def _budget_row(split: str, label: str, result: dict, budget: float) -> str:
    """Recall at the budget, the threshold that gives it, and what one false alert weighs on these hours."""
    point, hours = at_budget(result["curve"], budget), result["nontarget_hours"]
    resolution = f"{1 / hours:.1f}/h" if hours else "—"
    weight = f"{hours:.2f} h, one alert = {resolution}"
    if point is None:
        return f"| {split} | {label} | none within {budget:g}/h | — | — | {weight} |"
    recall = f"{_number(point['recall'])} ({point['detected']})"
    return f"| {split} | {label} | {recall} | {point['threshold']:.2f} | {point['false_alerts']} | {weight} |"


def _budget_table(data: dict, budget: float = FALSE_ALARM_BUDGET) -> list[str]:
    lines = [
        f"| split | label | best recall at <= {budget:g} false alert/h | threshold | false alerts | "
        "non-target hours |",
        "|---|---|---|---|---|---|",
    ]
    for split in data["splits"]:
        lines += [
            _budget_row(split["name"], label, r, budget)
            for label, r in split["labels"].items()
            if r["recall"] is not None
        ]
    lines += [_budget_row(f"**{POOLED}**", label, r, budget) for label, r in data[POOLED].items()]
    return lines


def _streams_table(data: dict) -> list[str]:
    lines = [
        "| split | what | stream h | target events | negatives h (counted) | filler h | wall s | speed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for s in data["splits"]:
        speed = f"{1 / s['realtime_factor']:.0f}x real time" if s["realtime_factor"] else "—"
        lines.append(
            f"| {s['name']} | {s['description']} | {s['stream_hours']:.2f} | {s['target_events']} | "
            f"{s['negative_hours']:.2f} | {s['filler_hours']:.2f} | {s['wall_s']:.0f} | {speed} |"
        )
    return lines


def _false_alert_lines(data: dict, top: int = 8) -> list[str]:
    lines = ["| split | label | where the false alerts fell (source:category count) |", "|---|---|---|"]
    for split in data["splits"]:
        for label, result in split["labels"].items():
            where = list(result["false_alerts_by_category"].items())[:top]
            lines.append(
                f"| {split['name']} | {label} | {', '.join(f'{k} {v}' for k, v in where) or 'none'} |"
            )
    return lines


DEFINITIONS = """\
- **Event recall**: a target event (one clip of an alert label) is detected when a `start` of its label
  falls within [onset - tolerance, offset + tolerance]. Each start credits one event at most.
- **False alerts per hour**: starts of an alert label that credit no event of that label and fall in
  non-target audio for it (negative clips and the other alert label's events), per hour of that audio.
  The count and the hours it rests on are given beside every rate: 1 alert in 20 minutes is 3/h.
- **Latency**: start minus onset of each detected event (the first start that credited it), p50 / p95.
- **Streams**: each split's target clips in a seeded random order, each after a gap of the split's
  negative clips long enough for an episode to end and cool down (window + hop + end_after + cooldown,
  up to 1.5x that); then the remaining negatives. Every negative is heard once and counted; where a
  source has too few negatives to fill the gaps, they are heard again as *filler*, which is not scored.
  Clips are joined with 50 ms equal-power crossfades over a -70 dBFS noise floor, at the model's rate.
- **Pipeline**: the agent's own `Pipeline` (windows, hop, log-mel, ONNX model, detector), no outputs.
- **Curves**: the same window scores re-run through the real detector at each threshold of a sweep
  (the model is not run again); the dot is the operating threshold."""


def markdown(data: dict) -> str:
    """The report: settings, the results table, the streams, where false alerts fell, curves, definitions."""
    d, model = data["detector"], data["model"]
    thresholds = ", ".join(f"{k} {v:.2f}" for k, v in d["thresholds"].items())
    lines = [
        f"# earshot evaluate: {model['name']} {model['version']}",
        "",
        f"Model `{model['path']}` (sha256 {model['sha256'][:12]}), thresholds {thresholds}; detector "
        f"confirm {d['confirm_n']} of {d['confirm_m']}"
        + (f" of {d['pool_windows']}-window mean scores" if d.get("pool_windows", 1) > 1 else "")
        + f", end after {d['end_after_s']:g} s, cooldown "
        f"{d['cooldown_s']:g} s; window {data['window_s']:g} s, hop {data['hop_s']:.3f} s; tolerance "
        f"{data['tolerance_s']:.3f} s; seed {data['seed']}"
        + (f"; at most {data['hours_cap']:g} h per split" if data["hours_cap"] else "")
        + ".",
        "",
        f"Command: `{data['command']}`",
        "",
        "## Results",
        "",
        *_results_table(data),
        "",
        "## Streams",
        "",
        *_streams_table(data),
        "",
        f"Total wall time {data['wall_s']:.0f} s.",
        "",
        "## Where the false alerts fell",
        "",
        *_false_alert_lines(data),
        "",
        f"## Operating points at <= {FALSE_ALARM_BUDGET:g} false alert per hour (from the curves)",
        "",
        "Read off the swept thresholds, so optimistic: the threshold is chosen on the audio it is "
        "scored on. Where the non-target hours are under one, only zero false alerts fit the budget.",
        "",
        *_budget_table(data),
        "",
        "## Trade-off curves",
        "",
    ]
    lines += [f"![{label}](tradeoff-{label}.png)" for label in d["listen"]]
    lines += ["", "## Definitions", "", DEFINITIONS]
    return "\n".join(lines) + "\n"


def plot_tradeoff(data: dict, label: str, path: Path) -> None:
    """Recall against false alerts/h (splits with targets, pooled), and false alerts/h against threshold."""
    operating = data["detector"]["thresholds"][label]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    rows = [(s["name"], s["labels"][label]) for s in data["splits"]] + [(POOLED, data[POOLED][label])]
    for name, result in rows:
        curve, style = result["curve"], dict(lw=2.2, color="black") if name == POOLED else dict(lw=1.2)
        at = next(p for p in curve if p["threshold"] == round(operating, 4))
        if result["events"]:
            (line,) = left.plot(
                [p["false_alerts_per_hour"] or 0 for p in curve],
                [p["recall"] for p in curve],
                marker=".",
                label=name,
                **style,
            )
            left.plot([at["false_alerts_per_hour"] or 0], [at["recall"]], "o", color=line.get_color(), ms=8)
        if result["nontarget_hours"]:
            (line,) = right.plot(
                [p["threshold"] for p in curve],
                [p["false_alerts_per_hour"] for p in curve],
                marker=".",
                label=f"{name} ({result['nontarget_hours']:.2f} h)",
                **style,
            )
    right.axvline(operating, color="grey", ls="--", lw=1)
    left.set_xscale("symlog", linthresh=1.0)
    right.set_yscale("symlog", linthresh=1.0)
    left.set(
        xlim=(-0.3, None),
        xlabel="false alerts per hour of non-target audio",
        ylabel="event recall",
        ylim=(-0.02, 1.02),
        title=f"{label}: recall vs false alerts (dot: threshold {operating:.2f})",
    )
    right.set(
        ylim=(0, None),
        xlabel="threshold",
        ylabel="false alerts per hour",
        title=f"{label}: false alerts vs threshold",
    )
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_outputs(evaluation: Evaluation, out: Path, command: str) -> dict:
    """evaluate.json, evaluate.md and one tradeoff-<label>.png per alert label under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    data = to_json(evaluation, command)
    (out / "evaluate.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    (out / "evaluate.md").write_text(markdown(data), encoding="utf-8")
    for label in data["detector"]["listen"]:
        plot_tradeoff(data, label, out / f"tradeoff-{label}.png")
    return data
