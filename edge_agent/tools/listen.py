"""``earshot listen``: what does the sensor hear? Live top-k class scores as bars, thresholds marked.

It runs the agent's own source, windowing, front-end, model and detector (no MQTT), so the scores an
installer sees are the scores the agent acts on. On a terminal the bars redraw in place; piped, it
prints one line per window.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TextIO

from edge_agent.agent_cli import UsageError, add_shared_flags, model_path, run_command, silence_stdout
from edge_agent.config import AgentConfig, StdoutConfig, load_config
from edge_agent.detector import rank
from edge_agent.windowing import DEFAULT_HOP_SECONDS

logger = logging.getLogger(__name__)

BAR_WIDTH = 40  # terminal bars
LINE_BAR_WIDTH = 10  # the compact bars of the one-line-per-window output
CLEAR_LINE = "\x1b[2K"
HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


def bar(
    score: float, threshold: float, width: int, fill: str = "#", empty: str = ".", mark: str = "|"
) -> str:
    """A ``width``-cell bar filled to ``score`` with ``mark`` at the threshold's cell."""
    filled = min(width, max(0, int(round(score * width))))
    cells = [fill] * filled + [empty] * (width - filled)
    cells[min(width - 1, max(0, int(round(threshold * width))))] = mark
    return "".join(cells)


def render_screen(
    time_s: float,
    ranked: Sequence[tuple[str, float]],
    thresholds: Mapping[str, float],
    listened: Sequence[str],
    active: Sequence[str],
    width: int = BAR_WIDTH,
) -> list[str]:
    """The terminal view: a header, then one bar per class (``!`` past threshold, ALERT while active)."""
    name_width = max(len(label) for label, _ in ranked)
    lines = [f"earshot listen  t={time_s:8.2f} s   (| = threshold, * = listened class, Ctrl-C quits)"]
    for label, score in ranked:
        threshold = thresholds.get(label, 1.0)
        flag = "ALERT" if label in active else ("!" if score >= threshold else "")
        star = "*" if label in listened else " "
        lines.append(
            f"{star} {label:<{name_width}} [{bar(score, threshold, width)}] {score:4.2f} "
            f"/ {threshold:4.2f} {flag}".rstrip()
        )
    return lines


def render_line(
    time_s: float,
    ranked: Sequence[tuple[str, float]],
    thresholds: Mapping[str, float],
    active: Sequence[str],
    width: int = LINE_BAR_WIDTH,
) -> str:
    """One window on one line, for pipes and logs: ``t label [bar] score`` per class."""
    cells = []
    for label, score in ranked:
        flag = "!" if label in active else ""
        cells.append(f"{label} [{bar(score, thresholds.get(label, 1.0), width)}] {score:4.2f}{flag}")
    return f"{time_s:9.3f}s  " + "  ".join(cells)


class Display:
    """Writes each window's view to ``out``: redrawn in place on a terminal, appended otherwise."""

    def __init__(
        self,
        out: TextIO,
        labels: Sequence[str],
        thresholds: Mapping[str, float],
        listened: Sequence[str],
        k: int,
        tty: bool,
    ) -> None:
        self.out, self.labels, self.thresholds = out, tuple(labels), dict(thresholds)
        self.listened, self.k, self.tty = tuple(listened), min(k, len(labels)), tty
        self._drawn = 0  # lines drawn last time, to move the cursor back over them

    def show(self, time_s: float, scores: Sequence[float], active: Sequence[str]) -> None:
        """Draw one window's scores."""
        ranked = rank(self.labels, scores, self.k)
        if not self.tty:
            self.out.write(render_line(time_s, ranked, self.thresholds, active) + "\n")
            self.out.flush()
            return
        lines = render_screen(time_s, ranked, self.thresholds, self.listened, active)
        up = f"\x1b[{self._drawn}A" if self._drawn else HIDE_CURSOR
        self.out.write(up + "".join(f"\r{CLEAR_LINE}{line}\n" for line in lines))
        self.out.flush()
        self._drawn = len(lines)

    def close(self) -> None:
        """Give the cursor back on a terminal."""
        if self.tty and self._drawn:
            self.out.write(SHOW_CURSOR)
            self.out.flush()


