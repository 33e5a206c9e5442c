"""The noise alert: "LAeq,1min above X dB between 22:00 and 07:00" as start/end episodes (pure).

It turns the level meter's minute results into ``Detection`` s of the label ``noise_level``, so the alert
travels through every output exactly like a sound detection: a ``start`` when a minute inside the window
exceeds the limit, an ``end`` at the first minute that does not (or when the window closes). The clock is
passed in, as for the detector.
"""

from __future__ import annotations

from datetime import time

from edge_agent.config import LevelsConfig
from edge_agent.detector import Detection
from edge_agent.levels import MinuteLevels

NOISE_LABEL = "noise_level"
# A threshold, not a classifier: the score is 1 and the event's ``level`` block carries the measurement.
_TOP_K = ((NOISE_LABEL, 1.0),)


def parse_clock(text: str) -> time:
    """'22:00' -> time(22, 0) (the config has checked the format)."""
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def in_window(now: time, opens: time, closes: time) -> bool:
    """Whether ``now`` lies in [opens, closes), a window that may wrap past midnight; equal ends: all day."""
    if opens == closes:
        return True
    if opens < closes:
        return opens <= now < closes
    return now >= opens or now < closes


class NoiseAlert:
    """One open-or-closed episode of "too loud for the time of day"."""

    def __init__(self, config: LevelsConfig) -> None:
        if config.alert_laeq_db is None:
            raise ValueError("levels.alert_laeq_db is not set: no noise alert to run")
        self.limit_db = config.alert_laeq_db
        self.opens, self.closes = parse_clock(config.alert_from), parse_clock(config.alert_to)
        self._started_at: float | None = None  # stream time of the open episode's first loud minute

    @property
    def active(self) -> bool:
        """True while an episode is open."""
        return self._started_at is not None

    def update(self, minute: MinuteLevels, local_time: time) -> list[Detection]:
        """One minute's levels, with the local clock time at its end -> a start, an end, or nothing."""
        loud = in_window(local_time, self.opens, self.closes) and minute.laeq > self.limit_db
        if loud and self._started_at is None:
            self._started_at = minute.start_s
            return [Detection(NOISE_LABEL, "start", 1.0, minute.start_s, None, _TOP_K)]
        if not loud and self._started_at is not None:
            return self.flush(minute.start_s)
        return []

    def flush(self, now: float) -> list[Detection]:
        """End the open episode at stream time ``now`` (the end of the stream), if there is one."""
        if self._started_at is None:
            return []
        started, self._started_at = self._started_at, None
        return [Detection(NOISE_LABEL, "end", 1.0, started, now, _TOP_K)]
