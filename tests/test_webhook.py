"""The webhook output against a real HTTP endpoint started by the test: order, headers, retries, refusals,
an endpoint that is down, events that outlive the process; and the real agent with a webhook that is down
for 30 s beside a live MQTT broker and stdout, losing nothing.

Run with ``-s`` to see the outage figures.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from support.agent_process import PrintingAgent, street_with_sirens
from support.http_sink import HttpSink
from support.mosquitto import Mosquitto, Subscriber, contract_event, mosquitto_binary

from edge_agent.config import QueueConfig, WebhookConfig
from edge_agent.metrics import AgentMetrics
from edge_agent.publishers.disk_queue import open_output_queue
from edge_agent.publishers.webhook import PostResult, WebhookPublisher

ROOT = Path(__file__).resolve().parents[1]
DEVICE = "webhook-test"
WEBHOOK = {"output": "webhook"}


def make_webhook(
    url: str, tmp_path: Path, metrics: AgentMetrics | None = None, **overrides: object
) -> WebhookPublisher:
    """The webhook output exactly as ``make_publishers`` builds it, with short retry delays."""
    values = {"url": url, "retry_min_s": 0.05, "retry_max_s": 0.2, "timeout_s": 2.0, **overrides}
    config = WebhookConfig(**values)  # type: ignore[arg-type]
    metrics = metrics if metrics is not None else AgentMetrics(CollectorRegistry())
    queue = open_output_queue(QueueConfig(dir=str(tmp_path / "queue")), "webhook", DEVICE, metrics)
    return WebhookPublisher(config, queue, metrics)


def sample(publisher: WebhookPublisher, name: str) -> float | None:
    return publisher.metrics.registry.get_sample_value(name, WEBHOOK)


def test_events_arrive_in_order_with_json_token_and_idempotency_key(tmp_path: Path) -> None:
    sink = HttpSink().start()
    publisher = make_webhook(sink.url, tmp_path, token="s3cret-token")
    publisher.start()
    sent = [contract_event(kind=kind, n=n) for n in range(5) for kind in ("start", "end")]
    for event in sent:
        publisher.publish_event(event, 0)
    sink.wait_for(lambda got: len(got) == len(sent))
    publisher.close(2)
    sink.stop()
    assert sink.accepted() == sent
    first = sink.received[0]
    assert first.path == "/hooks/earshot" and first.headers["Content-Type"] == "application/json"
    assert first.headers["Authorization"] == "Bearer s3cret-token"
    assert first.headers["Idempotency-Key"] == sent[0]["event_id"]
    assert sample(publisher, "earshot_events_delivered_total") == len(sent)
    assert sample(publisher, "earshot_queue_depth") == 0
    assert sample(publisher, "earshot_delivery_latency_seconds_count") == len(sent)


def test_server_errors_and_rate_limits_are_retried_until_accepted(tmp_path: Path) -> None:
    sink = HttpSink(answers=[503, 500, 429, 408], retry_after="0").start()
    publisher = make_webhook(sink.url, tmp_path)
    publisher.start()
    event = contract_event()
    publisher.publish_event(event, 0)
    sink.wait_for(lambda got: got == [event])
    publisher.close(2)
    sink.stop()
    assert [r.status for r in sink.received] == [503, 500, 429, 408, 200]
    assert sample(publisher, "earshot_delivery_failures_total") == 4
    assert sample(publisher, "earshot_queue_dropped_total") == 0


def test_a_final_refusal_drops_that_event_counted_and_the_next_goes_on(tmp_path: Path) -> None:
    sink = HttpSink(answers=[401]).start()
    publisher = make_webhook(sink.url, tmp_path)
    publisher.start()
    refused, accepted = contract_event(n=1), contract_event(n=2)
    publisher.publish_event(refused, 0)
    publisher.publish_event(accepted, 0)
    sink.wait_for(lambda got: got == [accepted])
    publisher.close(2)
    sink.stop()
    assert [r.status for r in sink.received] == [401, 200]
    assert sample(publisher, "earshot_queue_dropped_total") == 1
    assert sample(publisher, "earshot_delivery_failures_total") == 0


def test_an_endpoint_that_is_down_gets_everything_in_order_when_it_returns(tmp_path: Path) -> None:
    sink = HttpSink()  # not listening yet: connection refused
    publisher = make_webhook(sink.url, tmp_path)
    publisher.start()
    sent = [contract_event(n=n) for n in range(6)]
    for event in sent[:3]:
        publisher.publish_event(event, 0)
    time.sleep(0.5)
    assert publisher.queue.depth() == 3 and sample(publisher, "earshot_delivery_failures_total") >= 2
    sink.start()
    for event in sent[3:]:
        publisher.publish_event(event, 0)
    sink.wait_for(lambda got: len(got) == len(sent))
    publisher.close(2)
    sink.stop()
    assert sink.accepted() == sent


def test_events_queued_while_down_are_delivered_by_the_next_run(tmp_path: Path) -> None:
    sink = HttpSink()
    first = make_webhook(sink.url, tmp_path)
    first.start()
    sent = [contract_event(n=n) for n in range(4)]
    for event in sent:
        first.publish_event(event, 0)
    first.close(0.5)  # the endpoint is down: the events stay in the queue file
    sink.start()
    second = make_webhook(sink.url, tmp_path)
    assert second.queue.depth() == len(sent)
    second.start()
    sink.wait_for(lambda got: len(got) == len(sent))
    second.close(2)
    sink.stop()
    assert sink.accepted() == sent


def test_the_default_poster_reports_network_failures_without_raising() -> None:
    from edge_agent.publishers.webhook import _urllib_poster

    post = _urllib_poster(WebhookConfig(url=HttpSink().url, timeout_s=1.0))
    result = post(b"{}", {"Content-Type": "application/json"})
    assert isinstance(result, PostResult) and result.status == 0 and not result.delivered and not result.final


OUTAGE_S = 30.0
DOWN_AT_S = 10.0


@pytest.mark.slow
@pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")
def test_the_agent_loses_nothing_while_its_webhook_is_down_30_s_beside_mqtt_and_stdout(
    tmp_path: Path, siren_model: Path
) -> None:
    audio = street_with_sirens(tmp_path / "street.flac")
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    subscriber = Subscriber(broker.port, f"earshot/{DEVICE}/event/#", client_id="webhook-test-subscriber")
    sink = HttpSink().start()
    env = {
        "EARSHOT_DEVICE_ID": DEVICE,
        "EARSHOT_QUEUE_DIR": str(tmp_path / "queue"),
        "EARSHOT_WEBHOOK_RETRY_MIN_S": "0.1",
        "EARSHOT_WEBHOOK_RETRY_MAX_S": "0.5",
        "EARSHOT_WEBHOOK_TOKEN": "agent-token",
        "EARSHOT_DETECTOR_COOLDOWN_S": "1",
        "EARSHOT_DETECTOR_END_AFTER_S": "0.5",
    }
    agent = PrintingAgent(
        ["--source", str(audio), "--model", str(siren_model), "--mqtt", broker.url, "--webhook", sink.url],
        env,
        tmp_path / "agent.log",
    )
    printed = agent.printed
    try:
        time.sleep(DOWN_AT_S)
        down_at = time.time()
        sink.stop()
        time.sleep(OUTAGE_S)
        sink.start()
        up_at = time.time()
        code = agent.wait(timeout=120)
        subscriber.wait_for(lambda ms: len(ms) >= len(printed), timeout=30)
    finally:
        agent.stop()
        subscriber.close()
        sink.stop()
        broker.stop()
    assert code == 0, agent.log()
    sent = [event for _, event in printed]
    during = [event["event_id"] for at, event in printed if down_at <= at < up_at]
    arrival = {r.body["event_id"]: r.at for r in sink.received if r.status == 200}
    print(
        f"\nwebhook outage {OUTAGE_S:.0f} s: events {len(sent)} (during outage {len(during)}), webhook got "
        f"{len(sink.accepted())}, MQTT got {len(subscriber.messages)}; backlog delivered "
        f"{max(arrival[e] for e in during) - up_at:.2f} s after the endpoint returned"
    )
    assert len(sent) == 32 and len(during) >= 10
    assert sink.accepted() == sent  # nothing lost, nothing twice, in order, identical to stdout
    assert [json.loads(m.payload) for m in subscriber.messages] == sent  # MQTT unaffected
    assert all(arrival[event_id] >= up_at for event_id in during)
    assert {r.headers["Authorization"] for r in sink.received} == {"Bearer agent-token"}
