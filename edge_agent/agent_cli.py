"""``earshot agent``: open model and source, run the pipeline to the end or a signal."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import edge_agent.one_blas_thread  # noqa: F401 (first: one BLAS thread, set before numpy loads)
from edge_agent.config import AgentConfig, ConfigError, load_config
from edge_agent.windowing import DEFAULT_HOP_SECONDS

logger = logging.getLogger("edge_agent.agent")

DEFAULT_MODEL = Path(__file__).resolve().parent / "models" / "default.onnx"


class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def add_shared_flags(parser: argparse.ArgumentParser, log_level: str) -> None:
    """Flags every agent-side command (agent, listen, calibrate) shares: model, gate override, stdin, logs."""
    parser.add_argument("--model", help=f"ONNX model (default: {DEFAULT_MODEL})")
    parser.add_argument(
        "--allow-ungated",
        action="store_true",
        default=None,
        help="run a model without a passing release-gate record (logged, metric set)",
    )
    parser.add_argument("--stdin-rate", type=int, help="sample rate of raw stdin audio")
    parser.add_argument("--stdin-channels", type=int, help="channels of raw stdin audio")
    parser.add_argument("--log-level", default=log_level, choices=["DEBUG", "INFO", "WARNING", "ERROR"])


def build_parser() -> argparse.ArgumentParser:
    """The agent's command-line flags (each one overrides the config file and the environment)."""
    parser = argparse.ArgumentParser(prog="earshot agent", description="Run the sound-monitoring agent.")
    parser.add_argument("--source", help="mic, mic:NAME_OR_INDEX, an audio file, or - for raw s16le stdin")
    parser.add_argument("--config", help="TOML config file")
    parser.add_argument("--mqtt", metavar="URL|none", help="mqtt://host:port, mqtts://host:port, or none")
    parser.add_argument(
        "--webhook", metavar="URL|none", help="POST each event as JSON to http(s)://host/path"
    )
    parser.add_argument("--metrics-port", type=int, help="serve /metrics and /healthz on this port")
    parser.add_argument("--fast", action="store_true", default=None, help="read files as fast as possible")
    parser.add_argument("--hop", type=float, help=f"seconds between windows (default {DEFAULT_HOP_SECONDS})")
    parser.add_argument("--threads", type=int, help="onnxruntime threads (default 1)")
    parser.add_argument("--device-id", help="device id in topics and events (default: host name)")
    parser.add_argument("--list-devices", action="store_true", help="list audio input devices and exit")
    parser.add_argument("--check-config", metavar="FILE", help="validate a config file, print it, and exit")
    add_shared_flags(parser, log_level="INFO")
    return parser


def overrides_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """CLI flags as a config layer; None means the flag was not given."""
    return {
        "device_id": args.device_id,
        "audio": {
            "source": args.source,
            "fast": args.fast,
            "stdin_rate": args.stdin_rate,
            "stdin_channels": args.stdin_channels,
            "hop_seconds": args.hop,
        },
        "model": {"path": args.model, "allow_ungated": args.allow_ungated, "threads": args.threads},
        "mqtt": {"url": args.mqtt},
        "webhook": {"url": args.webhook},
        "metrics": {"port": args.metrics_port},
    }


def describe_config(config: AgentConfig) -> str:
    """The resolved config as JSON, secrets masked."""
    data = dataclasses.asdict(config)
    for section, key in (("mqtt", "password"), ("mqtt", "tls_key"), ("webhook", "token")):
        data[section][key] = "<set>" if data[section][key] else None
    return json.dumps(data, indent=2)


def model_path(config: AgentConfig) -> str:
    """The configured model, or the packaged default (with a clear error while none is packaged)."""
    if config.model.path is not None:
        return config.model.path
    if not DEFAULT_MODEL.is_file():
        raise UsageError(f"no default model is installed ({DEFAULT_MODEL}); pass --model PATH")
    return str(DEFAULT_MODEL)


