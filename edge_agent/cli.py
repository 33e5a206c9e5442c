"""The ``earshot`` command: one door, subcommands imported lazily so the agent never loads torch.

Each subcommand parses its own flags with the standard library's argparse, not click: one dependency
less on the sensor, and the dispatch below stays lazy (a subcommand's module loads only when it runs).
"""

from __future__ import annotations

import importlib
import signal
import sys

# subcommand -> (module with ``main(argv) -> int``, one-line help, needs the [train] extra)
SUBCOMMANDS: dict[str, tuple[str, str, bool]] = {
    "agent": ("edge_agent.agent_cli", "run the sensor agent on a mic, a file or stdin", False),
    "bench": ("edge_agent.tools.bench", "measure real-time factor, latency and memory of the agent", False),
    "listen": ("edge_agent.tools.listen", "show live class scores as bars, for tuning on site", False),
    "calibrate": ("edge_agent.tools.calibrate", "suggest per-class thresholds from a site recording", False),
    "train": ("training.cli", "train and cross-validate models on UrbanSound8K", True),
    "fetch-sounds": ("training.fetch_sounds_cli", "fetch licensed non-target sounds (Debian)", True),
    "evaluate": ("training.evaluate.cli", "event recall, false alerts/hour and latency per split", True),
    "export": ("export.cli", "export a checkpoint to ONNX (FP32/INT8) with a model card", True),
    "gate": ("deploy.gate.cli", "run the robustness release gate on a model", True),
}
TRAINING_ONLY_MODULES = {
    "torch",
    "torchaudio",
    "librosa",
    "foolbox",
    "eagerpy",
    "onnx",
    "onnxscript",
    "matplotlib",
    "tqdm",
}
# Not in the wheel (it is the agent alone): they import from a checkout installed with -e.
CHECKOUT_ONLY_PACKAGES = {"training", "export", "deploy"}


def _usage() -> str:
    lines = ["usage: earshot <command> [options]", "", "commands:"]
    lines += [f"  {name:<12} {help_text}" for name, (_, help_text, _) in SUBCOMMANDS.items()]
    lines += ["", "Run 'earshot <command> --help' for a command's options."]
    return "\n".join(lines)


def _hold_sighup() -> None:
    """Ignore SIGHUP while the agent imports: its default action kills, and a reload (SIGHUP) may come
    right after start. The agent's signal router takes over before it loads the model (edge_agent.signals)."""
    if hasattr(signal, "SIGHUP"):
        signal.signal(signal.SIGHUP, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to a subcommand; a missing optional dependency is one line naming the install command."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if args else 2
    if args[0] == "--version":
        from edge_agent import __version__

        print(f"earshot {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in SUBCOMMANDS:
        print(f"earshot: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module_name, _, needs_train = SUBCOMMANDS[name]
    if name == "agent":
        _hold_sighup()
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        missing = (error.name or "").split(".")[0]
        # `training` absent: a wheel install; `training.x` absent from a checkout is a bug (traceback).
        absent = missing in TRAINING_ONLY_MODULES or error.name in CHECKOUT_ONLY_PACKAGES
        if needs_train and absent:
            print(
                f"earshot {name} needs a source checkout with the training extras ({missing} is missing): "
                "pip install -e '.[train]' in the checkout",
                file=sys.stderr,
            )
            return 2
        raise
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
