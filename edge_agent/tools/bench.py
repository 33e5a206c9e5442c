"""``earshot bench``: real-time factor, per-window latency and peak memory of the real agent pipeline.

Each measurement runs the agent's own pipeline (file source, ``--fast``) in a fresh worker process pinned
to N cores, so peak RSS is the agent's alone and one run never warms the next. ``--naive`` times the
original study's way (per-window ``librosa.feature.melspectrogram`` + a PyTorch model) on the same audio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from edge_agent.agent_cli import DEFAULT_MODEL  # first: it pins BLAS to one thread before numpy loads

# isort: split
import numpy as np

from edge_agent.cpu_info import cpu_facts
from edge_agent.windowing import DEFAULT_HOP_SECONDS

TARGET_RTF = 0.003
TARGET_RSS_MB = 120.0
TARGET_INT8_SPEEDUP = 2.0  # INT8 model time vs its FP32 twin
TARGET_NAIVE_RATIO = 20.0  # a naive per-window librosa + PyTorch loop vs this pipeline
TARGET_LEVEL_SHARE = 0.10  # the sound level meter's share of the pipeline's time (issue 13)


class BenchError(Exception):
    """Bad input for the benchmark; one line for the user."""


def build_parser() -> argparse.ArgumentParser:
    """The bench's flags."""
    parser = argparse.ArgumentParser(prog="earshot bench", description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="ONNX model (default: the packaged default model)")
    parser.add_argument("--compare-model", help="a second model, e.g. the FP32 twin of an INT8 --model")
    parser.add_argument("--threads", default="1,2", help="onnxruntime thread counts to measure (default 1,2)")
    parser.add_argument(
        "--hop",
        type=float,
        default=DEFAULT_HOP_SECONDS,
        help=f"seconds between windows (default {DEFAULT_HOP_SECONDS})",
    )
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of audio per run (default 60)")
    parser.add_argument("--source", help="audio file to use (default: synthetic street noise with sirens)")
    parser.add_argument(
        "--input-rate",
        type=int,
        metavar="HZ",
        help="write the synthetic audio at this rate, e.g. 48000, so runs include resampling "
        "(default: the model's rate)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--naive",
        action="store_true",
        help="also time per-window librosa + PyTorch (needs the [train] extras)",
    )
    parser.add_argument("--checkpoint", help="PyTorch checkpoint of --model, for --naive")
    parser.add_argument(
        "--alert-latency",
        metavar="MQTT_URL",
        help="also measure sound onset -> MQTT message latency through this broker "
        "(real time: about 5 s per burst)",
    )
    parser.add_argument(
        "--bursts", type=int, default=12, help="siren bursts for --alert-latency (default 12)"
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    return parser


def parse_threads(text: str) -> list[int]:
    """'1,2' -> [1, 2]; BenchError for anything else."""
    try:
        counts = sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise BenchError(f"--threads: expected comma-separated integers, got {text!r}") from None
    if not counts or counts[0] < 1 or counts[-1] > 64:
        raise BenchError(f"--threads: counts must be in 1..64, got {text!r}")
    return counts


# --- the worker: one pipeline run in its own process ---------------------------------------------


def pin_cores(count: int) -> list[int]:
    """Restrict this process to ``count`` of the cores it may use; returns them."""
    available = sorted(os.sched_getaffinity(0))
    chosen = available[:count]
    os.sched_setaffinity(0, chosen)
    return chosen


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM).

    Not ``getrusage``'s ru_maxrss: Linux carries that over fork+exec, so a worker would report its
    parent's peak instead of its own.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    import resource  # not Linux: the best available

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run the pipeline once over ``spec['audio']``; timings per window, wall/CPU time, peak RSS."""
    # Imported for RSS realism: the agent loads it when MQTT is on.
    import edge_agent.publishers.mqtt  # noqa: F401
    from edge_agent.config import AgentConfig, AudioConfig, ModelConfig
    from edge_agent.onnx_model import OnnxModel
    from edge_agent.pipeline import Pipeline
    from edge_agent.publishers.stdout import StdoutPublisher
    from edge_agent.sources import open_source

    cores = pin_cores(spec["cores"])
    audio = AudioConfig(source=spec["audio"], fast=True, hop_seconds=spec["hop"])
    config = AgentConfig(audio=audio, model=ModelConfig(path=spec["model"], threads=spec["threads"]))
    model = OnnxModel.load(spec["model"], spec["threads"], allow_ungated=True)
    timings: list[tuple[float, float]] = []  # (front-end s, model s) per window; no audio kept
    with open(os.devnull, "w") as sink:
        pipeline = Pipeline(
            config,
            model,
            open_source(audio, model.frontend.sample_rate),
            publishers=[StdoutPublisher(sink)],
            on_window=lambda w: timings.append((w.frontend_s, w.model_s)),
        )
        resample_s = time_calls(pipeline.resampler, ("process", "flush"))
        level_s = time_calls(pipeline.levels, ("hear", "window")) if pipeline.levels is not None else [0.0]
        cpu_started, started = time.process_time(), time.perf_counter()
        code = pipeline.run()
        wall, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    if code != 0:
        raise BenchError(f"pipeline failed: {pipeline.error}")
    audio_s = pipeline.windower.samples_received / pipeline.rate
    split = np.array(timings) * 1e3  # (windows, 2) ms
    latency = split.sum(axis=1)
    return {
        "threads": spec["threads"],
        "cores": cores,
        "audio_seconds": audio_s,
        "windows": len(timings),
        "hop_seconds": pipeline.hop / pipeline.rate,
        "wall_s": wall,
        "cpu_s": cpu,
        "rtf": wall / audio_s,
        "cpu_rtf": cpu / audio_s,
        "latency_ms": {f"p{q}": float(np.percentile(latency, q)) for q in (50, 95, 99)},
        "frontend_ms": float(split[:, 0].mean()),
        "model_ms": float(split[:, 1].mean()),
        "input_rate": pipeline.source.sample_rate,
        "resample_rtf": resample_s[0] / audio_s,
        "resample_share": resample_s[0] / wall,
        "level_rtf": level_s[0] / audio_s,
        "level_share": level_s[0] / wall,
        "peak_rss_mb": peak_rss_mb(),
        "model": {
            "name": model.metadata.name,
            "version": model.metadata.version,
            "sha256": model.sha256,
            "gated": bool(model.check and model.check.gated),
        },
    }


def time_calls(obj: Any, names: tuple[str, ...]) -> list[float]:
    """Wrap these methods of ``obj`` (this instance only) to add their wall time to the returned cell."""
    spent = [0.0]
    for name in names:
        setattr(obj, name, _timed(getattr(obj, name), spent))
    return spent


def _timed(call: Any, spent: list[float]) -> Any:
    """``call``, adding the wall time of each call to ``spent[0]``."""

    def timed(*args: Any) -> Any:
        started = time.perf_counter()
        try:
            return call(*args)
        finally:
            spent[0] += time.perf_counter() - started

    return timed


def spawn_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Run ``run_worker`` in a fresh interpreter; its last stdout line is the JSON result."""
    return run_program("edge_agent.tools.bench", ["--worker", json.dumps(spec)], "benchmark run failed: ")


