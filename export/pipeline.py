"""Checkpoint -> shipped ONNX model + model card: export, quantize, check parity and speed, decide, write."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edge_agent.cpu_info import cpu_facts
from edge_agent.frontend import LogMel
from edge_agent.model_card import file_sha256
from edge_agent.model_metadata import ModelMetadata
from edge_agent.onnx_model import OnnxModel
from edge_agent.windowing import DEFAULT_HOP_SECONDS
from export.card import LICENSE_NOTE, file_facts, write_card
from export.clips import WindowSet, logmel_windows, sample_clips
from export.onnx_export import assert_self_contained, attach_metadata, export_fp32
from export.parity import (
    ParityPolicy,
    clip_predictions,
    latency_ms,
    load_model,
    onnx_logits,
    parity_failures,
    torch_logits,
)
from export.quantize import quantize_int8
from export.source_checks import calibration_records, held_out_sets, open_set, source_figures
from export.thresholds import read_thresholds, threshold_provenance
from training.checkpoint import Checkpoint, load_checkpoint
from training.complexity import count_macs, count_params
from training.debian_sounds import TRAINING_PACKAGES
from training.licences import licence_line, source_licences
from training.splits import split_for_checkpoint

logger = logging.getLogger(__name__)

SHIP_CHOICES = ("faster", "int8", "fp32")
PARITY_WINDOWS = 512  # PyTorch vs ONNX is exact up to float reordering: a few hundred windows show it


class ParityError(RuntimeError):
    """The exported model does not match its source closely enough to ship."""


@dataclass(frozen=True)
class ExportConfig:
    """Everything one ``earshot export`` run needs; built once from the command line."""

    checkpoint: Path
    out: Path
    int8: bool = False
    calibration_data: Path | None = None
    name: str | None = None
    version: str | None = None
    eval_fold: int | None = None
    calibration_clips: int = 64
    eval_clips: int | None = None  # None: every held-out clip
    hop_seconds: float = DEFAULT_HOP_SECONDS  # the agent's default hop
    seed: int = 0
    ship: str = "faster"
    allow_parity_failure: bool = False
    twin_budget: int | None = None  # keep the other precision only if model + twin fit in this many bytes
    train_command: str | None = None  # how the checkpoint was made, for the card's reproduce recipe
    thresholds_file: Path | None = None  # calibrated thresholds that replace the checkpoint's
    # For checkpoints written before they recorded their sources: which sources trained (licences) and
    # where ``debian-sounds`` lies.
    training_sources: tuple[str, ...] = ()
    data_root: Path | None = None
    policy: ParityPolicy = field(default_factory=ParityPolicy)

    def __post_init__(self) -> None:
        if self.out.suffix != ".onnx":
            raise ValueError(f"--out must end in .onnx, got {self.out}")
        if self.int8 and self.calibration_data is None:
            raise ValueError(
                "--int8 needs --calibration-data (an UrbanSound8K root) to calibrate on real clips"
            )
        if self.ship not in SHIP_CHOICES:
            raise ValueError(f"--ship must be one of {', '.join(SHIP_CHOICES)}, got {self.ship!r}")
        if self.calibration_clips < 1 or (self.eval_clips is not None and self.eval_clips < 1):
            raise ValueError("--calibration-clips and --eval-clips must be at least 1")
        if self.twin_budget is not None and self.twin_budget < 1:
            raise ValueError(f"--twin-budget must be a positive byte count, got {self.twin_budget}")
        if not 0 < self.hop_seconds <= 10:
            raise ValueError(f"--hop-seconds must be in (0, 10], got {self.hop_seconds}")


@dataclass
class Windows:
    """The log-mel windows an export is judged on, and where they came from."""

    heldout: WindowSet | None
    parity: np.ndarray  # (n, 1, n_mels, frames) for PyTorch vs ONNX
    calibration: np.ndarray | None
    provenance: dict
    sources: dict[str, WindowSet] = field(default_factory=dict)  # held-out splits of other sources


def synthetic_windows(checkpoint: Checkpoint, count: int, seed: int) -> np.ndarray:
    """Log-mel of seeded noise and tones, for PyTorch-vs-ONNX parity when no real clips are given."""
    params = checkpoint.frontend
    rng = np.random.default_rng(seed)
    t = np.arange(params.window_samples) / params.sample_rate
    waves = [
        rng.normal(0, rng.uniform(0.001, 0.3), params.window_samples)
        + rng.uniform(0, 0.5) * np.sin(2 * np.pi * rng.uniform(60, 7000) * t)
        for _ in range(count)
    ]
    return LogMel(params)(np.stack(waves).astype(np.float32))  # (count, 1, n_mels, frames)


def gather_windows(config: ExportConfig, checkpoint: Checkpoint) -> Windows:
    """Real calibration and held-out windows from ``--calibration-data``, or synthetic parity windows only."""
    if config.calibration_data is None:
        return Windows(None, synthetic_windows(checkpoint, 64, config.seed), None, {"heldout": None})
    split = split_for_checkpoint(config.calibration_data, checkpoint, config.eval_fold)
    heldout_clips = sample_clips(split.heldout, config.eval_clips, config.seed)
    heldout = logmel_windows(heldout_clips, checkpoint.frontend, config.hop_seconds, "held-out clips")
    calibration = None
    calib_clips = sample_clips(split.calibration, config.calibration_clips, config.seed)
    sources: dict[str, WindowSet] = {}
    if config.data_root is not None and open_set(checkpoint):
        sources = held_out_sets(
            config.data_root, checkpoint, config.hop_seconds, config.eval_clips, config.seed
        )
        if config.int8:
            extra = calibration_records(config.data_root, checkpoint, config.calibration_clips, config.seed)
            calib_clips = [*calib_clips, *extra]
    if config.int8:
        calibration = logmel_windows(
            calib_clips, checkpoint.frontend, config.hop_seconds, "calibration"
        ).logmel
    provenance = {
        "heldout": split.heldout_name,
        "source_checks": {name: len(windows.labels) for name, windows in sources.items()},
        "heldout_clips": len(heldout_clips),
        "heldout_windows": len(heldout.logmel),
        "calibration_folds": sorted({r.fold for r in calib_clips if r.fold > 0}) if config.int8 else [],
        "calibration_clips": len(calib_clips) if config.int8 else 0,
        "hop_seconds": config.hop_seconds,
        "data_root": str(config.calibration_data),
    }
    return Windows(heldout, heldout.logmel[:PARITY_WINDOWS], calibration, provenance, sources)


def metadata_for(config: ExportConfig, checkpoint: Checkpoint, checkpoint_sha: str) -> ModelMetadata:
    """What the ONNX file says about itself; ``--thresholds`` replaces the labels it names."""
    thresholds = dict(checkpoint.thresholds)
    if config.thresholds_file is not None:
        thresholds.update(read_thresholds(config.thresholds_file, tuple(checkpoint.labels)))
    return ModelMetadata(
        name=config.name or config.out.stem,
        version=config.version or checkpoint_sha[:12],
        labels=tuple(checkpoint.labels),
        frontend=checkpoint.frontend,
        thresholds=thresholds,
        metrics=dict(checkpoint.metrics),
        scoring=checkpoint.model_config.head,
    )


def _measure(config: ExportConfig, checkpoint: Checkpoint, windows: Windows, paths: dict[str, Path]) -> dict:
    """Parity and speed figures of the FP32 (and INT8) files against the PyTorch model."""
    model = checkpoint.build()
    fp32 = load_model(paths["fp32"], threads=2)
    figures: dict = {
        "max_abs_logit_diff": float(
            np.abs(torch_logits(model, windows.parity) - onnx_logits(fp32, windows.parity)).max()
        )
    }
    figures.update(fp32_accuracy=None, int8_accuracy=None, int8_agreement=None, int8_vs_fp32_speedup=None)
    int8 = load_model(paths["int8"], threads=2) if "int8" in paths else None
    if windows.heldout is not None:  # UrbanSound8K's held-out clips: the figures the policy reads first
        checked = _source_check(fp32, int8, windows.heldout)
        figures.update((key, value) for key, value in checked.items() if key != "clips")
    if windows.sources:
        figures["source_checks"] = {
            name: _source_check(fp32, int8, held) for name, held in windows.sources.items()
        }
    latency = latency_ms(paths, windows.parity)
    figures["latency_ms_per_window"] = {name: round(value, 4) for name, value in latency.items()}
    figures["latency_measured_on"] = cpu_facts()  # INT8's lead depends on the CPU's dot-product instructions
    if "int8" in latency:
        figures["int8_vs_fp32_speedup"] = round(latency["fp32"] / latency["int8"], 3)
    return figures


def _source_check(fp32: OnnxModel, int8: OnnxModel | None, held: WindowSet) -> dict:
    """One source's clip accuracy per precision and their agreement."""
    n_clips = len(held.labels)
    scoring = fp32.metadata.scoring  # the file says how its logits become scores
    fp32_pred = clip_predictions(onnx_logits(fp32, held.logmel), held.clip_index, n_clips, scoring)
    int8_pred = None
    if int8 is not None:
        int8_pred = clip_predictions(onnx_logits(int8, held.logmel), held.clip_index, n_clips, scoring)
    return source_figures(fp32_pred, int8_pred, held.labels)


