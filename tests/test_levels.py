"""The sound level meter, against IEC 61672-1 and against generated signals of known level."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from edge_agent import levels
from edge_agent.levels import (
    FULL_SCALE_SINE_DB,
    SILENCE_DBFS,
    CalibrationError,
    LevelMeter,
    MinuteLevels,
    SecondLevels,
    analog_weighting_db,
    calibration_offset,
    sections_response,
    weighting_response_db,
    weighting_sections,
)

RATES = (8000, 11025, 16000, 22050, 32000, 44100, 48000)

# IEC 61672-1:2013, Table 3 (unchanged from the 2002 edition's Table 2): for each nominal one-third-octave
# frequency, the A and C weightings (dB) and the class-2 acceptance limits (dB above, dB below; None:
# no lower limit, "-inf" in the table). The standard computes the weightings at the exact base-ten
# frequencies 1000 * 10^(n/10) Hz (its Annex E), so they are compared there.
# nominal Hz, A, C, class 2 upper, class 2 lower
IEC_61672_TABLE_3 = [
    (10, -70.4, -14.3, 5.5, None),
    (12.5, -63.4, -11.2, 5.5, None),
    (16, -56.7, -8.5, 5.5, None),
    (20, -50.5, -6.2, 3.5, 3.5),
    (25, -44.7, -4.4, 3.5, 3.5),
    (31.5, -39.4, -3.0, 3.5, 3.5),
    (40, -34.6, -2.0, 2.5, 2.5),
    (50, -30.2, -1.3, 2.5, 2.5),
    (63, -26.2, -0.8, 2.5, 2.5),
    (80, -22.5, -0.5, 2.5, 2.5),
    (100, -19.1, -0.3, 2.0, 2.0),
    (125, -16.1, -0.2, 2.0, 2.0),
    (160, -13.4, -0.1, 2.0, 2.0),
    (200, -10.9, 0.0, 2.0, 2.0),
    (250, -8.6, 0.0, 1.9, 1.9),
    (315, -6.6, 0.0, 1.9, 1.9),
    (400, -4.8, 0.0, 1.9, 1.9),
    (500, -3.2, 0.0, 1.9, 1.9),
    (630, -1.9, 0.0, 1.9, 1.9),
    (800, -0.8, 0.0, 1.9, 1.9),
    (1000, 0.0, 0.0, 1.4, 1.4),
    (1250, 0.6, 0.0, 1.9, 1.9),
    (1600, 1.0, -0.1, 2.6, 2.6),
    (2000, 1.2, -0.2, 2.6, 2.6),
    (2500, 1.3, -0.3, 3.1, 3.1),
    (3150, 1.2, -0.5, 3.1, 3.1),
    (4000, 1.0, -0.8, 3.6, 3.6),
    (5000, 0.5, -1.3, 4.1, 4.1),
    (6300, -0.1, -2.0, 5.1, 5.1),
    (8000, -1.1, -3.0, 5.6, 5.6),
    (10000, -2.5, -4.4, 5.6, None),
    (12500, -4.3, -6.2, 6.0, None),
    (16000, -6.6, -8.5, 6.0, None),
    (20000, -9.3, -11.2, 6.0, None),
]
NOMINAL = np.array([row[0] for row in IEC_61672_TABLE_3])
EXACT = 1000 * 10 ** (np.arange(-20, 14) / 10)  # the base-ten frequencies the table is computed at
TABLE = {
    "A": np.array([row[1] for row in IEC_61672_TABLE_3]),
    "C": np.array([row[2] for row in IEC_61672_TABLE_3]),
}
UPPER = np.array([row[3] for row in IEC_61672_TABLE_3])
LOWER = np.array([np.inf if row[4] is None else row[4] for row in IEC_61672_TABLE_3])


def in_band(rate: int) -> np.ndarray:
    """Table rows below 0.45 x rate: what the rate can carry (the resampler cuts above)."""
    return NOMINAL < 0.45 * rate


def sine(freq: float, dbfs: float, seconds: float, rate: int) -> np.ndarray:
    """A sine at ``dbfs`` (full-scale sine = 0 dBFS), float32."""
    t = np.arange(round(seconds * rate)) / rate
    return (10 ** (dbfs / 20) * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def run(meter: LevelMeter, signal: np.ndarray, chunk: int = 4096) -> list[levels.Levels]:
    """Feed ``signal`` in ``chunk``-sample pieces; all results, in order."""
    out: list[levels.Levels] = []
    for start in range(0, len(signal), chunk):
        out += meter.process(signal[start : start + chunk])
    return out


def seconds_of(results: list[levels.Levels]) -> list[SecondLevels]:
    """The per-second results only."""
    return [r for r in results if isinstance(r, SecondLevels)]


def energy_db(mean_square: float | np.ndarray) -> np.ndarray:
    """Mean square -> dBFS (full-scale sine = 0 dBFS), the module's convention computed independently."""
    return 10 * np.log10(mean_square) + FULL_SCALE_SINE_DB


