"""The frame contract end to end: the same recording fed in 256-, 1024- and 4000-sample blocks through
the real pipeline (source, ring buffer, resampler, windows, log-mel, ONNX model) gives identical scores."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from support.onnx_models import noise, siren_sweep, to_s16le, write_audio

from edge_agent.config import AgentConfig, AudioConfig
from edge_agent.onnx_model import OnnxModel
from edge_agent.pipeline import Pipeline, WindowResult
from edge_agent.sources import open_source

BLOCKS = (256, 1024, 4000)


def scores_for(model_path: Path, audio: AudioConfig, stdin: bytes | None = None) -> np.ndarray:
    """Every window's scores, (windows, classes), from a full pipeline run."""
    model = OnnxModel.load(model_path)
    source = open_source(audio, model.frontend.sample_rate, io.BytesIO(stdin) if stdin is not None else None)
    results: list[WindowResult] = []
    pipeline = Pipeline(AgentConfig(audio=audio), model, source, on_window=results.append)
    assert pipeline.run() == 0
    return np.stack([r.scores for r in results])


def recording(rate: int) -> np.ndarray:
    """Noise, a siren-like sweep, noise: 5 s at ``rate``."""
    return np.concatenate(
        [
            noise(1.5, rate, 0.05),
            siren_sweep(2.0, rate) + noise(2.0, rate, 0.05, seed=1),
            noise(1.5, rate, 0.05, seed=2),
        ]
    )


@pytest.mark.parametrize(("rate", "channels"), [(16000, 1), (44100, 2)])
def test_file_scores_do_not_depend_on_block_size(
    tmp_path: Path, siren_model: Path, rate: int, channels: int
) -> None:
    mono = recording(rate)
    path = write_audio(tmp_path / "street.wav", np.stack([mono] * channels, axis=1), rate, subtype="FLOAT")
    runs = [scores_for(siren_model, AudioConfig(source=str(path), fast=True, block_size=b)) for b in BLOCKS]
    assert runs[0].shape[0] >= 17  # 5 s, 1 s windows every 0.256 s, plus the padded tail
    assert runs[0][:, 8].max() > 0.8 > 0.2 > runs[0][:, 8].min()  # the siren is there, and not everywhere
    for other in runs[1:]:
        np.testing.assert_array_equal(other, runs[0])


def test_stdin_scores_do_not_depend_on_block_size(siren_model: Path) -> None:
    raw = to_s16le(recording(8000))
    configs = [AudioConfig(source="-", stdin_rate=8000, block_size=b) for b in BLOCKS]
    runs = [scores_for(siren_model, config, raw) for config in configs]
    for other in runs[1:]:
        np.testing.assert_array_equal(other, runs[0])


@pytest.mark.shared_data
def test_real_clips_score_the_same_in_any_block_size(shared_data: Path, siren_model: Path) -> None:
    """Real UrbanSound8K recordings (Ogg), a siren and the shortest clip (shorter than one window)."""
    import csv

    root = shared_data / "urbansound8k-subset"
    with (root / "metadata" / "UrbanSound8K.csv").open() as handle:
        rows = [
            row
            for row in csv.DictReader(handle)
            if (root / "audio" / f"fold{row['fold']}" / row["slice_file_name"]).is_file()
        ]
    siren = next(row for row in rows if row["class"] == "siren")
    shortest = min(rows, key=lambda row: float(row["end"]) - float(row["start"]))
    for row in (siren, shortest):
        path = root / "audio" / f"fold{row['fold']}" / row["slice_file_name"]
        configs = [AudioConfig(source=str(path), fast=True, block_size=b) for b in (256, 4000)]
        runs = [scores_for(siren_model, config) for config in configs]
        assert len(runs[0]) >= 1  # a clip shorter than a window still gets its zero-padded window
        np.testing.assert_array_equal(runs[0], runs[1])
