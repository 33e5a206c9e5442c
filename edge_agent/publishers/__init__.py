"""The agent's outputs, each a ``Publisher``: built from the config by ``make_publishers``.

A new output is one ``Publisher`` subclass and one line here; the pipeline does not change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from edge_agent.config import AgentConfig
from edge_agent.metrics import AgentMetrics
from edge_agent.publishers.base import OutputSetupError, Publisher

__all__ = ["OutputSetupError", "Publisher", "make_publishers"]


def make_publishers(
    config: AgentConfig,
    sample_rate: int,
    model: dict[str, str],
    metrics: AgentMetrics,
    out: TextIO | None = None,
) -> list[Publisher]:
    """Every configured output, built but not started; clip capture first (it names the clip in the event).

    ``model`` is the running model's identity (name, version, sha256) for discovery; ``out`` replaces
    standard output (tests, ``earshot listen``). OutputSetupError on a bad output configuration.
    """
    publishers: list[Publisher] = []
    if config.capture.enabled:
        from edge_agent.publishers.capture import ClipCapture

        publishers.append(ClipCapture(config.capture, sample_rate, metrics))
    if config.stdout.enabled or out is not None:
        from edge_agent.publishers.stdout import StdoutPublisher

        publishers.append(StdoutPublisher(out))
    if config.mqtt.enabled:
        from edge_agent.publishers.mqtt import make_mqtt_publisher  # paho loads only when MQTT is on

        publishers.append(
            make_mqtt_publisher(
                config.mqtt,
                config.queue,
                config.device_id,
                config.detector.listen,
                model,
                metrics,
                level_unit(config),
            )
        )
    if config.webhook.enabled:
        publishers.append(_make_webhook(config, metrics))
    return publishers


def level_unit(config: AgentConfig) -> str | None:
    """The unit the level sensor announces: dBA when calibrated, dBFS when not, None when levels are off."""
    if not config.levels.enabled:
        return None
    return "dBA" if config.levels.offset_db is not None else "dBFS"


def _make_webhook(config: AgentConfig, metrics: AgentMetrics) -> Publisher:
    """The webhook output with its own queue file."""
    from edge_agent.publishers.disk_queue import open_output_queue
    from edge_agent.publishers.webhook import WebhookPublisher

    queue = open_output_queue(config.queue, "webhook", config.device_id, metrics)
    return WebhookPublisher(config.webhook, queue, metrics)


def names(publishers: Sequence[Publisher]) -> str:
    """``stdout, mqtt`` for the start-up log line."""
    return ", ".join(p.name for p in publishers) or "none"