def run_program(module: str, args: list[str], failure: str = "") -> dict[str, Any]:
    """``python -m module args`` in a fresh interpreter: its last stdout line as JSON, or BenchError with
    ``failure`` and its last line of output."""
    result = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True)
    if result.returncode != 0:
        lines = (result.stderr.strip() or result.stdout.strip() or "no output").splitlines()
        raise BenchError(f"{failure}{lines[-1]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- audio and the naive baseline ------------------------------------------------------------------


def synthetic_street(path: Path, seconds: float, rate: int) -> Path:
    """Street-like noise with a siren-like sweep every 10 s (so the detector does real work)."""
    import soundfile

    rng = np.random.default_rng(0)
    n = int(seconds * rate)
    t = np.arange(n) / rate
    audio = 0.05 * rng.standard_normal(n)
    wail = 0.3 * np.sin(2 * np.pi * np.cumsum(1050 + 250 * np.sin(2 * np.pi * t)) / rate)
    audio += wail * ((t % 10.0) < 3.0)
    soundfile.write(str(path), audio.astype(np.float32), rate, subtype="PCM_16")
    return path


# The baseline lives with training (it needs torch and librosa) and runs as its own program: the agent
# never imports training, and the loop gets a fresh process pinned to one core, like each pipeline run.
NAIVE_PROGRAM = "training.naive_baseline"


def naive_twin(model_path: str, checkpoint: str | None) -> list[str]:
    """Check the training extras and find the PyTorch twin before any run starts; the twin's flags."""
    import importlib.util

    missing = [name for name in ("torch", "librosa") if importlib.util.find_spec(name) is None]
    if missing:
        raise BenchError(
            f"--naive needs the training extras ({missing[0]} is missing): pip install 'earshot[train]'"
        )
    twin = ["--checkpoint", checkpoint] if checkpoint else []
    run_program(NAIVE_PROGRAM, [model_path, *twin, "--check"])
    return twin


def run_naive(model_path: str, twin: list[str], audio_path: str, hop_seconds: float) -> dict[str, Any]:
    """The study's per-window librosa + PyTorch loop on the same audio, timed on one core."""
    return run_program(NAIVE_PROGRAM, [model_path, *twin, "--audio", audio_path, "--hop", str(hop_seconds)])


# --- alert latency: onset -> MQTT message, in real time ------------------------------------------


def siren_bursts(path: Path, onsets: list[float], total: float, rate: int) -> Path:
    """Quiet street noise with a 2 s siren-like sweep starting at each onset (seconds)."""
    import soundfile

    rng = np.random.default_rng(1)
    t = np.arange(int(total * rate)) / rate
    audio = 0.02 * rng.standard_normal(len(t))
    for onset in onsets:
        inside = (t >= onset) & (t < onset + 2.0)
        wail = np.sin(2 * np.pi * np.cumsum(1050 + 250 * np.sin(2 * np.pi * (t - onset))) / rate)
        audio += 0.3 * wail * inside
    soundfile.write(str(path), audio.astype(np.float32), rate, subtype="PCM_16")
    return path


class _Arrivals:
    """A paho subscriber that timestamps every event message on arrival."""

    def __init__(self, host: str, port: int, topic: str) -> None:
        import threading

        import paho.mqtt.client as mqtt

        self.received: list[tuple[float, dict]] = []
        self._subscribed = threading.Event()
        probe_id = f"earshot-latency-probe-{os.getpid()}"  # not the agent's id: the broker kicks one
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=probe_id)
        self.client.on_connect = lambda client, *_: client.subscribe(topic, qos=1)
        self.client.on_subscribe = lambda *_: self._subscribed.set()
        self.client.on_message = lambda _c, _u, m: self.received.append((time.time(), json.loads(m.payload)))
        self.client.connect_async(host, port)
        self.client.loop_start()
        if not self._subscribed.wait(10):
            raise BenchError(f"--alert-latency: cannot subscribe at {host}:{port}")

    def close(self) -> None:
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def alert_latency(model_path: str, url: str, bursts: int, hop: float) -> dict[str, Any]:
    """Sirens in a real-time paced file through the pipeline and the real MQTT publisher; a subscriber
    timestamps each start: latency = arrival - (stream start + onset), all on the wall clock."""
    from datetime import datetime

    from edge_agent.config import (
        AgentConfig,
        AudioConfig,
        ConfigError,
        DetectorConfig,
        MqttConfig,
        QueueConfig,
        StdoutConfig,
    )
    from edge_agent.metrics import AgentMetrics
    from edge_agent.onnx_model import OnnxModel
    from edge_agent.pipeline import Pipeline
    from edge_agent.publishers import make_publishers
    from edge_agent.sources import open_source

    model = OnnxModel.load(model_path, allow_ungated=True)
    onsets = [1.0 + 5.0 * i for i in range(bursts)]
    with tempfile.TemporaryDirectory(prefix="earshot-latency-") as work:
        try:
            mqtt = MqttConfig(url=url, discovery=False)
        except ConfigError as error:
            raise BenchError(f"--alert-latency: {error}") from None
        audio = siren_bursts(Path(work) / "bursts.wav", onsets, onsets[-1] + 4.0, model.frontend.sample_rate)
        # No cooldown and a short end, so every burst starts an event; N-of-M stays at its default.
        detector = DetectorConfig(listen=("siren",), cooldown_s=0.0, end_after_s=0.5)
        config = AgentConfig(
            device_id=f"bench-{os.getpid()}",
            detector=detector,
            mqtt=mqtt,
            queue=QueueConfig(dir=str(Path(work) / "queue")),
            stdout=StdoutConfig(enabled=False),
            audio=AudioConfig(source=str(audio), fast=False, hop_seconds=hop),
        )
        subscriber = _Arrivals(
            str(mqtt.host), int(mqtt.port or 0), f"{mqtt.topic_prefix}/{config.device_id}/event/siren"
        )
        identity = {"name": model.metadata.name, "version": model.metadata.version, "sha256": model.sha256}
        publishers = make_publishers(config, model.frontend.sample_rate, identity, AgentMetrics())
        source = open_source(config.audio, model.frontend.sample_rate)
        pipeline = Pipeline(config, model, source, publishers=publishers)
        pipeline.run()  # closing the MQTT output waits (up to 5 s) for the last events' PUBACKs
        subscriber.close()
    latencies = []
    for arrived, event in subscriber.received:
        if event["kind"] == "start":
            heard = datetime.fromisoformat(event["started_at"].replace("Z", "+00:00")).timestamp()
            onset = max((o for o in onsets if o <= heard - pipeline.clock_origin + 1e-3), default=None)
            if onset is not None:
                latencies.append((arrived - pipeline.clock_origin - onset) * 1e3)
    budget = (model.frontend.window_seconds + pipeline.hop / pipeline.rate + 0.1) * 1e3
    stats = {f"p{q}": float(np.percentile(latencies, q)) for q in (50, 95)} if latencies else {}
    return {
        "alert_latency_ms": {
            **stats,
            "max": max(latencies, default=float("nan")),
            "bursts": bursts,
            "detected": len(latencies),
            "target_p95": budget,
        }
    }