def choose_precision(config: ExportConfig, figures: dict) -> tuple[str, str]:
    """(precision to ship, why): INT8 only if asked for and not slower (parity is checked before)."""
    if not config.int8:
        return "fp32", "INT8 not requested"
    if config.ship != "faster":
        return config.ship, f"--ship {config.ship}"
    speedup = figures["int8_vs_fp32_speedup"]
    if speedup >= 1.0:
        return "int8", f"INT8 is {speedup:.2f}x as fast as FP32 with 1 thread"
    return "fp32", f"INT8 is slower than FP32 on this CPU ({speedup:.2f}x), so FP32 ships"


def _build_files(
    config: ExportConfig, checkpoint: Checkpoint, windows: Windows, metadata: ModelMetadata, work: Path
) -> tuple[dict[str, Path], dict]:
    """FP32 (and INT8) files in ``work``, each carrying the metadata; returns paths and build facts."""
    params = checkpoint.frontend
    paths = {"fp32": work / "fp32.onnx"}
    facts: dict = {"exporter": export_fp32(checkpoint.build(), params.n_mels, params.n_frames, paths["fp32"])}
    if config.int8:
        assert windows.calibration is not None  # gather_windows loads it whenever int8 is asked for
        paths["int8"] = work / "int8.onnx"
        facts["quantization"] = quantize_int8(paths["fp32"], paths["int8"], windows.calibration).to_dict()
    for path in paths.values():
        attach_metadata(path, metadata)  # quant_pre_process and the quantizers drop metadata_props
        assert_self_contained(path)
    return paths, facts