# --- the weightings -----------------------------------------------------------------------------------


def test_the_analog_formula_reproduces_the_standards_table() -> None:
    """Our reading of Annex E (poles, normalisation) gives Table 3 to its 0.1 dB rounding."""
    for weighting in ("A", "C"):
        assert np.abs(analog_weighting_db(weighting, EXACT) - TABLE[weighting]).max() <= 0.05 + 1e-9


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("weighting", ["A", "C"])
def test_digital_weighting_is_within_class_2_of_the_table(weighting: str, rate: int) -> None:
    band = in_band(rate)
    error = weighting_response_db(weighting, EXACT[band], rate) - TABLE[weighting][band]
    assert np.all(error <= UPPER[band]) and np.all(error >= -LOWER[band]), error
    assert np.abs(error).max() < 0.4  # and much closer than class 2 asks: see the next test


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("weighting", ["A", "C"])
def test_digital_weighting_follows_the_analog_curve_across_the_band(weighting: str, rate: int) -> None:
    """The design's own error, 10 Hz .. 0.45 x rate on a fine grid: <= 0.2 dB at 16 kHz, 0.35 dB anywhere."""
    freqs = np.geomspace(10, 0.45 * rate, 300)
    error = np.abs(weighting_response_db(weighting, freqs, rate) - analog_weighting_db(weighting, freqs))
    assert error.max() < (0.2 if rate == 16000 else 0.35)
    assert abs(weighting_response_db(weighting, [1000.0], rate)[0]) < 1e-9  # 0 dB at 1 kHz exactly


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_the_state_space_model_is_the_designed_cascade(rate: int) -> None:
    """The meter's two-output system (A and C sharing states) has the sections' responses."""
    freqs = np.geomspace(10, 0.49 * rate, 50)
    for weighting in ("A", "C"):
        cascade = 20 * np.log10(np.abs(sections_response(weighting_sections(weighting, rate), freqs, rate)))
        np.testing.assert_allclose(weighting_response_db(weighting, freqs, rate), cascade, atol=1e-9)


@pytest.mark.parametrize("rate", [7999, 48001, 96000])
def test_unsupported_rates_are_refused(rate: int) -> None:
    with pytest.raises(ValueError, match="sample rate"):
        LevelMeter(rate)


# --- levels of generated signals ----------------------------------------------------------------------


@pytest.mark.parametrize("dbfs", [0.0, -3.0, -20.0, -60.0])
def test_a_1khz_sine_reads_its_dbfs_level(dbfs: float) -> None:
    """Full-scale sine = 0 dBFS; A = C = 0 dB at 1 kHz."""
    results = run(LevelMeter(), sine(1000, dbfs, 3, 16000))
    for second in seconds_of(results):
        assert second.laeq == pytest.approx(dbfs, abs=0.1)
        assert second.lafmax == pytest.approx(dbfs, abs=0.1)
        assert abs(second.laeq - dbfs) < 0.01  # in fact


@pytest.mark.parametrize(
    ("freq", "rate"),
    [(63, 16000), (125, 16000), (4000, 16000), (8000, 32000), (8000, 48000), (63, 8000), (1000, 44100)],
)
def test_tones_follow_the_a_weighting_table(freq: float, rate: int) -> None:
    """LAeq of a steady tone at -20 dBFS = -20 + A(f), within class 2 (8 kHz needs a rate above 16 kHz:
    at 16 kHz it is the Nyquist frequency, and the model's resampler cuts above 7.3 kHz)."""
    row = int(np.flatnonzero(NOMINAL == freq)[0])
    laeq = seconds_of(run(LevelMeter(rate), sine(freq, -20.0, 3, rate)))[1].laeq  # second 2: settled
    error = laeq - (-20.0 + TABLE["A"][row])
    assert -LOWER[row] <= error <= UPPER[row]
    assert abs(laeq - (-20.0 + analog_weighting_db("A", [freq])[0])) < 0.3