def run_agent(config: AgentConfig) -> int:
    """Open everything, run until end of stream or SIGINT/SIGTERM, close everything."""
    from edge_agent.signals import SignalRouter

    # First: a signal during start-up is kept for later, never fatal (a reload right after start).
    router = SignalRouter().install()
    try:
        return _run_agent(config, router)
    finally:
        router.close(restore=False)  # the process is ending: late signals are ignored, not fatal


def _run_agent(config: AgentConfig, router: Any) -> int:
    """Load, build and run; ``router`` hands SIGINT/SIGTERM to the pipeline and SIGHUP to the reloader."""
    from edge_agent.metrics import AgentMetrics
    from edge_agent.model_reload import ModelReloader
    from edge_agent.onnx_model import OnnxModel
    from edge_agent.pipeline import Pipeline
    from edge_agent.publishers import make_publishers, names
    from edge_agent.sources import open_source

    path = model_path(config)
    model = OnnxModel.load(path, config.model.threads, config.model.allow_ungated)
    source = open_source(config.audio, model.frontend.sample_rate)
    metrics = AgentMetrics()
    pipeline = Pipeline(config, model, source, metrics=metrics)  # validates the detector config first
    identity = {"name": model.metadata.name, "version": model.metadata.version, "sha256": model.sha256}
    pipeline.publishers = make_publishers(config, pipeline.rate, identity, metrics)
    logger.info(
        "model %s %s (%s), source %s, hop %.3f s, outputs %s",
        model.metadata.name,
        model.metadata.version,
        model.sha256[:12],
        source.description,
        pipeline.hop / pipeline.rate,
        names(pipeline.publishers),
    )
    server = _start_metrics(config, metrics, pipeline)
    router.on_stop(pipeline.stop)
    reloader = ModelReloader(
        pipeline, path, config.model.threads, config.model.allow_ungated, config.model.reload_poll_s
    )
    reloader.start()
    router.on_hup(reloader.request)
    try:
        code = pipeline.run()  # starts the outputs, and closes them (delivering what it can) at the end
    finally:
        reloader.stop()
        if server is not None:
            server.shutdown()
    if pipeline.error:
        print(f"earshot agent: {pipeline.error}", file=sys.stderr)
    return code


def _start_metrics(config: AgentConfig, metrics: Any, pipeline: Any) -> Any:
    """The /metrics + /healthz server when a port is configured."""
    if config.metrics.port is None:
        return None
    from edge_agent.http_server import start_http_server

    try:
        return start_http_server(metrics, config.metrics.host, config.metrics.port, pipeline.health)
    except OSError as error:
        raise UsageError(
            f"metrics.port: cannot listen on {config.metrics.host}:{config.metrics.port}: "
            f"{error.strerror or error}"
        ) from None


def user_errors() -> tuple[type[Exception], ...]:
    """Exceptions that mean bad input (config, model, audio, output setup): one line, no traceback."""
    from edge_agent.onnx_model import ModelError
    from edge_agent.publishers.base import OutputSetupError
    from edge_agent.sources import SourceError

    return UsageError, ConfigError, ModelError, SourceError, OutputSetupError


def run_command(
    name: str,
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], int],
    argv: list[str] | None,
) -> int:
    """Parse, log to stderr, run; bad input is one line and exit code 2, Ctrl-C exit 130 (agent-side
    commands share this)."""
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return run(args)
    except user_errors() as error:
        print(f"earshot {name}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the pipeline's own handler is installed
        return 130
    except BrokenPipeError:  # ``| head`` read what it wanted and left: that ends the output, quietly
        silence_stdout()
        return 0


def silence_stdout() -> None:
    """Point stdout at /dev/null once its reader is gone, so Python's flush at exit raises nothing."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``earshot agent``."""
    return run_command("agent", build_parser(), _dispatch, argv)


def _dispatch(args: argparse.Namespace) -> int:
    """--list-devices, --check-config, or run."""
    if args.list_devices:
        from edge_agent.sources import list_devices

        print(list_devices())
        return 0
    if args.check_config:
        config = load_config(args.check_config, overrides=overrides_from_args(args))
        print(describe_config(config))
        return 0
    return run_agent(load_config(args.config, overrides=overrides_from_args(args)))