# --- the command ----------------------------------------------------------------------------------


def measure(args: argparse.Namespace) -> dict[str, Any]:
    """All runs the flags ask for, as one result dict."""
    model = args.model or str(DEFAULT_MODEL)
    if not Path(model).is_file():
        raise BenchError(f"model not found: {model}" + ("" if args.model else "; pass --model PATH"))
    threads = parse_threads(args.threads)
    if args.seconds < 2 or args.hop <= 0:
        raise BenchError("--seconds must be >= 2 and --hop > 0")
    twin = naive_twin(model, args.checkpoint) if args.naive else None
    with tempfile.TemporaryDirectory(prefix="earshot-bench-") as work:
        rate = _input_rate(args, model)
        audio = args.source or str(synthetic_street(Path(work) / "street.wav", args.seconds, rate))
        if not Path(audio).is_file():
            raise BenchError(f"--source: not found: {audio}")
        base = {"audio": audio, "hop": args.hop}
        runs = [{**base, "model": model, "threads": n, "cores": n} for n in threads]
        if args.compare_model:
            runs.append({**base, "model": args.compare_model, "threads": 1, "cores": 1})
        results = [spawn_worker(spec) for spec in _progress(runs)]
        naive = run_naive(model, twin, audio, args.hop) if twin is not None else None
    result = summarise(results[: len(threads)], results[len(threads) :], naive)
    if args.alert_latency:
        result.update(alert_latency(model, args.alert_latency, args.bursts, args.hop))
    return result