def build_parser() -> argparse.ArgumentParser:
    """``earshot listen`` flags."""
    parser = argparse.ArgumentParser(
        prog="earshot listen", description="Show live class scores as bars, thresholds marked."
    )
    parser.add_argument("--source", help="mic, mic:NAME_OR_INDEX, an audio file, or - for raw s16le stdin")
    parser.add_argument("--config", help="TOML config file (thresholds, detector timing, audio)")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per window (default 5)")
    parser.add_argument("--fast", action="store_true", default=None, help="read files as fast as possible")
    parser.add_argument("--hop", type=float, help=f"seconds between windows (default {DEFAULT_HOP_SECONDS})")
    add_shared_flags(parser, log_level="WARNING")
    return parser


def config_from_args(args: argparse.Namespace) -> AgentConfig:
    """The agent's config (file, environment, flags) with network outputs, stdout events and /metrics off:
    listening sends nothing (clip capture keeps working when configured)."""
    overrides: dict[str, Any] = {
        "audio": {
            "source": args.source,
            "fast": args.fast,
            "hop_seconds": args.hop,
            "stdin_rate": getattr(args, "stdin_rate", None),
            "stdin_channels": getattr(args, "stdin_channels", None),
        },
        "model": {"path": args.model, "allow_ungated": args.allow_ungated},
        "mqtt": {"url": "none"},
    }
    config = load_config(args.config, overrides=overrides)
    return AgentConfig(
        device_id=config.device_id,
        audio=config.audio,
        model=config.model,
        detector=config.detector,
        capture=config.capture,
        stdout=StdoutConfig(enabled=False),
    )


def run_offline(config: AgentConfig, on_window: Callable[[Any], Callable[[Any], None]]) -> Any:
    """Run the agent's pipeline over ``config.audio.source`` with no outputs but a window callback.

    ``on_window(pipeline)`` returns the callback, so it can read the pipeline's detector (thresholds,
    open episodes). Returns the finished ``Pipeline``; SIGINT/SIGTERM stop it cleanly.
    """
    from edge_agent.metrics import AgentMetrics
    from edge_agent.onnx_model import OnnxModel
    from edge_agent.pipeline import Pipeline
    from edge_agent.publishers import make_publishers
    from edge_agent.signals import SignalRouter
    from edge_agent.sources import open_source

    model = OnnxModel.load(model_path(config), config.model.threads, config.model.allow_ungated)
    source = open_source(config.audio, model.frontend.sample_rate)
    identity = {"name": model.metadata.name, "version": model.metadata.version, "sha256": model.sha256}
    publishers = make_publishers(config, model.frontend.sample_rate, identity, AgentMetrics())
    pipeline = Pipeline(config, model, source, publishers=publishers)
    pipeline.on_window = on_window(pipeline)
    router = SignalRouter(handle_hup=False).install()  # a closed terminal's SIGHUP still ends it
    router.on_stop(pipeline.stop)
    try:
        pipeline.run()
    finally:
        router.close()
    return pipeline


def listen(config: AgentConfig, k: int, out: TextIO, tty: bool) -> int:
    """Show every window's scores until the source ends or Ctrl-C; 0 ok, 1 if the source failed."""
    _require_top_k(k)
    displays: list[Display] = []
    reader_gone: list[bool] = []

    def make_callback(pipeline: Any) -> Callable[[Any], None]:
        detector = pipeline.detector
        display = Display(out, detector.labels, detector.thresholds, config.detector.listen, k, tty)
        displays.append(display)

        def show(result: Any) -> None:
            try:
                display.show(result.time_s, result.scores.tolist(), detector.active())
            except BrokenPipeError:  # ``earshot listen | head``: the reader has what it wanted
                reader_gone.append(True)
                pipeline.stop()

        return show

    pipeline = run_offline(config, make_callback)
    if reader_gone:
        silence_stdout()
        return 0
    for display in displays:
        display.close()
    if pipeline.error:
        print(f"earshot listen: {pipeline.error}", file=sys.stderr)
        return 1
    return 0


def _require_top_k(k: int) -> None:
    if k < 1:
        raise UsageError(f"--top-k: must be >= 1, got {k}")


def main(argv: list[str] | None = None) -> int:
    """Entry point for ``earshot listen``."""
    return run_command(
        "listen",
        build_parser(),
        lambda args: listen(config_from_args(args), args.top_k, sys.stdout, sys.stdout.isatty()),
        argv,
    )
