#!/usr/bin/env python3
"""Alert latency: from a sound's onset to its MQTT start event at a real subscriber, with a real-time source.

The bench runs ``earshot agent --source -`` and writes raw s16le PCM to its stdin paced in real time
(like ``arecord | earshot agent --source -``): background noise, then a siren from a known sample, for
``--trials`` episodes. It notes the wall time at which each onset sample was written, subscribes to the
agent's events on a real mosquitto (started here unless ``--mqtt`` names one), and reports p50/p95 of
(arrival - onset) against the target window + hop + 100 ms.

    python3 scripts/bench_alert_latency.py --tiny-test-model          # synthetic model and siren
    python3 scripts/bench_alert_latency.py --model m.onnx --siren-clip siren.wav --trials 20
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from support.mosquitto import Mosquitto, Subscriber  # noqa: E402
from support.onnx_models import band_energy_model, noise, siren_sweep, to_s16le, write_card  # noqa: E402

from edge_agent.onnx_model import OnnxModel  # noqa: E402
from edge_agent.windowing import DEFAULT_HOP_SECONDS  # noqa: E402

logger = logging.getLogger("bench_alert_latency")

CHUNK_S = 0.01  # write 10 ms at a time: pacing error stays far below the latencies measured
DEVICE = "bench"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", type=Path, help="ONNX model (with its .card.json) to run")
    which.add_argument("--tiny-test-model", action="store_true", help="build the synthetic band-energy model")
    parser.add_argument("--siren-clip", type=Path, help="audio file to use as the alert sound (16 kHz mono)")
    parser.add_argument("--label", default="siren", help="label whose start events are timed")
    parser.add_argument("--trials", type=int, default=15)
    parser.add_argument("--hop", type=float, default=DEFAULT_HOP_SECONDS, help="agent hop in seconds")
    parser.add_argument("--sound-s", type=float, default=2.0, help="seconds of alert sound per trial")
    parser.add_argument("--gap-s", type=float, default=4.5, help="seconds of background after each sound")
    parser.add_argument("--mqtt", help="use this broker (mqtt://host:port) instead of starting mosquitto")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    return parser.parse_args(argv)


def load_sound(args: argparse.Namespace, sample_rate: int) -> np.ndarray:
    """The alert sound, float32 mono at the model's rate."""
    if args.siren_clip is None:
        return siren_sweep(args.sound_s, sample_rate)
    import soundfile as sf

    samples, rate = sf.read(str(args.siren_clip), dtype="float32", always_2d=True)
    if rate != sample_rate:
        raise SystemExit(f"--siren-clip: need {sample_rate} Hz audio, got {rate} Hz")
    return samples.mean(axis=1)[: int(args.sound_s * sample_rate)]


def model_window(model: Path) -> tuple[float, int]:
    """(window seconds, sample rate) declared by the model's metadata."""
    frontend = OnnxModel.load(model, verify_card=False).frontend  # metadata only; the agent checks the card
    return frontend.window_seconds, frontend.sample_rate


class PacedWriter:
    """Writes PCM to the agent's stdin in real time and records when chosen samples went out."""

    def __init__(self, stream, sample_rate: int) -> None:  # noqa: ANN001 (a binary pipe)
        self.stream = stream
        self.rate = sample_rate
        self.chunk = int(CHUNK_S * sample_rate)
        self.next_due = time.monotonic()

    def write(self, samples: np.ndarray, mark_at: int | None = None) -> float | None:
        """Write samples paced; return the wall time when sample ``mark_at`` was written, if asked."""
        marked = None
        for start in range(0, len(samples), self.chunk):
            delay = self.next_due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            block = samples[start : start + self.chunk]
            self.stream.write(to_s16le(block))
            self.stream.flush()
            if mark_at is not None and marked is None and start <= mark_at < start + len(block):
                marked = time.time()
            self.next_due += len(block) / self.rate
        return marked