def _input_rate(args: argparse.Namespace, model: str) -> int:
    """The synthetic audio's rate: ``--input-rate``, else the model's (then nothing is resampled)."""
    if args.input_rate is None:
        return _model_rate(model)
    if args.source:
        raise BenchError("--input-rate sets the synthetic audio's rate; a --source file keeps its own")
    if not 8000 <= args.input_rate <= 384000:
        raise BenchError(f"--input-rate: expected 8000..384000 Hz, got {args.input_rate}")
    return args.input_rate


def _model_rate(model: str) -> int:
    """The model's sample rate (synthetic audio is written at it, so runs measure no resampling)."""
    from edge_agent.onnx_model import OnnxModel

    try:
        return OnnxModel.load(model, allow_ungated=True).frontend.sample_rate
    except ValueError as error:
        raise BenchError(str(error)) from None


def _progress(runs: list[dict]) -> Any:
    """A tqdm bar over the runs when tqdm is installed (it is not part of the agent's base install)."""
    try:
        from tqdm import tqdm
    except ModuleNotFoundError:
        return runs
    return tqdm(runs, desc="bench runs", unit="run", file=sys.stderr, leave=False)


def summarise(runs: list[dict], compare: list[dict], naive: dict | None) -> dict[str, Any]:
    """The headline (1 thread, 1 core), per-thread RTFs, and the optional comparisons."""
    main = runs[0]
    out: dict[str, Any] = {
        key: main[key]
        for key in (
            "rtf",
            "cpu_rtf",
            "latency_ms",
            "peak_rss_mb",
            "frontend_ms",
            "model_ms",
            "windows",
            "audio_seconds",
            "hop_seconds",
            "threads",
            "cores",
            "model",
            "input_rate",
            "resample_rtf",
            "resample_share",
            "level_rtf",
            "level_share",
        )
    }
    out["per_thread_rtf"] = {str(r["threads"]): r["rtf"] for r in runs}
    out["per_thread"] = {
        str(r["threads"]): {k: r[k] for k in ("rtf", "latency_ms", "model_ms", "cores")} for r in runs
    }
    if compare:
        other = compare[0]
        out["compare"] = {k: other[k] for k in ("rtf", "model_ms", "frontend_ms", "peak_rss_mb", "model")}
        out["int8_vs_fp32_speedup"] = other["model_ms"] / main["model_ms"]
    if naive is not None:
        out["naive"] = naive
        out["naive_ratio"] = naive["wall_s"] / main["wall_s"]
    out["targets"] = _targets(out)
    # Wall-clock RTF on a shared machine includes time other processes held the pinned core; the load
    # average says how much to trust it, and cpu_rtf is the process's own share.
    out["machine"] = {
        **cpu_facts(),
        "python": platform.python_version(),
        "load_average_1m": os.getloadavg()[0],
        "cores_online": os.cpu_count(),
    }
    return out


