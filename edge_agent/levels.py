"""Sound levels on the stream: A- and C-weighted LAeq, LAFmax, LA10/LA90 and LCeq, in dB SPL or dBFS.

What is measured (IEC 61672-1 terms), from float32 mono samples at the model's rate:

- every second: ``LAeq,1s`` (energy mean of the A-weighted signal) and ``LAFmax`` (the highest value of
  LAF, the A-weighted squared signal through the *fast* exponential time weighting, tau = 125 ms);
- every minute: ``LAeq,1min``, ``LAmax`` (the highest LAF), ``LA10`` and ``LA90`` (the LAF level exceeded
  10 % and 90 % of the time) and ``LCeq,1min`` (C-weighted: keeps the low end of engines and music).

Conventions:

- **dBFS**: a full-scale sine (peak 1.0) reads 0 dBFS, i.e. level = 10 log10(mean square) + 3.01 dB.
- **Calibration**: dB SPL = dBFS level + offset, where the offset comes from :func:`calibration_offset` (a
  94 dB, 1 kHz acoustic calibrator held to the mic). Without an offset the levels are dBFS-relative and
  every result says ``calibrated=False``.
- **Stream time**: results carry ``start_s``/``end_s`` in seconds since the stream's first sample;
  seconds and minutes are counted from there, not from the wall clock (the pipeline stamps them).
- **LA10/LA90**: LAF is sampled at the end of every 100 ms (10 a second, 600 a minute; a grid every
  common rate divides); LA10 is the (linearly interpolated, numpy's default) 90th percentile of the
  sampled levels in dB, i.e. the level exceeded 10 % of the time; LA90 the 10th percentile.
- Digital silence reads ``SILENCE_DBFS`` (about -197 dBFS), never -inf, so results stay valid JSON.

Accuracy:

- The digital A and C weightings stay within 0.2 dB (16 kHz) to 0.35 dB (8-48 kHz) of the analog
  IEC 61672-1 curves from 10 Hz to 0.45 x rate, well inside class 2 (+-1.4 dB at 1 kHz, more elsewhere);
  the tests check them against the standard's table and its class-2 limits.
- At the model's 16 kHz nothing above ~7.3 kHz reaches the meter (the resampler's band edge): pink noise
  reads 0.56 dB(A) low for it, traffic-like noise falling 6 dB/octave 0.07 dB.
- LAF is evaluated exactly, but at every ``LAF_STEP``-th sample (0.25 ms at 16 kHz), so LAFmax/LAmax read
  at most 3 samples of decay low: 0.0065 dB at 16 kHz (0.013 dB at 8 kHz).
- The microphone dominates: MEMS units of one model differ in sensitivity by typically +-1 to +-3 dB, and
  their response departs from flat at the frequency extremes, so an *uncalibrated* sensor's absolute
  level is known only to a few dB. Its dBFS-relative levels still compare well with its own past and
  with other sensors' to that tolerance. A calibrator fixes the sensitivity at 1 kHz, to within its own
  tolerance (a few tenths of a dB), not the mic's frequency response or wind noise.

Why this implementation, and its cost. The budget: under 10 % of the agent's ~1.4-2 ms of CPU per second
of audio. numpy has no IIR filter, and a per-sample Python loop costs ~2 ms per second of audio for each
first-order stage (the meter needs ~10); numpy's FFT of one second at 16 kHz alone costs 0.4-0.5 ms here,
and frame-wise STFT energies would blur LAFmax. So each second is filtered *exactly* as a block
state-space system: M blocks of L ~ 32 samples, every block's output = (Toeplitz impulse response) x (its
samples) + (observability matrix) x (its starting state), one float32 matrix product for all blocks and
both weightings; the starting states come from the blocks' zero-start end states by the same device one
and two levels up (groups of blocks, then the frame), and the fast time weighting is one more product plus
a scaled cumulative sum for the values carried between blocks. No Python loop runs over samples or blocks:
~28 numpy calls a second, whose fixed overheads (views made once, np.dot where it dispatches faster) cost
about as much as their arithmetic. Measured on this shared 2-core EPYC VM, one core,
``OPENBLAS_NUM_THREADS=1 chrt -f 50 taskset -c 1 python3 scripts/bench_levels.py``: 0.15-0.17 ms per
second of 16 kHz audio when the machine is quiet (best 0.148, median 0.173 over runs whose neighbouring
reference GEMM ran at full speed), and 0.17-0.3 ms under the usual load, when the agent's own pipeline
measured 4-5 ms per second (``earshot bench --threads 1``): 4-7 % of the pipeline measured alike.
Evaluating LAF at every sample instead of every 4th costs ~6 % more; blocks of 16-25 samples cost more
(more blocks), 40-50 the same, 64 or more more (bigger products); groups of 10-25 blocks the same.

Results do not depend on how the stream is chunked: samples are buffered into whole seconds, and every
second is computed by the same fixed sequence of operations, so they are bit-identical for any block size.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

# Pole frequencies of the analog weightings, IEC 61672-1:2013 Annex E (Hz).
F1, F2, F3, F4 = 20.598997, 107.65265, 737.86223, 12194.217
WEIGHTINGS = ("A", "C")
MIN_RATE, MAX_RATE = 8000, 48000
FULL_SCALE_SINE_DB = 10 * math.log10(2.0)  # mean square of a full-scale sine is 1/2: it reads 0 dBFS
TAU_FAST_S = 0.125  # IEC 61672-1 "F" time weighting
LAF_SAMPLES_PER_SECOND = 10  # LAF sampled every 100 ms for LA10/LA90
SECONDS_PER_MINUTE = 60
MEAN_SQUARE_FLOOR = 1e-20  # digital silence: a finite level, so JSON and Prometheus stay happy
SILENCE_DBFS = 10 * math.log10(MEAN_SQUARE_FLOOR) + FULL_SCALE_SINE_DB
FIT_TOP = 0.45  # the 12.2 kHz double pole's stand-in is fitted from DC up to this fraction of the rate
LAF_STEP = 4  # LAF evaluated at every 4th sample: LAFmax at most 0.0065 dB low at 16 kHz, ~6 % cheaper
PADDED_STATES = 8  # the 6 states padded: BLAS multiplies by 8 columns faster than by 6
BLOCK_TARGET = 32  # samples per block (a divisor of the rate near this): see "Why" in the module doc

Section = tuple[np.ndarray, np.ndarray]  # (b, a): polynomials in z^-1, a[0] == 1


class _StateSpace(NamedTuple):
    """x[k+1] = A x[k] + B u[k], y[k] = C x[k] + D u[k]; C and D may have one row per output."""

    a: np.ndarray  # (n, n)
    b: np.ndarray  # (n,)
    c: np.ndarray  # (n,) or (outputs, n)
    d: np.ndarray | float  # scalar or (outputs,)


# ---------------------------------------------------------------------------------------------------
# Weighting design
# ---------------------------------------------------------------------------------------------------


def check_rate(rate: int) -> None:
    """Raise ValueError unless the weightings are designed for this sample rate."""
    if not MIN_RATE <= rate <= MAX_RATE:
        raise ValueError(f"sound levels need a sample rate in {MIN_RATE}..{MAX_RATE} Hz, got {rate}")


def analog_weighting_db(weighting: str, freqs: np.ndarray | Sequence[float]) -> np.ndarray:
    """The IEC 61672-1 analog A or C weighting in dB at ``freqs`` (Hz), 0 dB at 1 kHz."""
    f2 = np.asarray(freqs, dtype=np.float64) ** 2

    def gain(f2: np.ndarray | np.float64) -> np.ndarray | np.float64:
        c = F4**2 * f2 / ((f2 + F1**2) * (f2 + F4**2))
        return c if weighting == "C" else c * f2 / np.sqrt((f2 + F2**2) * (f2 + F3**2))

    _check_weighting(weighting)
    with np.errstate(divide="ignore"):
        return 20 * np.log10(gain(f2) / gain(np.float64(1e6)))


def weighting_sections(weighting: str, rate: int) -> list[Section]:
    """The digital A or C weighting at ``rate`` as first/second-order sections, 0 dB at 1 kHz."""
    _check_weighting(weighting)
    check_rate(rate)
    corners = [F1, F1] + ([F2, F3] if weighting == "A" else [])
    return _unity_at_1k([_highpass(fc, rate) for fc in corners] + [_double_lowpass(rate)], rate)


def weighting_response_db(weighting: str, freqs: np.ndarray | Sequence[float], rate: int) -> np.ndarray:
    """Response in dB of the digital weighting the meter runs (its state-space model) at ``freqs``."""
    _check_weighting(weighting)
    model = _weighting_model(rate)
    row = WEIGHTINGS.index(weighting)
    z = np.exp(2j * np.pi * np.asarray(freqs, dtype=np.float64) / rate)
    shifted = z[:, None, None] * np.eye(len(model.b)) - model.a  # (F, n, n): zI - A
    solved = np.linalg.solve(shifted, model.b[:, None])[..., 0]  # (F, n): (zI - A)^-1 B
    d = np.atleast_1d(model.d)  # (outputs,): the cascade's D has one entry per weighting
    return 20 * np.log10(np.abs(d[row] + solved @ model.c[row]))


def sections_response(
    sections: Sequence[Section], freqs: np.ndarray | Sequence[float], rate: int
) -> np.ndarray:
    """Complex response of cascaded sections at ``freqs`` (Hz)."""
    zinv = np.exp(-2j * np.pi * np.asarray(freqs, dtype=np.float64) / rate)
    h = np.ones_like(zinv)
    for b, a in sections:
        h *= np.polyval(b[::-1], zinv) / np.polyval(a[::-1], zinv)
    return h


def _check_weighting(weighting: str) -> None:
    """Raise ValueError for anything but 'A' or 'C'."""
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")


def _highpass(fc: float, rate: int) -> Section:
    """s / (s + 2 pi fc) by the bilinear transform.

    No pre-warping: it would make the corner exact but tilt the whole low-frequency asymptote by the
    warping factor (0.25 dB at 10 Hz at 8 kHz); without it the worst error below 1 kHz is 0.06 dB at
    16 kHz, and the bilinear map keeps the analog's unit gain at high frequencies (at Nyquist).
    """
    k = math.pi * fc / rate
    g = 1 / (1 + k)
    return np.array([g, -g]), np.array([1.0, -(1 - k) / (1 + k)])


def _double_lowpass(rate: int) -> Section:
    """(2 pi f4)^2 / (s + 2 pi f4)^2: matched-z double pole, numerator fitted to the analog magnitude.

    The bilinear transform cannot be used: at 16 kHz the 12.2 kHz poles lie above Nyquist and it would
    squash the curve (-5.7 dB at 6.3 kHz, outside class 2); matched-z poles alone (0.008 at 16 kHz)
    hardly roll off (+2 dB at 6.3 kHz).
    So the poles are matched-z and the second-order numerator is the least-squares fit (relative error)
    of |numerator|^2, a cosine series linear in its autocorrelation, to what makes the magnitude analog
    from DC to FIT_TOP x rate; its minimum-phase factor is the numerator, scaled to unit gain at DC.
    """
    p = math.exp(-2 * math.pi * F4 / rate)
    w = 2 * np.pi * np.linspace(0.0, FIT_TOP, 400)  # rad/sample
    wanted = np.abs(1 - p * np.exp(-1j * w)) ** 4 / (1 + (w * rate / (2 * np.pi * F4)) ** 2) ** 2
    basis = np.stack([np.ones_like(w), 2 * np.cos(w), 2 * np.cos(2 * w)], axis=1) / wanted[:, None]
    r = np.linalg.lstsq(basis, np.ones_like(w), rcond=None)[0]  # (3,) autocorrelation of the numerator
    roots = np.roots([r[2], r[1], r[0], r[1], r[2]])
    inside = roots[np.abs(roots) < 1]
    if len(inside) != 2:  # never within MIN_RATE..MAX_RATE (tested); guards a change of FIT_TOP
        raise ValueError(f"no minimum-phase fit of the 12.2 kHz poles at {rate} Hz")
    b = np.real(np.poly(inside))
    return b * (1 - p) ** 2 / b.sum(), np.array([1.0, -2 * p, p * p])


def _unity_at_1k(sections: list[Section], rate: int) -> list[Section]:
    """The same sections with the first one scaled so the cascade has unit gain at 1 kHz."""
    gain = 1 / abs(sections_response(sections, [1000.0], rate)[0])
    (b, a), rest = sections[0], sections[1:]
    return [(b * gain, a), *rest]


# ---------------------------------------------------------------------------------------------------
# State-space model: one system, two outputs (A and C share the C-weighting's states)
# ---------------------------------------------------------------------------------------------------


def _section_model(section: Section) -> _StateSpace:
    """Controller-canonical state-space form of one section (b no longer than a)."""
    b, a = section
    n = len(a) - 1
    b = np.concatenate([b, np.zeros(n + 1 - len(b))])
    mat = np.zeros((n, n))
    mat[0] = -a[1:]
    mat[1:, :-1] = np.eye(n - 1)
    return _StateSpace(mat, np.eye(n)[0], b[1:] - b[0] * a[1:], float(b[0]))


def _series(first: _StateSpace, second: _StateSpace) -> _StateSpace:
    """``second`` fed by ``first`` (single input, single output each); states stacked [first, second]."""
    n1, n2 = len(first.b), len(second.b)
    mat = np.zeros((n1 + n2, n1 + n2))
    mat[:n1, :n1] = first.a
    mat[n1:, :n1] = np.outer(second.b, first.c)
    mat[n1:, n1:] = second.a
    return _StateSpace(
        mat,
        np.concatenate([first.b, second.b * first.d]),
        np.concatenate([second.d * first.c, second.c]),
        second.d * first.d,
    )


def _cascade(sections: Sequence[Section]) -> _StateSpace:
    """State-space model of sections in series."""
    model = _section_model(sections[0])
    for section in sections[1:]:
        model = _series(model, _section_model(section))
    return model


def _weighting_model(rate: int) -> _StateSpace:
    """The A and C weightings as one system: C's states, then A's two extra high-pass states; C rows [A, C].

    A = C x (s / (s + 2 pi f2)) x (s / (s + 2 pi f3)) up to gain, so A is computed from C's output and
    the two cost 6 states, not 10.
    """
    c_model = _cascade(weighting_sections("C", rate))
    extra = _cascade(_unity_at_1k([_highpass(F2, rate), _highpass(F3, rate)], rate))
    a_model = _series(c_model, extra)
    c_row = np.concatenate([c_model.c, np.zeros(len(extra.b))])
    return _StateSpace(a_model.a, a_model.b, np.stack([a_model.c, c_row]), np.array([a_model.d, c_model.d]))


# ---------------------------------------------------------------------------------------------------
# Block engine
# ---------------------------------------------------------------------------------------------------


def _divisor_near(n: int, target: float, low: int, high: int) -> int:
    """The divisor of ``n`` in [low, high] nearest ``target``; ValueError when there is none."""
    divisors = [d for d in range(low, high + 1) if n % d == 0]
    if not divisors:
        raise ValueError(f"{n} has no divisor in {low}..{high}: unsupported sample rate")
    return min(divisors, key=lambda d: (abs(d - target), d))


def _powers(mat: np.ndarray, count: int) -> list[np.ndarray]:
    """[mat^0, mat^1, ..., mat^count]."""
    out = [np.eye(len(mat))]
    for _ in range(count):
        out.append(mat @ out[-1])
    return out


def _recurrence_maps(step: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-vector maps solving s[k+1] = step s[k] + f[k] for k < count, all at once.

    Returns (from_inputs, from_start): flattened f[0..count-1] @ from_inputs gives s[0..count] for s[0]
    = 0, and s[0] @ from_start adds the start state's part; shapes (count n, (count+1) n), (n, (count+1) n).
    """
    n = len(step)
    powers = _powers(step, count)
    from_inputs = np.zeros((count * n, (count + 1) * n))
    for m in range(count):
        for k in range(m + 1, count + 1):
            from_inputs[m * n : (m + 1) * n, k * n : (k + 1) * n] = powers[k - 1 - m].T
    return from_inputs, np.concatenate([p.T for p in powers], axis=1)


