"""Per-label thresholds for a false-alarm budget, read off the pooled curves of held-out negatives.

``earshot evaluate --calibrate 1 --splits <negative splits>`` picks, per alert label, the lowest swept
threshold from which every higher one keeps false alerts per hour of non-target audio within the budget
(the curve need not be monotone: the detector's episodes can merge). It refuses a label
whose non-target hours are too few to resolve the budget: with fewer than ``MIN_ALERTS / budget`` hours
one clip would decide the threshold (1 alert in 0.1 h is already 10/h).
"""

from __future__ import annotations

from pathlib import Path

MIN_ALERTS = 3  # the budget must allow at least this many false alerts on the hours it rests on


def calibrate_label(curve: list[dict], hours: float, budget: float, min_alerts: int = MIN_ALERTS) -> dict:
    """The lowest threshold within ``budget`` false alerts/h, or a refusal naming the hours it needs."""
    needed = min_alerts / budget
    base = {"budget_per_hour": budget, "nontarget_hours": hours, "hours_needed": needed}
    if hours < needed:
        return base | {
            "threshold": None,
            "refused": f"{hours:.2f} h of non-target audio cannot resolve "
            f"{budget:g}/h (one alert = {1 / hours if hours else float('inf'):.1f}/h); needs "
            f">= {needed:g} h",
        }
    point = None
    for candidate in sorted(curve, key=lambda p: -p["threshold"]):
        if (candidate["false_alerts_per_hour"] or 0.0) > budget:
            break
        point = candidate
    if point is None:
        return base | {"threshold": None, "refused": f"no swept threshold keeps within {budget:g}/h"}
    return base | {
        "threshold": point["threshold"],
        "false_alerts": point["false_alerts"],
        "false_alerts_per_hour": point["false_alerts_per_hour"],
    }


def calibrate(data: dict, budget: float, min_alerts: int = MIN_ALERTS) -> dict[str, dict]:
    """Every alert label's calibration from an evaluate.json's pooled curves."""
    return {
        label: calibrate_label(r["curve"], r["nontarget_hours"], budget, min_alerts)
        for label, r in data["pooled"].items()
    }


def thresholds_toml(calibration: dict[str, dict]) -> str:
    """An agent config fragment with the calibrated thresholds (refused labels left to the model)."""
    lines = ["[detector.thresholds]"]
    for label, entry in calibration.items():
        if entry["threshold"] is None:
            lines.append(f"# {label}: refused, {entry['refused']}")
        else:
            lines.append(
                f"{label} = {entry['threshold']:g}  # {entry['false_alerts']} false alerts in "
                f"{entry['nontarget_hours']:.2f} h"
            )
    return "\n".join(lines) + "\n"


def write_calibration(calibration: dict[str, dict], out: Path) -> Path:
    """``thresholds.toml`` under ``out``; its path."""
    path = out / "thresholds.toml"
    path.write_text(thresholds_toml(calibration))
    return path