def _install(paths: dict[str, Path], precision: str, out: Path, budget: int | None) -> dict | None:
    """Move the shipped file to ``out`` and keep its twin beside it if it fits; returns the twin's facts."""
    shutil.move(str(paths[precision]), out)
    other = next((name for name in paths if name != precision), None)
    if other is None:
        return None
    total = out.stat().st_size + paths[other].stat().st_size
    if budget is not None and total > budget:
        return {"path": None, "precision": other, "dropped": f"model + twin = {total} bytes > {budget}"}
    twin = out.with_name(f"{out.stem}.{other}.onnx")
    shutil.move(str(paths[other]), twin)
    return {"path": twin.name, "precision": other, **file_facts(twin)}


def portable_path(checkpoint: Path, model_dir: Path) -> str:
    """The checkpoint relative to the model's folder when both sit in the working tree (a repo checkout,
    so the card stays valid in any clone), else absolute."""
    checkpoint, model_dir, cwd = checkpoint.resolve(), model_dir.resolve(), Path.cwd().resolve()
    if checkpoint.is_relative_to(cwd) and model_dir.is_relative_to(cwd):
        return os.path.relpath(checkpoint, model_dir)
    return str(checkpoint)


def training_sources(config: ExportConfig, checkpoint: Checkpoint) -> list[dict]:
    """The checkpoint's sources and licences, or those ``--training-sources`` names for an older one."""
    if config.training_sources:
        return source_licences(config.training_sources, config.data_root, TRAINING_PACKAGES)
    return list(checkpoint.sources)


def _card_body(
    config: ExportConfig,
    checkpoint: Checkpoint,
    checkpoint_sha: str,
    metadata: ModelMetadata,
    figures: dict,
    facts: dict,
    command: str,
) -> dict:
    """Every model-card key except those write_card adds (sha256, size_bytes, license, created_at)."""
    model = checkpoint.build()
    params = checkpoint.frontend
    sources = training_sources(config, checkpoint)
    return {
        "name": metadata.name,
        "version": metadata.version,
        "labels": list(metadata.labels),
        "scoring": metadata.scoring,
        "frontend": dict(json.loads(params.to_json())),
        "thresholds": metadata.thresholds,
        "thresholds_source": (
            threshold_provenance(config.thresholds_file) if config.thresholds_file else "checkpoint"
        ),
        "training_sources": sources,
        "license": licence_line(sources) if sources else LICENSE_NOTE,
        "params": count_params(model),
        "macs_per_window": count_macs(model, (1, params.n_mels, params.n_frames)),
        "architecture": checkpoint.model_config.to_dict(),
        **figures,
        **facts,
        "training_metrics": checkpoint.metrics,
        "source_checkpoint": {
            "path": portable_path(config.checkpoint, config.out.parent),
            "sha256": checkpoint_sha,
            "fold": checkpoint.fold,
        },
        "command": command,
        "train_command": config.train_command,
    }


def run_export(config: ExportConfig, command: str) -> dict:
    """Do the whole export; raises ParityError (nothing written) when the parity policy fails."""
    checkpoint = load_checkpoint(config.checkpoint)
    checkpoint_sha = file_sha256(config.checkpoint)
    metadata = metadata_for(config, checkpoint, checkpoint_sha)
    windows = gather_windows(config, checkpoint)
    config.out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=config.out.parent, prefix=".earshot-export-") as tmp:
        paths, facts = _build_files(config, checkpoint, windows, metadata, Path(tmp))
        figures = _measure(config, checkpoint, windows, paths)
        heldout = f"held-out clips ({windows.provenance['heldout']})" if windows.heldout is not None else None
        failures = parity_failures(figures, config.policy, heldout)
        if failures and not config.allow_parity_failure:
            raise ParityError("; ".join(failures))
        precision, reason = choose_precision(config, figures)
        twin = _install(paths, precision, config.out, config.twin_budget)
    figures.update(
        precision=precision,
        precision_reason=reason,
        parity_passed=not failures,
        parity_failures=failures,
        twin=twin,
        evaluation=windows.provenance,
        parity_policy=asdict(config.policy),
    )
    card = _card_body(config, checkpoint, checkpoint_sha, metadata, figures, facts, command)
    return write_card(config.out, card)
