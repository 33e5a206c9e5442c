"""The naive baseline ``earshot bench --naive`` compares against: the original study's way of scoring.

Per window: ``librosa.feature.melspectrogram`` on the raw samples, log, then a PyTorch forward pass. It
lives with training because it needs torch and librosa, which the agent never imports; the bench runs
it as a program and reads its one JSON line:

    python -m training.naive_baseline MODEL [--checkpoint CKPT] --check            # the twin exists
    python -m training.naive_baseline MODEL [--checkpoint CKPT] --audio F --hop S  # time the loop
"""

from __future__ import annotations

import edge_agent.one_blas_thread  # noqa: F401 (first: one BLAS thread, as the agent's pipeline runs)

# isort: split
import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import librosa
import numpy as np
import torch

from edge_agent.model_card import read_card
from edge_agent.onnx_model import OnnxModel
from edge_agent.tools.bench import pin_cores
from edge_agent.windowing import hop_samples
from training.checkpoint import load_checkpoint
from training.models import ModelConfig, build_model


def torch_twin(model_path: str, checkpoint: str | None) -> tuple[Any, str]:
    """The PyTorch model for --naive: the checkpoint given or named by the card, else the card's
    architecture (untrained weights cost the same time); ValueError if neither exists."""
    card = read_card(model_path) or {}
    named = (card.get("source_checkpoint") or {}).get("path")
    for candidate in (checkpoint, named):
        if candidate and Path(candidate).is_file():
            return load_checkpoint(candidate).build(), f"checkpoint {candidate}"
    if checkpoint:
        raise ValueError(f"--checkpoint: not found: {checkpoint}")
    if "architecture" in card:
        frontend, labels = card.get("frontend", {}), card.get("labels", [])
        config = ModelConfig.from_dict(card["architecture"])
        model = build_model(config, n_mels=int(frontend.get("n_mels", 64)), n_classes=len(labels))
        return model.eval(), "architecture from the model card (timing only)"
    raise ValueError("--naive needs the model's PyTorch twin: pass --checkpoint PATH")


def run_naive(model_path: str, twin: tuple[Any, str], audio_path: str, hop_seconds: float) -> dict[str, Any]:
    """Time the study's loop: load with librosa, per window melspectrogram + log + PyTorch forward."""
    torch.set_num_threads(1)
    p = OnnxModel.load(model_path, allow_ungated=True).frontend
    net, source = twin
    hop = hop_samples(hop_seconds, p.sample_rate, p.hop_length)

    def loop(duration: float | None) -> int:
        """librosa.load, then per window: melspectrogram, log, PyTorch forward, softmax."""
        audio, _ = librosa.load(audio_path, sr=p.sample_rate, mono=True, duration=duration)
        count = 0
        with torch.no_grad():
            for start in range(0, len(audio) - p.window_samples + 1, hop):
                mel = librosa.feature.melspectrogram(
                    y=audio[start : start + p.window_samples],
                    sr=p.sample_rate,
                    n_fft=p.n_fft,
                    hop_length=p.hop_length,
                    n_mels=p.n_mels,
                    fmin=p.f_min,
                    fmax=p.f_max,
                    htk=True,
                    norm=None,
                    center=False,
                    power=2.0,
                )  # (n_mels, frames)
                features = torch.from_numpy(np.log(mel + p.log_offset).astype(np.float32))[None, None]
                torch.softmax(net(features), dim=-1)  # (1, n_classes)
                count += 1
        return count

    loop(p.window_seconds)  # warm-up: librosa's and torch's first-call costs are not the loop's
    started = time.perf_counter()
    count = loop(None)
    wall = time.perf_counter() - started
    return {"wall_s": wall, "windows": count, "ms_per_window": wall / max(count, 1) * 1e3, "model": source}


def main(argv: list[str] | None = None) -> int:
    """Check the twin (``--check``) or time the loop on one core; one JSON line, or exit 2 with one line."""
    parser = argparse.ArgumentParser(
        prog="python -m training.naive_baseline", description=__doc__.splitlines()[0]
    )
    parser.add_argument("model", help="the ONNX model whose PyTorch twin is timed")
    parser.add_argument("--checkpoint", help="its checkpoint (default: the card's, else its architecture)")
    parser.add_argument("--check", action="store_true", help="only find the twin")
    parser.add_argument("--audio", help="audio file to score")
    parser.add_argument("--hop", type=float, help="seconds between windows")
    args = parser.parse_args(argv)
    if not args.check and (args.audio is None or args.hop is None):
        parser.error("--audio and --hop are needed unless --check is given")
    try:
        twin = torch_twin(args.model, args.checkpoint)
    except ValueError as error:
        print(error, file=sys.stderr)
        return 2
    if args.check:
        print(json.dumps({"model": twin[1]}))
        return 0
    pin_cores(1)
    print(json.dumps(run_naive(args.model, twin, args.audio, args.hop)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
