"""The gate's policy: one threshold per figure, read from TOML, unknown or missing keys rejected by name."""

from __future__ import annotations

import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, published as tomli
    import tomli as tomllib

from edge_agent.strict import reject_unknown

ATTACKS = ("linf", "l2")
BUDGETS_DB = (40, 30)
CORRUPTIONS = (
    "noise_20db",
    "noise_10db",
    "noise_0db",
    "gain_plus12db",
    "gain_minus12db",
    "time_shift",
    "clipping",
    "bandlimit_4khz",
    "mulaw_8bit",
)


def _figure_bounds() -> dict[str, str]:
    """Every figure the gate measures -> 'min' or 'max' (which side of its threshold passes)."""
    bounds = {
        "attacked_clips": "min",
        "clean_accuracy": "min",
        "int8_clean_accuracy": "min",
        "int8_drop": "max",
        "deepfool_median_snr_db": "max",
    }
    for attack in ATTACKS:
        for budget in BUDGETS_DB:
            bounds[f"robust_accuracy_{attack}_{budget}db"] = "min"
            bounds[f"int8_robust_accuracy_{attack}_{budget}db"] = "min"
    bounds.update({f"drop_{name}": "max" for name in CORRUPTIONS})
    return bounds


# A HIGH median DeepFool SNR means a tiny perturbation fools the model, so it is bounded from above.
FIGURE_BOUNDS: dict[str, str] = _figure_bounds()
POLICY_KEYS: tuple[str, ...] = tuple(f"{side}_{name}" for name, side in FIGURE_BOUNDS.items())


@dataclass(frozen=True)
class AttackConfig:
    """Attack strengths. They live in the policy, so its sha256 in a gate record pins how hard we attacked."""

    deepfool_steps: int = 50
    deepfool_overshoot: float = 0.02
    pgd_steps: int = 40
    pgd_rel_stepsize: float = 0.05  # 40 steps can walk 2x the budget: room to reach the boundary
    batch: int = 16  # clips per attack call; memory only, not results
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("deepfool_steps", "pgd_steps", "batch"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"attack.{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("deepfool_overshoot", "pgd_rel_stepsize"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) <= 0:
                raise ValueError(f"attack.{name} must be a positive number, got {getattr(self, name)!r}")


ATTACK_KEYS = ("deepfool_steps", "deepfool_overshoot", "pgd_steps", "pgd_rel_stepsize", "batch")


@dataclass(frozen=True)
class Check:
    """One figure held against its threshold."""

    figure: str
    side: str  # "min" or "max"
    threshold: float
    value: float | None  # None: not measured (e.g. no ONNX model given)

    @property
    def status(self) -> str:
        """'pass', 'fail' or 'not measured'."""
        if self.value is None:
            return "not measured"
        ok = self.value >= self.threshold if self.side == "min" else self.value <= self.threshold
        return "pass" if ok else "fail"


@dataclass(frozen=True)
class Policy:
    """Thresholds keyed by figure name; built only through ``parse_policy`` so it is always complete."""

    thresholds: dict[str, float]
    sha256: str
    attack: AttackConfig = field(default_factory=AttackConfig)

    def judge(self, figures: dict[str, float | None]) -> list[Check]:
        """Hold every figure against its threshold, in policy order."""
        return [
            Check(name, FIGURE_BOUNDS[name], threshold, figures.get(name))
            for name, threshold in self.thresholds.items()
        ]


def parse_policy(text: str, sha256: str = "") -> Policy:
    """Parse policy TOML ([thresholds], optional [attack]); ValueError naming an unknown/missing/bad key."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"policy is not valid TOML: {error}") from error
    tables = ("thresholds", "attack")
    reject_unknown(
        data,
        tables,
        lambda keys: f"unknown policy key: {keys[0]!r} (allowed: [thresholds] and [attack] tables)",
    )
    return Policy(_thresholds(data.get("thresholds", {})), sha256, _attack(data.get("attack", {})))


def _attack(table: dict) -> AttackConfig:
    reject_unknown(table, ATTACK_KEYS, lambda keys: f"unknown policy key: attack.{keys[0]}")
    return AttackConfig(**table)


def _thresholds(table: dict) -> dict[str, float]:
    reject_unknown(table, POLICY_KEYS, lambda keys: f"unknown policy key: thresholds.{keys[0]}")
    missing = [key for key in POLICY_KEYS if key not in table]
    if missing:
        raise ValueError(f"policy lacks a threshold for thresholds.{missing[0]}")
    thresholds = {}
    for key in POLICY_KEYS:
        value = table[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"thresholds.{key} must be a number, got {value!r}")
        thresholds[key.split("_", 1)[1]] = float(value)
    return thresholds


def load_policy(path: str | Path) -> Policy:
    """Read and parse a policy file; its sha256 goes into the gate record."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"policy file not found: {path}")
    raw = path.read_bytes()
    return parse_policy(raw.decode("utf-8"), hashlib.sha256(raw).hexdigest())