def run_trials(args: argparse.Namespace, model: Path, url: str, port: int, workdir: Path) -> dict:
    """Start the agent on stdin, play the trials, and pair onsets with arriving start events."""
    window_s, rate = model_window(model)
    sound = load_sound(args, rate)
    subscriber = Subscriber(port, f"earshot/{DEVICE}/#", client_id=f"bench-{os.getpid()}")
    env = {
        **os.environ,
        "EARSHOT_DEVICE_ID": DEVICE,
        "EARSHOT_MQTT_QUEUE_DIR": str(workdir / "queue"),
        "EARSHOT_AUDIO_HOP_SECONDS": str(args.hop),
        # The cooldown only delays the *next* episode; short, so trials can follow each other.
        "EARSHOT_DETECTOR_COOLDOWN_S": "0.5",
    }
    command = [
        "earshot",
        "agent",
        "--source",
        "-",
        "--stdin-rate",
        str(rate),
        "--model",
        str(model),
        "--mqtt",
        url,
        "--allow-ungated",
    ]
    agent = subprocess.Popen(
        command,
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=open(workdir / "agent.log", "wb"),
        env=env,
    )
    writer = PacedWriter(agent.stdin, rate)
    background = noise(600.0, rate, amplitude=0.02, seed=1)
    onsets: list[float] = []
    try:
        _play_until_online(writer, background, subscriber, agent)
        writer.write(background[: int(window_s * 2 * rate)])
        for trial in range(args.trials):
            gap = background[: int(args.gap_s * rate)]
            onsets.append(writer.write(np.concatenate([sound, gap]), mark_at=0) or time.time())
            logger.info("trial %d/%d played", trial + 1, args.trials)
        writer.write(background[: int(rate * 1.0)])
    finally:
        agent.stdin.close()
        agent.wait(timeout=30)
        subscriber.close()
    starts = [
        (m.at, json.loads(m.payload))
        for m in subscriber.messages
        if m.topic == f"earshot/{DEVICE}/event/{args.label}"
    ]
    return summarise(onsets, [at for at, event in starts if event["kind"] == "start"], window_s, args.hop)


def _play_until_online(
    writer: PacedWriter, background: np.ndarray, subscriber: Subscriber, agent: subprocess.Popen
) -> None:
    """Feed background while the agent loads its model and connects (availability 'online')."""
    deadline = time.monotonic() + 60
    while not any(m.topic.endswith("/availability") and m.payload == b"online" for m in subscriber.messages):
        if agent.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the agent did not come online; see its log")
        writer.write(background[: int(writer.rate * 0.1)])


def summarise(onsets: list[float], arrivals: list[float], window_s: float, hop_s: float) -> dict:
    """Pair each onset with the first start event after it (before the next onset); percentiles in ms."""
    latencies, false_alarms = [], 0
    bounds = onsets[1:] + [float("inf")]
    for onset, next_onset in zip(onsets, bounds, strict=True):
        hits = [a for a in arrivals if onset <= a < next_onset]
        if hits:
            latencies.append((hits[0] - onset) * 1000.0)
        false_alarms += max(0, len(hits) - 1)
    false_alarms += sum(1 for a in arrivals if a < onsets[0])
    target = (window_s + hop_s + 0.1) * 1000.0
    result = {
        "trials": len(onsets),
        "detected": len(latencies),
        "false_alarms": false_alarms,
        "target_ms": round(target, 1),
        "window_s": window_s,
        "hop_s": hop_s,
    }
    if latencies:
        p50, p95 = float(np.percentile(latencies, 50)), float(np.percentile(latencies, 95))
        summary = {
            "p50": p50,
            "p95": p95,
            "min": min(latencies),
            "max": max(latencies),
            "mean": statistics.fmean(latencies),
        }
        result.update(latency_ms={k: round(v, 1) for k, v in summary.items()}, meets_target=p95 <= target)
    return result


def main(argv: list[str] | None = None) -> int:
    """Run the bench and print its result."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="earshot-bench-") as tmp:
        workdir = Path(tmp)
        model = args.model
        if args.tiny_test_model:
            model = band_energy_model(workdir / "tiny.onnx")
            write_card(model)
        broker = None
        if args.mqtt is None:
            broker = Mosquitto(workdir / "mosquitto")
            broker.start()
        url = args.mqtt or broker.url
        port = int(url.rsplit(":", 1)[1].rstrip("/"))
        try:
            result = run_trials(args, model, url, port, workdir)
        finally:
            if broker is not None:
                broker.stop()
    print(json.dumps(result) if args.json else format_table(result))
    return 0 if result.get("meets_target") else 1


def format_table(result: dict) -> str:
    """A readable summary."""
    lines = [
        f"trials {result['trials']}, detected {result['detected']}, false alarms {result['false_alarms']}"
    ]
    if "latency_ms" in result:
        lat = result["latency_ms"]
        lines.append(
            f"alert latency onset -> MQTT: p50 {lat['p50']} ms, p95 {lat['p95']} ms "
            f"(min {lat['min']}, max {lat['max']})"
        )
        verdict = "meets" if result["meets_target"] else "MISSES"
        lines.append(f"target window + hop + 100 ms = {result['target_ms']} ms: p95 {verdict} it")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