def pink_noise(seconds: float, rate: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Periodic pink noise (1/f power from 10 Hz) at about -20 dBFS: (samples, bin frequencies, |bin|^2)."""
    n = int(seconds * rate)
    freqs = np.fft.rfftfreq(n, 1 / rate)
    rng = np.random.default_rng(seed)
    spectrum = np.where(freqs >= 10, 1 / np.sqrt(np.maximum(freqs, 1.0)), 0.0) * np.exp(
        2j * np.pi * rng.random(len(freqs))
    )
    spectrum[-1] = 0.0  # no Nyquist bin: every bin counts twice in Parseval
    x = np.fft.irfft(spectrum, n)
    scale = 10 ** (-20 / 20) / math.sqrt(2 * np.mean(x**2))
    return (x * scale).astype(np.float32), freqs, np.abs(spectrum * scale) ** 2


def test_pink_noise_reads_the_level_its_spectrum_predicts() -> None:
    """Fed twice (it is periodic), the second pass is in steady state: its LAeq is sum |X|^2 |W(f)|^2."""
    rate, seconds = 16000, 8
    x, freqs, power = pink_noise(seconds, rate)
    n = len(x)
    results = seconds_of(run(LevelMeter(rate), np.concatenate([x, x])))[seconds:]
    measured = energy_db(np.mean([10 ** ((r.laeq - FULL_SCALE_SINE_DB) / 10) for r in results]))
    mean_square = 2 * power / n**2  # Parseval for the one-sided spectrum (no DC, no Nyquist bin)
    digital = energy_db(
        np.sum(mean_square * 10 ** (weighting_response_db("A", np.maximum(freqs, 1), rate) / 10))
    )
    analog = energy_db(np.sum(mean_square * 10 ** (analog_weighting_db("A", np.maximum(freqs, 1)) / 10)))
    assert measured == pytest.approx(digital, abs=0.01)  # the meter does what its filter says
    assert measured == pytest.approx(analog, abs=0.1)  # and the filter is the standard's curve
    assert measured < -20.0 - 3  # A-weighting takes the low end out of pink noise


@pytest.mark.parametrize("burst_s", [0.05, 0.1, 0.2, 0.5])
def test_lafmax_of_a_tone_burst_follows_the_fast_time_constant(burst_s: float) -> None:
    """A burst of T at L after silence peaks at L + 10 log10(1 - exp(-T / 0.125 s))."""
    rate = 16000
    signal = np.zeros(3 * rate, np.float32)
    start = int(1.25 * rate)
    signal[start : start + int(burst_s * rate)] = sine(1000, -20.0, burst_s, rate)
    seconds = seconds_of(run(LevelMeter(rate), signal))
    expected = -20.0 + 10 * math.log10(1 - math.exp(-burst_s / levels.TAU_FAST_S))
    assert seconds[1].lafmax == pytest.approx(expected, abs=0.02)
    assert seconds[0].lafmax == SILENCE_DBFS  # nothing before the burst: the floor, not -inf
    assert seconds[1].laeq == pytest.approx(-20.0 + 10 * math.log10(burst_s), abs=0.02)


def test_levels_scale_with_the_calibration_offset_and_say_so() -> None:
    signal = sine(1000, -30.0, 2, 16000)
    plain = seconds_of(run(LevelMeter(16000), signal))
    calibrated = seconds_of(run(LevelMeter(16000, offset_db=120.0), signal))
    for a, b in zip(plain, calibrated, strict=True):
        assert not a.calibrated and b.calibrated
        assert b.laeq == pytest.approx(a.laeq + 120.0, abs=1e-9)
        assert b.lafmax == pytest.approx(a.lafmax + 120.0, abs=1e-9)
    assert plain[0].to_dict()["unit"] == "dBFS" and calibrated[0].to_dict()["unit"] == "dB"


# --- the minute statistics against a direct computation -------------------------------------------------


def varied_minute(rate: int, seconds: int = 61, seed: int = 3) -> np.ndarray:
    """Noise whose level changes every 250 ms, with rumble (C differs from A) and a few sharp bursts."""
    rng = np.random.default_rng(seed)
    n = seconds * rate
    gains = np.repeat(10 ** (rng.uniform(-60, -15, seconds * 4) / 20), rate // 4)
    x = rng.standard_normal(n) * gains + 0.3 * np.sin(2 * np.pi * 40 * np.arange(n) / rate)
    for at in rng.integers(0, n - rate, 5):
        x[at : at + rate // 20] += sine(2500, -6.0, 0.05, rate)
    return x.astype(np.float32)


def direct_filter(x: np.ndarray, response: np.ndarray, n: int) -> np.ndarray:
    """The whole signal through a causal filter at once, from silence: an FFT of n >> len(x) points."""
    return np.fft.irfft(np.fft.rfft(x.astype(np.float64), n) * response, n)[: len(x)]


def direct_levels(x: np.ndarray, rate: int) -> dict[str, np.ndarray | float]:
    """LAF per sample, and the A and C squares, of one whole signal (float64, no blocks, no state)."""
    n = 1 << math.ceil(math.log2(len(x) + 4 * rate))  # the zero pad > 32 tau: the tails have died out
    freqs = np.fft.rfftfreq(n, 1 / rate)
    weighted = {
        w: direct_filter(x, sections_response(weighting_sections(w, rate), freqs, rate), n)
        for w in ("A", "C")
    }
    a = math.exp(-1 / (rate * levels.TAU_FAST_S))
    fast = (1 - a) / (1 - a * np.exp(-2j * np.pi * freqs / rate))  # z[t] = a z[t-1] + (1 - a) e[t]
    return {
        "laf": direct_filter(weighted["A"] ** 2, fast, n),
        "a": weighted["A"] ** 2,
        "c": weighted["C"] ** 2,
    }


def test_minute_statistics_match_a_direct_computation() -> None:
    rate = 16000
    x = varied_minute(rate)
    results = run(LevelMeter(rate), x)
    minute = [r for r in results if isinstance(r, MinuteLevels)]
    assert len(minute) == 1 and (minute[0].start_s, minute[0].end_s) == (0.0, 60.0)
    direct = direct_levels(x, rate)
    n = 60 * rate
    laf = direct["laf"][:n]
    sampled = laf[np.arange(1, 601) * (rate // 10) - 1]  # LAF at the end of every 100 ms
    grid = laf[levels.LAF_STEP - 1 :: levels.LAF_STEP]  # where the meter evaluates LAF (every 4th sample)
    la10, la90 = np.percentile(energy_db(sampled), [90, 10])
    expected = {
        "laeq": energy_db(direct["a"][:n].mean()),
        "lceq": energy_db(direct["c"][:n].mean()),
        "lamax": energy_db(grid.max()),
        "la10": la10,
        "la90": la90,
    }
    for name, value in expected.items():
        assert getattr(minute[0], name) == pytest.approx(value, abs=1e-3), name
    assert energy_db(laf.max()) - minute[0].lamax < 0.0066  # the grid costs at most 3 samples of decay
    assert minute[0].lceq > minute[0].laeq + 3  # the 40 Hz rumble counts in C, hardly in A
    for k, second in enumerate(seconds_of(results)[:60]):
        piece = slice(k * rate, (k + 1) * rate)
        assert second.laeq == pytest.approx(energy_db(direct["a"][piece].mean()), abs=1e-3)
        assert second.lafmax == pytest.approx(
            energy_db(laf[piece][levels.LAF_STEP - 1 :: levels.LAF_STEP].max()), abs=1e-3
        )


def test_results_do_not_depend_on_the_chunk_size() -> None:
    """Bit-identical, minute included, however the stream is cut (the frame contract)."""
    rate = 16000
    x = varied_minute(rate, seconds=61, seed=5)
    reference = run(LevelMeter(rate), x, chunk=16000)
    assert len(reference) == 62 and isinstance(reference[60], MinuteLevels)
    for chunk in (256, 1024, 4000, 4097):
        assert run(LevelMeter(rate), x, chunk=chunk) == reference
    rng = np.random.default_rng(0)
    meter, ragged, start = LevelMeter(rate), [], 0
    while start < len(x):
        step = int(rng.integers(1, 5000))
        ragged += meter.process(x[start : start + step])
        start += step
    assert ragged == reference


def test_stream_time_stamps_and_json_form() -> None:
    results = run(LevelMeter(16000), np.zeros(61 * 16000, np.float32))
    assert [(r.start_s, r.end_s) for r in seconds_of(results)] == [(float(k), k + 1.0) for k in range(61)]
    minute = results[60]
    assert isinstance(minute, MinuteLevels) and minute.laeq == SILENCE_DBFS
    for result in results:
        payload = json.loads(json.dumps(result.to_dict(), allow_nan=False))  # silence is finite
        assert payload["calibrated"] is False and payload["period"] in {"second", "minute"}
    assert set(minute.to_dict()) == {
        "period",
        "start_s",
        "end_s",
        "laeq",
        "lamax",
        "la10",
        "la90",
        "lceq",
        "calibrated",
        "unit",
    }


def test_a_non_finite_block_does_not_poison_later_seconds() -> None:
    meter = LevelMeter(16000)
    signal = sine(1000, -20.0, 3, 16000)
    signal[100:200] = np.nan
    seconds = seconds_of(run(meter, signal))
    assert all(math.isfinite(s.laeq) for s in seconds)
    assert seconds[2].laeq == pytest.approx(-20.0, abs=0.01)


def test_the_module_needs_numpy_only() -> None:
    """The agent's base install is numpy + onnxruntime: no scipy, torch or librosa behind the meter."""
    code = (
        "import json, sys, edge_agent.levels\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "numpy" in json.loads(loaded)
    assert not {"scipy", "torch", "librosa", "soxr", "onnxruntime"} & set(json.loads(loaded))


# --- calibration ----------------------------------------------------------------------------------------


def calibrator(
    dbfs: float = -20.0,
    seconds: float = 5.0,
    freq: float = 1000.0,
    noise_dbfs: float = -90.0,
    rate: int = 16000,
) -> np.ndarray:
    """A calibrator's tone as the mic hears it, over a little background noise."""
    noise = 10 ** (noise_dbfs / 20) * np.random.default_rng(1).standard_normal(int(seconds * rate))
    return (sine(freq, dbfs, seconds, rate) + noise).astype(np.float32)


def test_calibration_finds_the_offset_and_the_meter_then_reads_94_db() -> None:
    recording = calibrator(-20.0)
    found = calibration_offset(recording, 16000, spl_db=94.0)
    assert found.offset_db == pytest.approx(114.0, abs=0.1)
    assert found.tone_hz == pytest.approx(1000.0, abs=1.0) and found.tone_fraction > 0.999
    seconds = seconds_of(run(LevelMeter(16000, offset_db=found.offset_db), recording))
    assert all(s.calibrated and s.laeq == pytest.approx(94.0, abs=0.1) for s in seconds[1:])


@pytest.mark.parametrize(
    ("recording", "why"),
    [
        (calibrator(seconds=2.0), "at least 3 s"),
        (calibrator(noise_dbfs=-25.0), "too noisy"),
        (calibrator(freq=500.0), "not the calibrator's"),
        (np.random.default_rng(4).standard_normal(80000).astype(np.float32) * 0.1, "calibrator's|too noisy"),
        (np.clip(calibrator(dbfs=2.0), -1.0, 1.0), "clips"),
        (calibrator(dbfs=-75.0, noise_dbfs=-140.0), "too quiet"),
        (np.zeros(5 * 16000, np.float32), "too quiet"),
        (np.concatenate([calibrator(seconds=3.0), calibrator(dbfs=-26.0, seconds=3.0)]), "wanders"),
    ],
    ids=["short", "noisy", "500 Hz", "no tone", "clipped", "quiet tone", "silence", "unsteady"],
)
def test_calibration_refuses_unusable_recordings(recording: np.ndarray, why: str) -> None:
    with pytest.raises(CalibrationError, match=why) as refused:
        calibration_offset(recording, 16000)
    assert isinstance(refused.value, ValueError) and "\n" not in str(refused.value)