class _BlockWeighting:
    """Exact A and C weighting of whole frames (one second) in float32 matrix products; state carried.

    A frame of N samples is M blocks of L; blocks are grouped G to a group, Q groups a frame. Level 1:
    the outputs of every block from its samples and starting state (one product). The starting states
    come from the blocks' zero-start end states f: within each group by one product (level 2), across
    groups by another (level 3). float32 keeps the products fast; its rounding (~1e-7 of the signal)
    is far below a microphone's noise floor and does not accumulate, the recurrences being contractive.
    """

    def __init__(self, rate: int) -> None:
        model = _weighting_model(rate)
        n = self.states = len(model.b)
        self.block = block = _divisor_near(rate, BLOCK_TARGET, 16, 64)
        self.blocks = blocks = rate // block
        # blocks per group ~ sqrt(M): level 3's matrix, ((M / G) n)^2, then stays small enough to sit in
        # cache beside the rest (at 16 kHz G = 20: 97 kB; G = 10 has fewer flops but 375 kB, no faster)
        self.group = group = _divisor_near(blocks, math.sqrt(blocks), 1, blocks)
        powers = _powers(model.a, block)
        impulse = np.stack([model.d] + [model.c @ powers[k] @ model.b for k in range(block - 1)])  # (L, 2)
        outputs = np.zeros((block + n, 2 * block))  # rows: samples then start state; columns: A then C
        for out in range(2):
            for i in range(block):
                outputs[: i + 1, out * block + i] = impulse[i::-1, out]
                outputs[block:, out * block + i] = model.c[out] @ powers[i]
        self._outputs = outputs.astype(np.float32)
        to_end = np.zeros((block, PADDED_STATES))  # padded: BLAS's fast kernel for narrow products
        to_end[:, :n] = np.stack([powers[block - 1 - j] @ model.b for j in range(block)])
        self._to_end = to_end.astype(np.float32)
        in_group, group_start = _recurrence_maps(powers[block], group)
        padded_in_group = np.zeros((group, PADDED_STATES, (group + 1) * n))  # zero rows for the padding
        padded_in_group[:, :n] = in_group.reshape(group, n, -1)
        groups, frame_start = _recurrence_maps(np.linalg.matrix_power(powers[block], group), blocks // group)
        self._in_group = padded_in_group.reshape(group * PADDED_STATES, -1).astype(np.float32)
        self._group_start = group_start[:, : group * n].astype(np.float32)
        # level 3 in one product: [group-end states | the frame's start state] -> group starts, frame end
        self._to_starts = np.concatenate([groups, frame_start]).astype(np.float32)  # ((Q+1) n, (Q+1) n)
        self._carried = np.zeros((blocks // group + 1) * n, np.float32)  # its input; the state at the end
        self._within = np.empty((blocks // group, (group + 1) * n), np.float32)
        self._from_start = np.empty((blocks // group, group * n), np.float32)
        inputs = np.zeros((blocks // group, group, block + n), np.float32)  # [samples | start state]
        self._inputs = inputs.reshape(blocks, block + n)  # (M, L + n) view, one row per block
        self._samples, self._starts = self._inputs[:, :block], inputs[:, :, block:]  # views
        self._ends = np.empty((blocks, PADDED_STATES), np.float32)
        self.y = np.empty((blocks, 2 * block), np.float32)  # (M, 2L) outputs: [A | C] of each block
        self.frame = np.zeros(rate, np.float32)  # the second to weight, written by the caller
        # Views made once: the per-second path is ~28 numpy calls, and their overheads are half its cost.
        q = blocks // group
        self._frame_blocks = self.frame.reshape(blocks, block)
        self._ends_by_group = self._ends.reshape(q, group * PADDED_STATES)
        self._carried_groups = self._carried[:-n].reshape(q, n)  # group end states, then start states
        self._within_ends, self._within_starts = self._within[:, group * n :], self._within[:, : group * n]
        self._block_starts = self._from_start.reshape(q, group, n)

    def reset(self) -> None:
        """Back to silence before the stream (zero state)."""
        self._carried[:] = 0

    def process(self) -> np.ndarray:
        """``frame`` -> (M, 2L) float32 [A | C] outputs, block by block (``y``, a reused buffer)."""
        self._samples[...] = self._frame_blocks
        np.matmul(self._samples, self._to_end, out=self._ends)  # (M, 8) zero-start end state of each block
        np.dot(self._ends_by_group, self._in_group, out=self._within)  # (Q, (G+1) n) from group starts 0
        carried = self._carried  # [each group's zero-start end state | the frame's start state]
        self._carried_groups[...] = self._within_ends
        np.matmul(carried, self._to_starts, out=carried)  # in place: [group start states | frame's end state]
        np.dot(self._carried_groups, self._group_start, out=self._from_start)  # (Q, G n): their part ...
        self._from_start += self._within_starts  # ... plus the group's own: every block's start state
        self._starts[...] = self._block_starts
        return np.dot(self._inputs, self._outputs, out=self.y)  # np.dot: less call overhead than matmul


class _FastTimeWeighting:
    """LAF (fast exponential time weighting of a squared signal), exact at every ``step``-th sample.

    z[t] = a z[t-1] + (1 - a) e[t], a = exp(-1 / (rate tau)). The value carried into block k (z at the
    end of block k-1) comes from a scaled cumulative sum over blocks (a^(-N) = e^8 at most: no overflow)
    and enters as an extra c a / (1 - a) on the block's first e; then one product with the columns
    ``step`` apart of an (L, L) triangular matrix gives z exactly at every ``step``-th sample, ending
    at each block's last sample.
    """

    def __init__(self, rate: int, e: np.ndarray, step: int) -> None:
        """``e``: the (M, L) view, squared samples block by block, that ``process`` reads (and alters)."""
        blocks, block = e.shape
        a = math.exp(-1 / (rate * TAU_FAST_S))
        i = np.arange(block)
        lag = i[None, :] - i[:, None]  # (L, L) j - i
        weights = np.where(lag >= 0, (1 - a) * a ** np.maximum(lag, 0), 0.0)
        self.columns = np.arange(block - 1, -1, -step)[::-1]  # positions in a block where z is computed
        self._weights = weights[:, self.columns].astype(np.float32)  # (L, L / step)
        self._to_end = weights[:, -1].astype(np.float32)  # (L,)
        carry_in = a / (1 - a)
        k = np.arange(blocks + 1, dtype=np.float64)
        self._decay = a**block
        self._up = self._decay ** -k[:-1]  # (M,) a^(-L k): block k's end value, scaled for the sum
        self._inject = carry_in * self._decay ** (k - 1)  # (M+1,) sums -> carry_in x (z entering block k)
        self._next = self._decay / carry_in  # last entry of the sums -> the next frame's first
        self._sums = np.zeros(blocks + 1)  # [a^L z_prev, scaled end values], then cumulative
        self._scaled_ends, self._entering = self._sums[1:], self._sums[:-1]
        self._e, self._first = e, e[:, 0]
        self.z = np.empty((blocks, len(self.columns)), np.float32)

    def reset(self) -> None:
        """LAF back to zero."""
        self._sums[0] = 0.0

    def process(self) -> np.ndarray:
        """Squared samples (altered) -> (M, L / step) LAF mean square at the grid (``z``, a reused buffer).

        With d = [a^L z_prev, a^(-L m) u_m] (u: zero-start z at block ends), z entering block k is
        a^(L (k-1)) cumsum(d)[k]; it enters as an extra z a / (1 - a) on the block's first sample.
        """
        sums = self._sums
        np.multiply(self._e @ self._to_end, self._up, out=self._scaled_ends)
        np.add.accumulate(sums, out=sums)  # a cumulative sum: np.cumsum's wrapper costs twice as much
        sums *= self._inject
        self._first += self._entering
        sums[0] = sums[-1] * self._next
        return np.matmul(self._e, self._weights, out=self.z)


# ---------------------------------------------------------------------------------------------------
# The meter
# ---------------------------------------------------------------------------------------------------


def _percentile(ascending: np.ndarray, q: float) -> float:
    """numpy's default (linear) percentile of sorted values; np.percentile would import numpy.ma (40 ms)."""
    position = q / 100 * (len(ascending) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ascending) - 1)
    return float(ascending[low] + (position - low) * (ascending[high] - ascending[low]))


def _db(mean_square: float) -> float:
    """Mean square (full scale = 1) -> dBFS, full-scale sine = 0 dBFS, floored at SILENCE_DBFS."""
    return 10 * math.log10(max(mean_square, MEAN_SQUARE_FLOOR)) + FULL_SCALE_SINE_DB


@dataclass(frozen=True)
class SecondLevels:
    """One second of the stream: LAeq,1s and LAFmax, in dB SPL when calibrated, else dBFS."""

    start_s: float  # stream time of the second's first sample, seconds since the stream started
    end_s: float
    laeq: float  # dB
    lafmax: float  # dB
    calibrated: bool

    def to_dict(self) -> dict[str, float | bool | str]:
        """JSON-ready form, levels to 0.01 dB."""
        return _as_dict(self, "second")


@dataclass(frozen=True)
class MinuteLevels:
    """One minute of the stream: LAeq,1min, LAmax, LA10, LA90 and LCeq,1min, in dB SPL or dBFS."""

    start_s: float
    end_s: float
    laeq: float
    lamax: float  # highest LAF in the minute
    la10: float  # LAF level exceeded 10 % of the time
    la90: float  # LAF level exceeded 90 % of the time
    lceq: float
    calibrated: bool

    def to_dict(self) -> dict[str, float | bool | str]:
        """JSON-ready form, levels to 0.01 dB."""
        return _as_dict(self, "minute")


Levels = SecondLevels | MinuteLevels


def _as_dict(levels: Levels, period: str) -> dict[str, float | bool | str]:
    """Fields of a result with levels rounded to 0.01 dB, plus its period and unit."""
    out: dict[str, float | bool | str] = {"period": period}
    for name, value in vars(levels).items():
        out[name] = value if isinstance(value, bool) or name.endswith("_s") else round(value, 2)
    out["unit"] = "dB" if levels.calibrated else "dBFS"
    return out


class LevelMeter:
    """Streaming sound level meter: float32 mono blocks of any size in, 1-s and 1-min levels out.

    ``offset_db`` (from :func:`calibration_offset`) turns dBFS into dB SPL; without it the results are
    dBFS-relative and say ``calibrated=False``. Samples are buffered into whole seconds, so results are
    the same (bit-identical) however the stream is chunked; a trailing partial second is not reported.
    """

    def __init__(self, rate: int = 16000, offset_db: float | None = None) -> None:
        check_rate(rate)
        self.rate = rate
        self.offset_db = offset_db
        self.calibrated = offset_db is not None
        self._weighting = weighting = _BlockWeighting(rate)
        block = weighting.block
        self._fast = _FastTimeWeighting(rate, weighting.y[:, :block], LAF_STEP)
        self._laf = self._fast.z.reshape(-1)  # view: LAF of the last second on its grid
        grid = (np.arange(weighting.blocks)[:, None] * block + self._fast.columns).reshape(-1)
        self._frame = weighting.frame
        self._filled = 0
        self._seconds = 0  # whole seconds reported so far
        # LAF sampled at the end of each 100 ms (the grid point at or before it): indices into LAF
        ends = (np.arange(1, LAF_SAMPLES_PER_SECOND + 1) * rate) // LAF_SAMPLES_PER_SECOND - 1
        self._picks = np.searchsorted(grid, ends, side="right") - 1
        self._ones = np.ones(self._weighting.blocks, np.float32)
        self._halves = np.kron(np.eye(2), np.ones((block, 1))) / rate  # (2L, 2): mean of A, of C columns
        self._minute: list[tuple[float, float, float, np.ndarray]] = []

    def process(self, block: np.ndarray) -> list[Levels]:
        """Feed mono samples (float, full scale 1.0); get the seconds and minutes they complete, in order."""
        if not (isinstance(block, np.ndarray) and block.dtype == np.float32 and block.ndim == 1):
            block = np.asarray(block, dtype=np.float32).reshape(-1)
        filled = self._filled
        if filled + len(block) < self.rate:  # the usual call: the second goes on
            self._frame[filled : filled + len(block)] = block
            self._filled = filled + len(block)
            return []
        results: list[Levels] = []
        used = 0
        while used < len(block):
            take = min(len(block) - used, self.rate - self._filled)
            self._frame[self._filled : self._filled + take] = block[used : used + take]
            self._filled += take
            used += take
            if self._filled == self.rate:
                self._filled = 0
                results.extend(self._complete_second())
        return results

    def reset(self) -> None:
        """Start over as if the stream had just begun (stream time back to 0)."""
        self._weighting.reset()
        self._fast.reset()
        self._filled = self._seconds = 0
        self._minute.clear()

    def _complete_second(self) -> list[Levels]:
        """Measure the buffered second; add the minute's statistics when it ends one."""
        a_mean_square, c_mean_square = self._measure()
        if not math.isfinite(a_mean_square + c_mean_square):  # NaN/Inf in: never poison later seconds
            self._weighting.reset()
            self._fast.reset()
            self._frame[~np.isfinite(self._frame)] = 0.0
            a_mean_square, c_mean_square = self._measure()
        laf = self._laf
        start = float(self._seconds)
        self._seconds += 1
        offset = self.offset_db or 0.0
        lafmax = float(laf.max())
        self._minute.append((a_mean_square, c_mean_square, lafmax, laf[self._picks]))
        out: list[Levels] = [
            SecondLevels(start, start + 1, _db(a_mean_square) + offset, _db(lafmax) + offset, self.calibrated)
        ]
        if len(self._minute) == SECONDS_PER_MINUTE:
            out.append(self._minute_levels(start + 1))
            self._minute.clear()
        return out

    def _measure(self) -> tuple[float, float]:
        """The buffered second -> (A mean square, C mean square); its LAF lands in ``self._laf``."""
        y = self._weighting.process()  # (M, 2L): A outputs, then C outputs, per block
        np.square(y, out=y)
        per_position = np.dot(self._ones, y)  # (2L,) summed over blocks
        a_mean_square, c_mean_square = np.dot(per_position, self._halves)
        self._fast.process()  # reads the squared A half of y
        return float(a_mean_square), float(c_mean_square)

    def _minute_levels(self, end_s: float) -> MinuteLevels:
        """Statistics of the 60 seconds held in ``self._minute``."""
        a, c, peaks, samples = zip(*self._minute, strict=True)
        offset = self.offset_db or 0.0
        sampled = np.sort(np.maximum(np.concatenate(samples), MEAN_SQUARE_FLOOR))  # (600,) LAF every 100 ms
        sampled_db = 10 * np.log10(sampled) + FULL_SCALE_SINE_DB
        return MinuteLevels(
            end_s - SECONDS_PER_MINUTE,
            end_s,
            _db(float(np.mean(a))) + offset,
            _db(max(peaks)) + offset,
            _percentile(sampled_db, 90) + offset,  # LA10: exceeded 10 % of the time
            _percentile(sampled_db, 10) + offset,  # LA90
            _db(float(np.mean(c))) + offset,
            self.calibrated,
        )


@dataclass(frozen=True)
class WindowLevels:
    """LAeq and LAFmax of one stretch of audio (a detection's window), in dB SPL or dBFS."""

    laeq: float
    lafmax: float
    calibrated: bool

    def to_dict(self) -> dict[str, float | bool | str]:
        """The ``level`` block of an event: levels to 0.01 dB, unit and calibrated flag."""
        return {
            "laeq": round(self.laeq, 2),
            "lafmax": round(self.lafmax, 2),
            "unit": "dB" if self.calibrated else "dBFS",
            "calibrated": self.calibrated,
        }


class WindowMeter:
    """LAeq and LAFmax of single stretches of audio (detection windows), each measured from silence.

    It keeps one weighting engine: building one costs ~3 ms (its matrices), filtering a second ~0.2 ms.
    """

    def __init__(self, rate: int, offset_db: float | None = None) -> None:
        check_rate(rate)
        self.rate, self.offset_db = rate, offset_db
        self._engine = _BlockWeighting(rate)
        self._kernels = _fast_kernels(rate)

    def measure(self, samples: np.ndarray) -> WindowLevels:
        """The few ms of filter settling and the fast weighting starting at zero can only read low."""
        self._engine.reset()
        weighted = _filter_with(self._engine, np.asarray(samples, dtype=np.float32), "A")  # (n,) float64
        squared = np.square(weighted)
        offset = self.offset_db or 0.0
        laeq = _db(float(np.mean(squared))) if len(squared) else SILENCE_DBFS
        lafmax = _db(_fast_weighted_max(squared, self._kernels))
        return WindowLevels(laeq + offset, lafmax + offset, self.offset_db is not None)


def window_levels(samples: np.ndarray, rate: int, offset_db: float | None = None) -> WindowLevels:
    """LAeq and LAFmax of ``samples`` alone (one-off; ``WindowMeter`` for repeated use)."""
    return WindowMeter(rate, offset_db).measure(samples)


def _fast_weighted_max(squared: np.ndarray, kernels: tuple[np.ndarray, np.ndarray, np.ndarray]) -> float:
    """Max of the fast (125 ms) exponential average of ``squared``, from zero, second by second.

    e[n] = a e[n-1] + (1 - a) x[n] is, within a chunk, a^(n+1) e[-1] + (1 - a) a^n cumsum(a^-k x[k]);
    chunks of one second keep a^-k below e^8, far from float64 overflow. ``kernels`` = (a^-k,
    a^(k+1), (1 - a) a^k) for k < rate, from ``_fast_kernels``.
    """
    grow, carry, scale = kernels
    carried, peak = 0.0, 0.0
    for start in range(0, len(squared), len(grow)):
        chunk = squared[start : start + len(grow)]
        n = len(chunk)
        laf = carry[:n] * carried + scale[:n] * np.cumsum(chunk * grow[:n])
        carried, peak = float(laf[-1]), max(peak, float(laf.max()))
    return peak


def _fast_kernels(rate: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The per-sample factors of ``_fast_weighted_max`` for one second at ``rate``; float64 (rate,) each."""
    decay = math.exp(-1.0 / (TAU_FAST_S * rate))
    k = np.arange(rate, dtype=np.float64)
    return decay ** (-k), decay ** (k + 1), (1 - decay) * decay**k


# ---------------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------------

CALIBRATOR_HZ = 1000.0
MIN_CALIBRATION_S = 3.0
SETTLE_S = 0.5  # dropped at each end: the calibrator being seated or lifted, the filters settling
CLIP_LEVEL = 0.999  # a sample at or above this magnitude (full scale 1.0) counts as clipped
MIN_TONE_DBFS = -60.0  # quieter than this, the calibrator is not on the mic (or the gain is wrong)
TONE_TOLERANCE_HZ = 50.0  # calibrators are within 1-2 % of 1 kHz; cheap codecs' clocks add a little
MIN_TONE_FRACTION = 0.99  # of the A-weighted power: other sound then adds at most 0.04 dB
MAX_SPREAD_DB = 1.0  # range of 250-ms levels over the steady part


class CalibrationError(ValueError):
    """A recording that cannot calibrate the mic; the message says why in one line."""


@dataclass(frozen=True)
class Calibration:
    """The offset (dB SPL - dBFS) found from a calibrator recording, with what it rests on."""

    offset_db: float  # add to dBFS levels to get dB SPL
    measured_dbfs: float  # LAeq of the steady part, dBFS
    tone_hz: float
    tone_fraction: float  # share of the A-weighted power within TONE_TOLERANCE_HZ of the tone
    seconds: float  # length of the steady part measured


def calibration_offset(samples: np.ndarray, rate: int, spl_db: float = 94.0) -> Calibration:
    """From a recording of an acoustic calibrator (``spl_db`` at 1 kHz) held to the mic, the offset."""
    check_rate(rate)
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    seconds = len(x) / rate
    if seconds < MIN_CALIBRATION_S:
        raise CalibrationError(
            f"recording is {seconds:.1f} s; need at least {MIN_CALIBRATION_S:.0f} s of the calibrator's tone"
        )
    settle = int(SETTLE_S * rate)
    weighted = filter_weighted(x, rate)[settle:-settle]  # (n,) A-weighted steady part
    steady = x[settle:-settle]
    peak = float(np.max(np.abs(steady)))
    if peak >= CLIP_LEVEL:
        raise CalibrationError(f"recording clips (peak {peak:.3f} of full scale): lower the input gain")
    level = _db(float(np.mean(weighted**2)))
    if level < MIN_TONE_DBFS:
        raise CalibrationError(
            f"tone too quiet ({level:.1f} dBFS): is the calibrator on the mic and switched "
            "on, the input gain up?"
        )
    tone_hz, fraction = _dominant_tone(steady, rate)
    _check_tone(tone_hz, fraction)
    _check_steady(weighted, rate)
    return Calibration(spl_db - level, level, tone_hz, fraction, len(steady) / rate)


def filter_weighted(x: np.ndarray, rate: int, weighting: str = "A") -> np.ndarray:
    """A whole recording through the meter's A (or C) weighting, from silence; float64 (n,)."""
    return _filter_with(_BlockWeighting(rate), x, weighting)


def _filter_with(engine: _BlockWeighting, x: np.ndarray, weighting: str) -> np.ndarray:
    """``x`` through ``engine`` (in its current state), second by second; float64 (n,)."""
    rate = engine.frame.shape[0]
    padded = np.zeros(-(-len(x) // rate) * rate, np.float32)  # whole seconds: the engine's frame
    padded[: len(x)] = x
    column = WEIGHTINGS.index(weighting) * engine.block
    parts = []
    for second in padded.reshape(-1, rate):
        engine.frame[...] = second
        parts.append(engine.process()[:, column : column + engine.block].reshape(-1).astype(np.float64))
    return np.concatenate(parts)[: len(x)]


def _dominant_tone(x: np.ndarray, rate: int) -> tuple[float, float]:
    """(frequency of the strongest component, its share of the A-weighted power) from a Hann spectrum."""
    spectrum = np.abs(np.fft.rfft((x - x.mean()) * np.hanning(len(x)))) ** 2
    freqs = np.fft.rfftfreq(len(x), 1 / rate)
    spectrum *= 10 ** (analog_weighting_db("A", np.maximum(freqs, 1.0)) / 10)
    peak = int(np.argmax(spectrum))
    near = np.abs(freqs - freqs[peak]) <= TONE_TOLERANCE_HZ
    return float(freqs[peak]), float(spectrum[near].sum() / max(spectrum.sum(), 1e-300))


def _check_tone(tone_hz: float, fraction: float) -> None:
    """Refuse anything but a clean tone near 1 kHz."""
    if abs(tone_hz - CALIBRATOR_HZ) > TONE_TOLERANCE_HZ:
        raise CalibrationError(
            f"strongest sound is at {tone_hz:.0f} Hz, not the calibrator's {CALIBRATOR_HZ:.0f} Hz tone"
        )
    if fraction < MIN_TONE_FRACTION:
        raise CalibrationError(
            f"the 1 kHz tone is only {100 * fraction:.1f} % of the sound (need "
            f"{100 * MIN_TONE_FRACTION:.0f} %): too noisy, seal the calibrator on the mic"
        )


def _check_steady(weighted: np.ndarray, rate: int) -> None:
    """Refuse a tone whose level wanders (calibrator moved or lifted during the recording)."""
    piece = rate // 4
    count = len(weighted) // piece
    levels = [_db(float(np.mean(p**2))) for p in weighted[: count * piece].reshape(count, piece)]
    spread = max(levels) - min(levels)
    if spread > MAX_SPREAD_DB:
        raise CalibrationError(f"level wanders by {spread:.1f} dB: hold the calibrator steady on the mic")