def _targets(out: dict[str, Any]) -> dict[str, Any]:
    """Each measured figure against its target; ``missed`` names the ones not reached."""
    checks = {
        "rtf": out["rtf"] <= TARGET_RTF,
        "peak_rss_mb": out["peak_rss_mb"] <= TARGET_RSS_MB,
        "level_share": out["level_share"] <= TARGET_LEVEL_SHARE,
    }
    if "int8_vs_fp32_speedup" in out:
        checks["int8_vs_fp32_speedup"] = out["int8_vs_fp32_speedup"] >= TARGET_INT8_SPEEDUP
    if "naive_ratio" in out:
        checks["naive_ratio"] = out["naive_ratio"] >= TARGET_NAIVE_RATIO
    return {
        "rtf": TARGET_RTF,
        "peak_rss_mb": TARGET_RSS_MB,
        "int8_vs_fp32_speedup": TARGET_INT8_SPEEDUP,
        "naive_ratio": TARGET_NAIVE_RATIO,
        "level_share": TARGET_LEVEL_SHARE,
        "missed": [name for name, ok in checks.items() if not ok],
        "met": all(checks.values()),
    }


def table(result: dict[str, Any]) -> str:
    """A readable report."""
    lat, model, r = result["latency_ms"], result["model"], result
    lines = [
        f"model        {model['name']} {model['version']} ({model['sha256'][:12]})",
        f"audio        {r['audio_seconds']:.1f} s, {r['windows']} windows, hop {r['hop_seconds']:.3f} s",
        f"RTF          {r['rtf']:.5f}  (target <= {TARGET_RTF}; CPU {r['cpu_rtf']:.5f}, 1 thread, 1 core)",
        f"latency      p50 {lat['p50']:.3f} ms  p95 {lat['p95']:.3f} ms  p99 {lat['p99']:.3f} ms per window",
        f"split        front-end {r['frontend_ms']:.3f} ms + model {r['model_ms']:.3f} ms per window",
        f"resampler    {r['input_rate']} Hz in: RTF {r['resample_rtf']:.5f}, "
        f"{100 * r['resample_share']:.1f}% of the run's wall time",
        f"level meter  RTF {r['level_rtf']:.5f}, {100 * r['level_share']:.1f}% of the run's wall time "
        f"(target <= {100 * TARGET_LEVEL_SHARE:.0f}%)",
        f"peak RSS     {result['peak_rss_mb']:.1f} MB (target <= {TARGET_RSS_MB:.0f})",
    ]
    lines += [f"threads {n:<4} RTF {rtf:.5f}" for n, rtf in result["per_thread_rtf"].items()]
    if "int8_vs_fp32_speedup" in result:
        machine = result["machine"]
        lines.append(
            f"compare      model {result['compare']['model_ms']:.3f} ms/window: "
            f"speedup x{result['int8_vs_fp32_speedup']:.2f} (target >= {TARGET_INT8_SPEEDUP:.0f}; "
            f"{machine['cpu']}, INT8 dot product: {machine['int8_dot_product'] or 'none'})"
        )
    if "naive_ratio" in result:
        lines.append(
            f"naive        {result['naive']['ms_per_window']:.3f} ms/window "
            f"(librosa + PyTorch): x{result['naive_ratio']:.1f} our time "
            f"(target >= {TARGET_NAIVE_RATIO:.0f})"
        )
    if "alert_latency_ms" in result:
        alert = result["alert_latency_ms"]
        lines.append(
            f"alert        onset -> MQTT p50 {alert.get('p50', float('nan')):.0f} ms  "
            f"p95 {alert.get('p95', float('nan')):.0f} ms (target <= {alert['target_p95']:.0f}), "
            f"{alert['detected']}/{alert['bursts']} bursts"
        )
    missed = result["targets"]["missed"]
    lines.append("targets      " + ("met" if not missed else "NOT met: " + ", ".join(missed)))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``earshot bench``."""
    args = build_parser().parse_args(argv)
    if args.worker:
        try:
            print(json.dumps(run_worker(json.loads(args.worker))))
        except (BenchError, ValueError, RuntimeError) as error:  # ModelError, SourceError, ConfigError
            print(error, file=sys.stderr)
            return 1
        return 0
    try:
        result = measure(args)
    except BenchError as error:
        print(f"earshot bench: {error}", file=sys.stderr)
        return 2
    print(json.dumps(result) if args.json else table(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
