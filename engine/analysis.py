"""Per-layer quantization error: int8 model vs float model, layer by layer, streamed over samples.

Metrics (per node, over all its float outputs, against the float model on the same inputs):

- ``sqnr_db = 10 log10(sum x**2 / sum (x - y)**2)`` with ``x`` float and ``y`` int8
  (dequantized): signal-to-quantization-noise ratio in dB, HIGHER IS BETTER (each bit is
  ~6 dB; a well-quantized int8 layer gives 30-45 dB). JSON caps it at +-300 dB.
- ``cosine``: cosine similarity of ``x`` and ``y`` (1.0 is identical direction).
- ``mse``, ``max_abs_err`` (in the tensor's units), ``clip_fraction``: fraction of the
  output values that saturated at the int8 range when quantized.
- the error's mean, std, skew and excess kurtosis, and a histogram of the error in units of
  the output's quantization step (``(y - x) / scale``, ``ERR_HIST_BINS`` bins over
  ``+-ERR_HIST_STEPS`` steps plus under/overflow counts; of an evenly strided subset of at
  most ~``HIST_SAMPLE`` values per tensor and batch, see there).

Two views: ``isolated`` (only this layer quantized: the node is run by the int8 executor's
``run_node`` on the float model's own inputs, inside the float run's hook, so every layer
costs one node evaluation, not one forward pass) and ``accumulated`` (the whole graph
quantized: the int8 run's value of the tensor against the float run's). Everything is
accumulated as sums (Pebay's pairwise update for the central moments), never by keeping
tensors, so memory does not grow with the number of samples.

What is measured once serves twice where the values are provably the same: a node reading
only graph inputs and weights has the same inputs in both views (one measurement for both);
a permutation node (Reshape, Transpose, ...) whose output keeps its input's QParams takes
its input's statistics in both views (its step histogram is then a strided subset of the
input's layout; every other statistic is the same sum in another order).

Per model output: the same metrics, top-1 agreement for classifiers (last dim > 1), and
float vs int8 accuracy when labels are given.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from engine.calibrate import (
    DEFAULT_BATCH,
    CalibrationData,
    CalibrationStats,
    DataSpec,
    _shards,
    build_plan,
    calibrate,
    open_data,
    quantized_weights,
)
from engine.errors import Cancelled, ModelError
from engine.executor import executor_for, executor_with_weights
from engine.findings import qparams_range
from engine.graph import Model, Node
from engine.int8.plan import QuantPlan, Rounding, permutation_input, same_params
from engine.quant.metrics import SQNR_CAP_DB
from engine.quant.observers import PerChannelMinMaxObserver
from engine.quant.qparams import QParams, QuantScheme
from engine.quant.ranges import percentile_range

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]

ERR_HIST_STEPS = 16.0
"""The error histogram covers ``[-ERR_HIST_STEPS, ERR_HIST_STEPS]`` quantization steps."""
ERR_HIST_BINS = 128
"""Bins of the error histogram (a quarter step each)."""
HIST_SAMPLE = 1 << 12
"""At most about this many errors per tensor and batch enter the step histogram (an evenly
strided subset, prime stride, so it cycles through the channels of power-of-two layouts);
every statistic other than the histogram uses all values. 4,096 per tensor and batch (32
batches: ~130k values per layer) draws a 128-bin histogram smoothly; counting all values
cost more than every exact statistic together (bincount of 32k values: ~60 us)."""
ACT_HIST_BINS = 128
"""Bins kept per activation histogram in results (the observer's 4096 merged exactly)."""
EVAL_SHARDS_PER_WORKER = 16
"""Evaluation shards per worker process (see :func:`engine.shards.run_forked`): more
balance the workers better when cores run at different speeds; each costs a partial result
pickled and merged (~2 ms for a BERT-style encoder)."""
PROBE_SAMPLES = 32
"""Samples whose float inputs are cached for re-evaluating chosen layers (findings)."""
PROBE_BYTES = 256 * 2**20
"""Cap on the cached float inputs and outputs of the probe, bytes."""

QDQ_OPS = frozenset({"QuantizeLinear", "DequantizeLinear"})


def _jf(value: float | None) -> float | None:
    """JSON-safe float: None for NaN/None, +-inf clamped to +-SQNR_CAP_DB."""
    if value is None or math.isnan(value):
        return None
    if math.isinf(value):
        return math.copysign(SQNR_CAP_DB, value)
    return float(value)


# ------------------------------------------------------------------ accumulators


RAW_MOMENTS_MEAN2 = 1e-2
"""A batch's error moments are taken about 0 (``sum e**k``, then shifted to the mean: one
pass fewer) when ``mean**2 <= RAW_MOMENTS_MEAN2 * mean(e**2)``, i.e. the mean is within a
tenth of the rms: the shift then amplifies the sums' rounding (~1e-6 relative) by at most
~1.1x. A larger mean (a biased layer) takes the two-pass centred moments."""
SQUARE_FLOOR = 1e-30
"""Below this largest squared error (errors under ~1e-15, where a float32 square may
underflow), max |error| is taken from the errors themselves instead of their squares."""

_CHUNK = 4096
"""Elements per float32 partial sum (its rounding error stays below 4096 ulp, ~1e-6 typical);
the partial sums are added in float64."""


def _sum_prod(a: np.ndarray, b: np.ndarray) -> float:
    """``sum(a * b)`` of two 1-d arrays of one dtype, as float64, without a threaded BLAS dot
    (it spin-waits badly on a loaded machine). float32 arrays are summed per chunk of
    ``_CHUNK`` elements in float32 (numpy's ``vecdot``: half the time of ``einsum`` here, and
    closer to the float64 sum), the chunks in float64."""
    if a.dtype != np.float32:
        return float(np.einsum("i,i->", a, b))
    k = a.size - a.size % _CHUNK
    total = 0.0
    if k:
        total = float(np.vecdot(a[:k].reshape(-1, _CHUNK), b[:k].reshape(-1, _CHUNK)).sum(dtype=np.float64))
    if k < a.size:
        total += float(np.einsum("i,i->", a[k:].astype(np.float64), b[k:].astype(np.float64)))
    return total


_PRIMES = (1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97)


def _stride(size: int) -> int:
    """The smallest prime stride (or 1) leaving at most ``HIST_SAMPLE`` of ``size`` elements
    (97 beyond ~3M elements: a larger subset then)."""
    need = -(-size // HIST_SAMPLE)
    for p in _PRIMES:
        if p >= need:
            return p
    return _PRIMES[-1]


def _sum(a: np.ndarray) -> float:
    """``sum(a)`` of a 1-d array as float64 (numpy's pairwise summation, float32 chunks)."""
    if a.dtype != np.float32:
        return float(a.sum())
    k = a.size - a.size % _CHUNK
    total = float(np.einsum("ij->i", a[:k].reshape(-1, _CHUNK)).sum(dtype=np.float64)) if k else 0.0
    if k < a.size:
        total += float(a[k:].sum(dtype=np.float64))
    return total


_scratch = threading.local()


def _scratch_buffers(dtype: type, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three 1-d work arrays of ``dtype`` with room for ``size`` elements, reused per thread:
    a fresh 128 KiB+ temporary per numpy call costs more than the arithmetic (allocation,
    page faults) when an accumulator sees thousands of activation tensors."""
    key = np.dtype(dtype).str
    have = getattr(_scratch, key, None)
    if have is None or have[0].size < size:
        have = tuple(np.empty(max(size, 1024), dtype=dtype) for _ in range(3))
        setattr(_scratch, key, have)
    return have[0][:size], have[1][:size], have[2][:size]


def release_scratch() -> None:
    """Free this thread's work arrays (see :func:`_scratch_buffers`)."""
    _scratch.__dict__.clear()


def energy(ref: np.ndarray) -> float:
    """``sum(ref**2)`` as :meth:`ErrorAccumulator.update` computes it (pass it as ``ref2``
    when one reference is compared with several tensors)."""
    r = np.asarray(ref)
    work = np.float32 if r.dtype == np.float32 else np.float64
    rf = r.astype(work, copy=False).reshape(-1)
    return _sum_prod(rf, rf)


@dataclass
class ErrorSummary:
    """Finished error statistics of one node or tensor (see module doc for definitions)."""

    n: int
    n_nonfinite: int
    cosine: float
    sqnr_db: float
    mse: float
    max_abs_err: float
    err_mean: float
    err_std: float
    err_skew: float
    err_kurtosis: float
    clip_fraction: float
    err_mean_steps: float | None
    err_std_steps: float | None
    hist_counts: list[int] | None
    hist_under: int
    hist_over: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (sqnr_db clamped to +-300 dB, NaN as None)."""
        sqnr = self.sqnr_db if math.isnan(self.sqnr_db) else max(-SQNR_CAP_DB, min(SQNR_CAP_DB, self.sqnr_db))
        return {
            "n": self.n,
            "n_nonfinite": self.n_nonfinite,
            "cosine": _jf(self.cosine),
            "sqnr_db": _jf(sqnr),
            "mse": _jf(self.mse),
            "max_abs_err": _jf(self.max_abs_err),
            "err_mean": _jf(self.err_mean),
            "err_std": _jf(self.err_std),
            "err_skew": _jf(self.err_skew),
            "err_kurtosis": _jf(self.err_kurtosis),
            "clip_fraction": _jf(self.clip_fraction),
            "err_mean_steps": _jf(self.err_mean_steps),
            "err_std_steps": _jf(self.err_std_steps),
            "err_hist_steps": None
            if self.hist_counts is None
            else {
                "counts": self.hist_counts,
                "lo": -ERR_HIST_STEPS,
                "hi": ERR_HIST_STEPS,
                "under": self.hist_under,
                "over": self.hist_over,
            },
        }


@dataclass
class BatchError:
    """The error statistics of one pair of tensors (see :class:`ErrorAccumulator`): the
    count of values, of non-finite pairs, and over the finite ones the count ``n``, mean and
    central moment sums of the error, ``sum ref**2``, ``sum ref*err``, ``sum err**2``, max
    |err|, and (when a step was given) the error in steps: count, sum, sum of squares and
    the histogram (``hist`` inside, ``under``/``over`` beyond it)."""

    values: int
    nonfinite: int = 0
    n: int = 0
    mean: float = 0.0
    m2: float = 0.0
    m3: float = 0.0
    m4: float = 0.0
    ref2: float = 0.0
    cross: float = 0.0
    err2: float = 0.0
    max_abs: float = 0.0
    steps_n: int = 0
    steps_sum: float = 0.0
    steps_sum2: float = 0.0
    hist: np.ndarray | None = None
    under: int = 0
    over: int = 0


def measure_error(
    ref: np.ndarray, test: np.ndarray, step: np.ndarray | float | None = None, ref2: float | None = None
) -> BatchError:
    """The :class:`BatchError` of one pair (see :meth:`ErrorAccumulator.update`)."""
    r = np.asarray(ref)
    t = np.asarray(test)
    if r.shape != t.shape:
        raise ModelError(f"int8 and float tensors differ in shape: {t.shape} vs {r.shape}")
    # float32 in chunks; a tensor smaller than a chunk in float64 (as its sums would be)
    work = np.float32 if r.dtype == np.float32 and t.dtype == np.float32 and r.size >= _CHUNK else np.float64
    r = r.astype(work, copy=False)
    t = t.astype(work, copy=False)
    batch = BatchError(int(r.size))
    if r.size == 0:
        return batch
    buf_e, buf_d, buf_d2 = _scratch_buffers(work, int(r.size))
    e = np.subtract(t.reshape(-1), r.reshape(-1), out=buf_e)
    err_full = e.reshape(r.shape)
    rf = r.reshape(-1)
    total = _sum(e)
    if not math.isfinite(total):  # some pair has a NaN/Inf: keep the finite pairs only
        ok = np.isfinite(err_full)
        e, rf = err_full[ok], r[ok]
        total = _sum(e)
        ref2 = None
    n_b = int(e.size)
    batch.nonfinite = int(r.size) - n_b
    if n_b == 0:
        return batch
    mean_b = total / n_b
    e2 = np.multiply(e, e, out=buf_d2[:n_b])
    s2 = _sum(e2)
    peak2 = e2.max()  # sqrt of a correctly rounded square is the |value| itself, barring under/overflow
    if SQUARE_FLOOR < float(peak2) < math.inf:
        max_abs_b = float(np.sqrt(peak2))
    else:
        max_abs_b = float(max(e.max(), -e.min()))
    if mean_b * mean_b <= RAW_MOMENTS_MEAN2 * (s2 / n_b):
        # the mean is small next to the rms: moments about 0, no centred copy (see the constant)
        s3, s4 = _sum_prod(e2, e), _sum_prod(e2, e2)
        m2_b = max(s2 - n_b * mean_b * mean_b, 0.0)
        m3_b = s3 - 3.0 * mean_b * s2 + 2.0 * n_b * mean_b**3
        m4_b = max(s4 - 4.0 * mean_b * s3 + 6.0 * mean_b * mean_b * s2 - 3.0 * n_b * mean_b**4, 0.0)
    else:  # a bias: centred moments (two passes), as Pebay's merge expects them exact
        d = np.subtract(e, work(mean_b), out=buf_d[:n_b])
        d2 = np.multiply(d, d, out=buf_d2[:n_b])
        m2_b = _sum(d2)
        m3_b = _sum_prod(d2, d)
        m4_b = _sum_prod(d2, d2)
    batch.n, batch.mean, batch.m2, batch.m3, batch.m4 = n_b, mean_b, m2_b, m3_b, m4_b
    batch.ref2 = _sum_prod(rf, rf) if ref2 is None else float(ref2)
    batch.cross = _sum_prod(rf, e)
    batch.err2 = m2_b + n_b * mean_b * mean_b
    batch.max_abs = max_abs_b
    if step is None:
        return batch
    s = np.asarray(step, dtype=np.float64)
    per_step = ERR_HIST_BINS / (2.0 * ERR_HIST_STEPS)
    if s.size == 1:  # per-tensor step: the moments in steps follow from those above
        inv = 1.0 / float(s.reshape(-1)[0])
        batch.steps_n = n_b
        batch.steps_sum = total * inv
        batch.steps_sum2 = batch.err2 * inv * inv
        sample = e[:: _stride(e.size)] if e.size > HIST_SAMPLE else e
        idx = np.multiply(sample, work(inv * per_step), out=buf_d[: sample.size])  # bin position
    else:
        units = err_full * (1.0 / s).astype(work)
        u = units.reshape(-1) if n_b == r.size else units[np.isfinite(err_full)]
        batch.steps_n = int(u.size)
        batch.steps_sum = _sum(u)
        batch.steps_sum2 = _sum_prod(u, u)
        if u.size > HIST_SAMPLE:
            u = u[:: _stride(u.size)]
        idx = u * work(per_step)
    idx += work(ERR_HIST_STEPS * per_step + 1.0)  # bin 0: underflow, bin BINS + 1: overflow
    # clipped to [0, BINS + 1] first, so the integer cast (truncation) is the floor
    np.minimum(np.maximum(idx, 0.0, out=idx), ERR_HIST_BINS + 1.0, out=idx)
    counts = np.bincount(idx.astype(np.intp), minlength=ERR_HIST_BINS + 2)
    batch.under = int(counts[0])
    batch.over = int(counts[-1])
    batch.hist = counts[1:-1]
    return batch


class ErrorAccumulator:
    """Streaming error statistics of test (int8) vs reference (float) tensors.

    Keeps sums only: ``sum x**2``, ``sum y**2``, ``sum x y``, the error's count, mean and
    central moment sums ``M2, M3, M4`` (merged per batch with Pebay's formulas, so they
    stay accurate when the mean is large), the max |error|, clipped counts, and the
    histogram of the error in quantization steps.
    """

    def __init__(self) -> None:
        self.n = 0
        self.n_nonfinite = 0
        self.sum_ref2 = 0.0
        self.sum_test2 = 0.0
        self.sum_cross = 0.0
        self.mean = 0.0
        self.m2 = 0.0
        self.m3 = 0.0
        self.m4 = 0.0
        self.max_abs = 0.0
        self.values = 0
        self.clipped = 0
        self.steps_n = 0
        self.steps_sum = 0.0
        self.steps_sum2 = 0.0
        self.hist: np.ndarray | None = None
        self.under = 0
        self.over = 0

    def update(
        self,
        ref: np.ndarray,
        test: np.ndarray,
        clipped: int = 0,
        step: np.ndarray | float | None = None,
        ref2: float | None = None,
    ) -> "BatchError":
        """Add one pair of tensors (same shape); ``step`` (broadcastable) enables the step histogram.

        float32 pairs of at least one chunk (``_CHUNK`` elements) are processed in float32
        (the difference ``test - ref`` is exact to half an ulp of itself) with per-chunk
        float32 sums combined in float64 (see :func:`_sum_prod`); anything else in float64. ``ref2``: :func:`energy` of ``ref``
        when the caller has it already (used only when every pair is finite). Returns this
        pair's own statistics (:meth:`add` gives them to another accumulator).
        """
        batch = measure_error(ref, test, step, ref2)
        self.add(batch, clipped)
        return batch

    def add(self, batch: "BatchError", clipped: int = 0) -> None:
        """Add a pair's statistics measured before (:func:`measure_error`): the same as
        ``update`` with that pair, for a pair holding the same values in another order."""
        self.values += batch.values
        self.clipped += int(clipped)
        self.n_nonfinite += batch.nonfinite
        if batch.n == 0:
            return
        self.sum_ref2 += batch.ref2
        self.sum_cross += batch.ref2 + batch.cross
        self.sum_test2 += max(batch.ref2 + 2.0 * batch.cross + batch.err2, 0.0)
        self.max_abs = max(self.max_abs, batch.max_abs)
        self._combine(batch.n, batch.mean, batch.m2, batch.m3, batch.m4)
        if batch.hist is None:
            return
        self.steps_n += batch.steps_n
        self.steps_sum += batch.steps_sum
        self.steps_sum2 += batch.steps_sum2
        self.under += batch.under
        self.over += batch.over
        self.hist = batch.hist if self.hist is None else self.hist + batch.hist

    def _combine(self, n_b: int, mean_b: float, m2_b: float, m3_b: float, m4_b: float) -> None:
        """Merge a set's count, mean and central moment sums into this one's (Pebay)."""
        n_a = self.n
        n = n_a + n_b
        if n_b == 0:
            return
        delta = mean_b - self.mean
        m2_a, m3_a = self.m2, self.m3
        self.m4 += (
            m4_b
            + delta**4 * n_a * n_b * (n_a * n_a - n_a * n_b + n_b * n_b) / n**3
            + 6.0 * delta * delta * (n_a * n_a * m2_b + n_b * n_b * m2_a) / (n * n)
            + 4.0 * delta * (n_a * m3_b - n_b * m3_a) / n
        )
        self.m3 += m3_b + delta**3 * n_a * n_b * (n_a - n_b) / (n * n) + 3.0 * delta * (n_a * m2_b - n_b * m2_a) / n
        self.m2 += m2_b + delta * delta * n_a * n_b / n
        self.mean += delta * n_b / n
        self.n = n

    def merge(self, other: "ErrorAccumulator") -> "ErrorAccumulator":
        """Add everything ``other`` saw (as if its tensors had been given to this one); self."""
        self._combine(other.n, other.mean, other.m2, other.m3, other.m4)
        self.n_nonfinite += other.n_nonfinite
        self.sum_ref2 += other.sum_ref2
        self.sum_test2 += other.sum_test2
        self.sum_cross += other.sum_cross
        self.max_abs = max(self.max_abs, other.max_abs)
        self.values += other.values
        self.clipped += other.clipped
        self.steps_n += other.steps_n
        self.steps_sum += other.steps_sum
        self.steps_sum2 += other.steps_sum2
        if other.hist is not None:
            self.hist = other.hist.copy() if self.hist is None else self.hist + other.hist
        self.under += other.under
        self.over += other.over
        return self

    @property
    def sum_err2(self) -> float:
        return self.m2 + self.n * self.mean * self.mean

    @property
    def sqnr_db(self) -> float:
        noise = self.sum_err2
        if self.n == 0:
            return math.nan
        if noise <= 0.0:
            return math.inf
        if self.sum_ref2 == 0.0:
            return -math.inf
        ratio = self.sum_ref2 / noise
        if not ratio > 0.0:  # noise overflowed to inf (ratio 0) or a NaN sum
            return -math.inf if ratio == 0.0 else math.nan
        return 10.0 * math.log10(ratio)

    def summary(self) -> ErrorSummary:
        nan = math.nan
        n = self.n
        if n == 0:
            return ErrorSummary(0, self.n_nonfinite, nan, nan, nan, nan, nan, nan, nan, nan,
                                self.clipped / self.values if self.values else nan, None, None, None, 0, 0)
        if self.sum_ref2 == 0.0 and self.sum_test2 == 0.0:
            cosine = 1.0
        elif self.sum_ref2 == 0.0 or self.sum_test2 == 0.0:
            cosine = nan
        else:
            cosine = max(-1.0, min(1.0, self.sum_cross / (math.sqrt(self.sum_ref2) * math.sqrt(self.sum_test2))))
        var = max(self.m2 / n, 0.0)
        std = math.sqrt(var)
        if std > 1e-12 * self.max_abs and var > 0:
            skew = (self.m3 / n) / var**1.5
            kurt = (self.m4 / n) / (var * var) - 3.0
        else:
            skew = kurt = nan
        mean_s = std_s = None
        if self.steps_n:
            mean_s = self.steps_sum / self.steps_n
            std_s = math.sqrt(max(self.steps_sum2 / self.steps_n - mean_s * mean_s, 0.0))
        return ErrorSummary(
            n=n,
            n_nonfinite=self.n_nonfinite,
            cosine=cosine,
            sqnr_db=self.sqnr_db,
            mse=self.sum_err2 / n,
            max_abs_err=self.max_abs,
            err_mean=self.mean,
            err_std=std,
            err_skew=skew,
            err_kurtosis=kurt,
            clip_fraction=self.clipped / self.values if self.values else 0.0,
            err_mean_steps=mean_s,
            err_std_steps=std_s,
            hist_counts=None if self.hist is None else [int(c) for c in self.hist],
            hist_under=self.under,
            hist_over=self.over,
        )


def values_outside(x: np.ndarray, qp: QParams | None) -> int | None:
    """How many values of float ``x`` lie beyond the range per-tensor ``qp`` represents by more
    than half a step (quantizing them saturates); None for per-channel or missing QParams."""
    if qp is None or qp.per_channel:
        return None
    rng = qparams_range(qp)
    assert rng is not None
    half = 0.5 * float(np.asarray(qp.scale))
    lo, hi = rng[0] - half, rng[1] + half
    if x.dtype == np.float32:
        lo, hi = np.float32(lo), np.float32(hi)
    if not x.size:
        return 0
    low, high = x.min(), x.max()  # two reductions; a side is counted only when it is crossed (or NaN)
    below = int(np.count_nonzero(x < lo)) if not low >= lo else 0
    above = int(np.count_nonzero(x > hi)) if not high <= hi else 0
    return below + above


def step_of(qp: QParams | None, ndim: int) -> np.ndarray | None:
    """The quantization step (scale) of a tensor, broadcastable against it; None when unquantized."""
    if qp is None:
        return None
    try:
        scale, _ = qp.broadcast(ndim)
    except ModelError:
        return None
    return scale.astype(np.float64)


# ------------------------------------------------------------------------ results


@dataclass
class LayerResult:
    """One node's error in both views (None when the node has no float output, or for the
    inner nodes of a fused ``unit``: the unit's error is on the node writing its output).
    ``unit_kind``: ``"gelu"`` or ``"bias"`` (MatMul + bias Add) for members of a unit.

    ``outside_fraction``: fraction of the FLOAT output values beyond the range its QParams
    represent (by more than half a step), i.e. that quantizing them saturates, wherever the
    int8 model does it (a pass-through op's output is clipped where its input was quantized,
    which the executor's per-tensor ``clipped`` counts do not attribute to it).
    """

    name: str
    op_type: str
    outputs: list[str]
    path: str | None
    note: str | None
    accumulated: ErrorSummary | None
    isolated: ErrorSummary | None
    unit: str | None = None
    outside_fraction: float | None = None
    unit_kind: str | None = None

    def to_dict(self) -> dict[str, Any]:
        acc = self.accumulated.to_dict() if self.accumulated else {}
        iso = self.isolated.to_dict() if self.isolated else {}
        return {
            "name": self.name,
            "op_type": self.op_type,
            "outputs": list(self.outputs),
            "path": self.path,
            "note": self.note,
            "fused_unit": self.unit,
            "fused_kind": self.unit_kind,
            "cosine": acc.get("cosine"),
            "sqnr_db": acc.get("sqnr_db"),
            "mse": acc.get("mse"),
            "max_abs_err": acc.get("max_abs_err"),
            "clip_fraction": acc.get("clip_fraction"),
            "cosine_isolated": iso.get("cosine"),
            "sqnr_db_isolated": iso.get("sqnr_db"),
            "mse_isolated": iso.get("mse"),
            "max_abs_err_isolated": iso.get("max_abs_err"),
            "clip_fraction_isolated": iso.get("clip_fraction"),
            "outside_fraction": _jf(self.outside_fraction) if self.outside_fraction is not None else None,
            "accumulated": acc or None,
            "isolated": iso or None,
        }


@dataclass
class OutputResult:
    """One model output: error metrics, top-1 agreement and accuracies (None when not applicable)."""

    name: str
    error: ErrorSummary
    top1_agreement: float | None
    accuracy_float: float | None
    accuracy_int8: float | None
    labelled: int

    def to_dict(self) -> dict[str, Any]:
        e = self.error.to_dict()
        out = {
            "name": self.name,
            "cosine": e["cosine"],
            "sqnr_db": e["sqnr_db"],
            "mse": e["mse"],
            "max_abs_err": e["max_abs_err"],
            "top1_agreement": _jf(self.top1_agreement),
            "accuracy_float": _jf(self.accuracy_float),
            "accuracy_int8": _jf(self.accuracy_int8),
            "labelled_samples": self.labelled,
            "error": e,
        }
        return out


@dataclass
class ActivationView:
    """An activation's float distribution with the chosen clipping range and int8 grid.

    ``counts`` over ``edges`` (``len(edges) == len(counts) + 1``, float units); ``lo``/``hi``
    is the range the QParams represent, ``(qmin - zero_point) * scale`` to
    ``(qmax - zero_point) * scale``.
    """

    name: str
    counts: list[int]
    edges: list[float]
    min: float
    max: float
    p99_abs: float | None
    lo: float | None
    hi: float | None
    qparams: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "counts": self.counts,
            "edges": self.edges,
            "min": _jf(self.min),
            "max": _jf(self.max),
            "p99_abs": _jf(self.p99_abs),
            "lo": _jf(self.lo),
            "hi": _jf(self.hi),
            "qparams": self.qparams,
        }


@dataclass
class WeightView:
    """A quantized weight's per-channel min/max along ``axis`` and its scales."""

    name: str
    node: str
    axis: int
    min: list[float]
    max: list[float]
    qparams: dict[str, Any] | None

    def to_dict(self) -> dict[str, Any]:
        # a channel without finite values has min +inf / max -inf: null in JSON
        def finite(values: list[float]) -> list[float | None]:
            return [v if math.isfinite(v) else None for v in values]

        return {"node": self.node, "axis": self.axis, "min": finite(self.min), "max": finite(self.max), "qparams": self.qparams}


@dataclass
class AnalysisResult:
    """Everything one analysis found; :meth:`to_dict` is JSON-safe."""

    model: str
    plan: QuantPlan
    calibration: dict[str, Any]
    evaluation: dict[str, Any]
    layers: list[LayerResult]
    outputs: list[OutputResult]
    activations: dict[str, ActivationView] = field(default_factory=dict)
    weights: dict[str, WeightView] = field(default_factory=dict)
    findings: list[Any] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)

    def layer(self, name: str) -> LayerResult:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def worst_isolated(self, count: int = 10) -> list[LayerResult]:
        """Layers with an isolated SQNR, lowest (worst) first."""
        rated = [l for l in self.layers if l.isolated is not None and not math.isnan(l.isolated.sqnr_db)]
        return sorted(rated, key=lambda l: l.isolated.sqnr_db)[:count]  # type: ignore[union-attr]

    def to_dict(self) -> dict[str, Any]:
        return analysis_document(self)


# ----------------------------------------------------------------------- executor


def int8_executor(model: Model, plan: QuantPlan) -> Any:
    """The int8 executor for ``model`` under ``plan`` (engine.int8)."""
    from engine.int8.executor import Int8Executor

    return Int8Executor(model, plan)


def has_qdq(model: Model) -> bool:
    """True when the model carries its own QuantizeLinear/DequantizeLinear nodes."""
    return any(n.op_type in QDQ_OPS for n in model.graph.nodes)


def fused_units(executor: Any) -> dict[str, Any]:
    """Node name -> the fused unit (GELU, or MatMul + bias) it belongs to in the int8 executor
    (none without fusion)."""
    units = getattr(executor, "units", None) or {}
    nodes = executor.model.graph.nodes
    return {nodes[i].name: unit for i, unit in units.items()}


def _float_outputs(node: Node, outs: Sequence[Any]) -> list[tuple[str, np.ndarray]]:
    return [
        (name, v)
        for name, v in zip(node.outputs, outs)
        if name and isinstance(v, np.ndarray) and v.dtype.kind == "f"
    ]


def _check_cancel(cancel: CancelFn | None) -> None:
    if cancel is not None and cancel():
        raise Cancelled("analysis cancelled")


# --------------------------------------------------------------------- evaluation


@dataclass
class _OutputAcc:
    error: ErrorAccumulator = field(default_factory=ErrorAccumulator)
    agree: int = 0
    total: int = 0
    correct_float: int = 0
    correct_int8: int = 0
    labelled: int = 0
    classifier: bool = False


def _merge_paths(paths: dict[str, str], notes: dict[str, str], result: Any) -> None:
    """Record the path each node took in an int8 run (a node that ever fell back counts as such)."""
    rank = {"integer": 0, "float_fallback": 1, "float": 2}
    for name, path in getattr(result, "paths", {}).items():
        old = paths.get(name)
        if old is None or rank.get(path, 0) > rank.get(old, 0):
            paths[name] = path
    notes.update(getattr(result, "notes", {}))


def _dequantized(value: Any) -> np.ndarray | None:
    """A value of an int8 run with ``dequantized=False``: a QTensor dequantized, else as is."""
    return value.dequantize() if value is not None and hasattr(value, "dequantize") else value


def _same_value_nodes(graph: Any, plan: QuantPlan, units: Mapping[str, Any]) -> dict[str, str]:
    """Node name -> its data input, for the nodes of :data:`engine.int8.plan.PERMUTATION_OPS`
    (default domain, not in a fused unit) whose output the plan quantizes exactly as its
    input: their output holds the input's values rearranged in every run."""
    found: dict[str, str] = {}
    for node in graph.nodes:
        x = permutation_input(node)
        if x is None or node.name in units:
            continue
        y = node.outputs[0]
        qx = plan.activations.get(x)
        if x not in graph.weights and qx is not None and not qx.per_channel and same_params(qx, plan.activations.get(y)):
            found[node.name] = x
    return found


def _evaluate_range(
    model: Model,
    plan: QuantPlan,
    int8: Any,
    data: CalibrationData,
    start: int,
    stop: int,
    batch: int,
    labels: np.ndarray | None,
    observe: CalibrationStats | None,
    progress: ProgressFn | None,
    cancel: CancelFn | None,
) -> _EvalPartial:
    """:func:`evaluate`'s work over samples ``start:stop`` in this process."""
    graph = model.graph
    float_exec = executor_for(model)
    acc: dict[str, ErrorAccumulator] = {}
    iso: dict[str, ErrorAccumulator] = {}
    outs: dict[str, _OutputAcc] = {n: _OutputAcc() for n in graph.output_names}
    weights = graph.weights
    paths: dict[str, str] = {}
    notes: dict[str, str] = {}

    units = fused_units(int8)
    unit_by_name = {u.node.name: u for u in units.values()}
    unit_inputs: dict[str, np.ndarray] = {}
    # isolated view: each float tensor quantized once for all its readers, dropped after the last
    quantized: dict[str, Any] = {}
    node_index = {id(n): i for i, n in enumerate(graph.nodes)}
    outside: dict[str, list[int]] = {}  # node -> [values beyond the QParams range, values]
    # A permutation node (Reshape, Transpose, ...: PERMUTATION_OPS) whose output keeps its input's
    # QParams holds its input's values rearranged: in the float run, in the int8 run (the same
    # codes) and alone (its isolated error is the input's own quantization error). Its
    # statistics in both views are then its input's, taken from this batch's records instead
    # of measured again (about a quarter of a Transformer's error measurements).
    same_values = _same_value_nodes(graph, plan, units)
    # a node reading only graph inputs and weights sees the same quantized inputs in both
    # views (the int8 run quantizes graph inputs as the isolated view does): one measurement
    graph_inputs = {t.name for t in graph.inputs}
    from_inputs = {
        n.name for n in graph.nodes if n.name not in units and all(not i or i in graph_inputs or i in weights for i in n.inputs)
    }
    acc_batch: dict[str, BatchError] = {}  # tensor -> its accumulated-view statistics, this batch
    qerr_batch: dict[str, tuple[BatchError, int]] = {}  # tensor -> its quantization error alone, clipped
    energy_of: dict[str, float | None] = {}
    beyond_of: dict[str, int | None] = {}

    def float_pass(feeds: Mapping[str, np.ndarray], result: Any) -> dict[str, np.ndarray]:
        """The float run of one batch with both views, node by node while its outputs are fresh:
        the isolated view (the node alone in int8 on these float inputs) and the accumulated
        view (against ``result``, the int8 run of the same batch). Returns the float outputs."""
        quantized.clear()  # graph outputs read by nodes are never dropped: not kept across batches
        for per_batch in (acc_batch, qerr_batch, energy_of, beyond_of):
            per_batch.clear()
        freed: set[str] = set()
        values = result.values
        clipped = result.clipped
        params = result.params

        def release(node: Node) -> None:
            """Drop quantized inputs after their last reader, except a unit's input while the
            unit (evaluated at the node writing its output) still waits for it."""
            freed.update(float_exec.free_after[node_index[id(node)]])
            awaited = {unit_by_name[name].x for name in unit_inputs}
            for name in freed - awaited:
                quantized.pop(name, None)
            freed.intersection_update(awaited)

        def accumulated(
            node: Node, floats: list[tuple[str, np.ndarray]], energies: list[float | None], source: str | None
        ) -> None:
            """This node's float outputs against the int8 run's (absent inside a fused unit);
            ``source``: the input whose values the only output holds (see same_values)."""
            counts = outside.setdefault(node.name, [0, 0])
            if source is not None:
                name, ref = floats[0]
                record = acc_batch.get(source)
                # the int8 run quantized both with the same parameters: the same codes, rearranged
                if record is not None and values.get(name) is not None and params.get(source) is not None and same_params(params.get(source), params.get(name)):
                    acc.setdefault(node.name, ErrorAccumulator()).add(record, int(clipped.get(name, 0) or 0))
                    acc_batch[name] = record
                    beyond = beyond_of[name] = beyond_of.get(source)
                    if beyond is not None:
                        counts[0] += beyond
                        counts[1] += int(ref.size)
                    return
            if any(values.get(name) is not None for name, _ in floats):
                a = acc.setdefault(node.name, ErrorAccumulator())
                for (name, ref), e in zip(floats, energies):
                    test = _dequantized(values.get(name))
                    if test is not None and np.shape(test) == ref.shape:
                        qp = plan.activations.get(name)
                        acc_batch[name] = a.update(ref, test, int(clipped.get(name, 0) or 0), step_of(qp, ref.ndim), ref2=e)
            for name, ref in floats:
                if values.get(name) is None:  # not produced by the int8 model (inside a fused unit)
                    continue
                beyond = beyond_of[name] = values_outside(ref, plan.activations.get(name))
                if beyond is not None:
                    counts[0] += beyond
                    counts[1] += int(ref.size)

        def hook(node: Node, inputs: Sequence[np.ndarray | None], outputs: tuple[np.ndarray, ...]) -> None:
            _check_cancel(cancel)
            floats = _float_outputs(node, outputs)
            if not floats:
                return None
            source = same_values.get(node.name)
            if source is not None and (len(floats) != 1 or floats[0][0] != node.outputs[0]):
                source = None
            if source is not None and source in energy_of:  # the same values: the same energy
                energies = [energy_of[source]]
            else:
                energies = [energy(ref) if ref.size else None for _, ref in floats]
            for (name, _), e in zip(floats, energies):
                energy_of[name] = e
            accumulated(node, floats, energies, source)
            if observe is not None:
                for name, ref in floats:
                    if name not in weights:
                        observe.observe_output(model, node, name, ref)
            if node.name in from_inputs and all(name in acc_batch for name, _ in floats):
                i = iso.setdefault(node.name, ErrorAccumulator())
                for name, _ in floats:
                    i.add(acc_batch[name], int(clipped.get(name, 0) or 0))
                release(node)
                return None
            if source is not None and source in qerr_batch:
                # isolated: the input's quantization error, as a permutation node before measured it
                record, q_clip = qerr_batch[floats[0][0]] = qerr_batch[source]
                iso.setdefault(node.name, ErrorAccumulator()).add(record, q_clip)
                release(node)
                return None
            unit = units.get(node.name)
            if unit is not None:
                # a fused unit: only the unit exists in the int8 model; it is evaluated as a
                # whole (on the float x) at the node writing its output, inner nodes have no view
                if unit.x in node.inputs:
                    unit_inputs[unit.node.name] = inputs[node.inputs.index(unit.x)]  # type: ignore[assignment]
                if unit.y not in node.outputs or unit.node.name not in unit_inputs:
                    release(node)
                    return None
                q_outs, q_clipped = int8.run_unit(unit, unit_inputs.pop(unit.node.name), quantized)
                q_outs = tuple(q_outs[0] if name == unit.y else None for name in node.outputs)
            else:
                q_outs, q_clipped = int8.run_node(node, list(inputs), quantized)
            release(node)
            i = iso.setdefault(node.name, ErrorAccumulator())
            q_by_name = dict(zip(node.outputs, q_outs))
            for (name, ref), e in zip(floats, energies):
                test = q_by_name.get(name)
                if test is not None and np.shape(test) == ref.shape:
                    qp = plan.activations.get(name)
                    q_clip = int(q_clipped.get(name, 0) or 0)
                    record = i.update(ref, test, q_clip, step_of(qp, ref.ndim), ref2=e)
                    if source is not None:  # this input's quantization error, for later permutations of it
                        qerr_batch[source] = qerr_batch[name] = (record, q_clip)
            return None

        return float_exec.run(feeds, hook=hook)

    def output_metrics(ref_out: Mapping[str, np.ndarray], result: Any, batch_labels: Any) -> None:
        for name, o in outs.items():
            ref = np.asarray(ref_out[name])
            test = _dequantized(result.values.get(name))
            if test is None or ref.dtype.kind != "f":
                continue
            test = np.asarray(test)
            qp = plan.activations.get(name)
            o.error.update(ref, test, int(result.clipped.get(name, 0) or 0), step_of(qp, ref.ndim))
            if ref.ndim >= 1 and ref.shape[-1] > 1:
                o.classifier = True
                pred_f = np.argmax(ref, axis=-1)
                pred_q = np.argmax(test, axis=-1)
                o.agree += int(np.count_nonzero(pred_f == pred_q))
                o.total += int(pred_f.size)
                if batch_labels is not None:
                    lab = np.asarray(batch_labels)
                    if lab.shape == pred_f.shape:
                        o.correct_float += int(np.count_nonzero(pred_f == lab))
                        o.correct_int8 += int(np.count_nonzero(pred_q == lab))
                        o.labelled += int(lab.size)

    def run_int8(feeds: Mapping[str, np.ndarray]) -> Any:
        _check_cancel(cancel)
        # node outputs are compared, not weights; each dequantized when it is compared
        return int8.run(feeds, intermediate=True, weights_too=False, dequantized=False)

    done = 0
    total = stop - start
    pos = start
    try:
        for n, feeds, file_labels in data.batches(batch, start, stop, with_labels=labels is None):
            _check_cancel(cancel)
            batch_labels = labels[pos : pos + n] if labels is not None else file_labels
            pos += n
            if observe is not None:
                for name, value in feeds.items():
                    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
                        observe.observe(model, name, value)
            result = run_int8(feeds)
            ref_out = float_pass(feeds, result)
            _merge_paths(paths, notes, result)
            output_metrics(ref_out, result, batch_labels)
            del result, ref_out
            if observe is not None:
                observe.samples += n
                observe.runs += 1
            done += n
            if progress is not None:
                progress(done, total)
    finally:
        release_scratch()  # the work arrays are as big as the largest tensor: not kept between analyses
    return _EvalPartial(acc, iso, outs, outside, paths, notes, observe)


@dataclass
class _EvalPartial:
    """What :func:`_evaluate_range` accumulates over a range of samples (mergeable)."""

    acc: dict[str, ErrorAccumulator] = field(default_factory=dict)
    iso: dict[str, ErrorAccumulator] = field(default_factory=dict)
    outs: dict[str, _OutputAcc] = field(default_factory=dict)
    outside: dict[str, list[int]] = field(default_factory=dict)  # node -> [beyond the range, values]
    paths: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    observed: CalibrationStats | None = None

    def merge(self, other: "_EvalPartial") -> "_EvalPartial":
        """Add a later range's partial to this one (range order kept); self."""
        for mine, theirs in ((self.acc, other.acc), (self.iso, other.iso)):
            for name, a in theirs.items():
                if name in mine:
                    mine[name].merge(a)
                else:
                    mine[name] = a
        for name, o in other.outs.items():
            m = self.outs.setdefault(name, _OutputAcc())
            m.error.merge(o.error)
            m.agree += o.agree
            m.total += o.total
            m.correct_float += o.correct_float
            m.correct_int8 += o.correct_int8
            m.labelled += o.labelled
            m.classifier = m.classifier or o.classifier
        for name, (beyond, values) in other.outside.items():
            counts = self.outside.setdefault(name, [0, 0])
            counts[0] += beyond
            counts[1] += values
        _merge_paths(self.paths, self.notes, other)
        if other.observed is not None:
            self.observed = other.observed if self.observed is None else self.observed.merge(other.observed)
        return self


def evaluate(
    model: Model,
    plan: QuantPlan,
    data: CalibrationData,
    batch: int = DEFAULT_BATCH,
    labels: np.ndarray | None = None,
    observe: CalibrationStats | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
    executor: Any = None,
    workers: int = 1,
) -> tuple[list[LayerResult], list[OutputResult], dict[str, str]]:
    """Isolated and accumulated error of every node, and output metrics, over all samples.

    Per batch: one int8 run (every tensor kept, for the accumulated view) and one float run
    whose hook evaluates each node alone with ``run_node`` on the float inputs (the isolated
    view) and keeps the float outputs; then the accumulated view compares the two runs'
    tensors by name (each float output's energy is computed once, for both views).
    ``labels`` (one per sample, in data order) override labels read from the data.
    ``observe``, when given, also collects activation statistics from the float run.
    ``workers > 1`` splits the samples (at run boundaries) over forked processes when
    forking is safe (:func:`engine.shards.fork_is_safe`; else one process) and merges their
    sums: the same statistics up to float64 rounding of the merge.
    """
    from engine.shards import fork_is_safe, run_forked

    int8 = executor if executor is not None else int8_executor(model, plan)
    graph = model.graph
    shards = _shards(data.num_samples, data.run_size(batch), workers) if workers > 1 else []
    if len(shards) > 1 and fork_is_safe():
        # read and quantized once here, shared by the workers (else each does it on its first sample)
        executor_with_weights(model)
        if hasattr(int8, "quantize_weights"):
            int8.quantize_weights()

        def work(start: int, stop: int, prog: ProgressFn) -> _EvalPartial:
            fresh = None if observe is None else CalibrationStats(synthetic=observe.synthetic, source=observe.source)
            return _evaluate_range(model, plan, int8, data, start, stop, batch, labels, fresh, prog, None)

        # EVAL_SHARDS_PER_WORKER shards a worker: a free worker takes the next (balance); the
        # partial sums are merged in shard order, the same every run. File handles are
        # shared with the parent: each worker reopens its own.
        pieces = _shards(data.num_samples, data.run_size(batch), len(shards) * EVAL_SHARDS_PER_WORKER)
        (partial,) = run_forked(
            work, pieces, progress, cancel, "evaluation", len(shards), on_start=data.close, fold=_EvalPartial.merge
        )
    else:
        partial = _evaluate_range(model, plan, int8, data, 0, data.num_samples, batch, labels, observe, progress, cancel)
    if observe is not None and partial.observed is not None and partial.observed is not observe:
        vars(observe).update(vars(partial.observed))
    units = fused_units(int8)
    acc, iso, outside = partial.acc, partial.iso, partial.outside
    layers = [
        LayerResult(
            node.name,
            node.op_type,
            [o for o in node.outputs if o],
            partial.paths.get(node.name),
            partial.notes.get(node.name),
            acc[node.name].summary() if node.name in acc else None,
            iso[node.name].summary() if node.name in iso else None,
            units[node.name].node.name if node.name in units else None,
            outside[node.name][0] / outside[node.name][1] if outside.get(node.name, [0, 0])[1] else None,
            getattr(units[node.name], "kind", "gelu") if node.name in units else None,
        )
        for node in graph.nodes
    ]
    results = [
        OutputResult(
            name,
            o.error.summary(),
            o.agree / o.total if o.classifier and o.total else None,
            o.correct_float / o.labelled if o.labelled else None,
            o.correct_int8 / o.labelled if o.labelled else None,
            o.labelled,
        )
        for name, o in partial.outs.items()
    ]
    return layers, results, partial.paths


# -------------------------------------------------------------------------- probe


class LayerProbe:
    """Float inputs and outputs of chosen nodes over the first samples, to re-evaluate one
    layer under another plan (``run_node`` on the cached inputs) without a forward pass."""

    def __init__(self, model: Model, plan: QuantPlan) -> None:
        self.model = model
        self.plan = plan
        self.inputs: dict[str, list[list[np.ndarray | None]]] = {}
        self.outputs: dict[str, list[tuple[np.ndarray, ...]]] = {}
        self.samples = 0
        self.nbytes = 0
        self._executors: list[tuple[QuantPlan, Any]] = []
        self._nodes = {n.name: n for n in model.graph.nodes}

    def fill(
        self,
        data: CalibrationData,
        nodes: Iterable[str],
        batch: int = DEFAULT_BATCH,
        max_samples: int = PROBE_SAMPLES,
        max_bytes: int = PROBE_BYTES,
        cancel: CancelFn | None = None,
    ) -> None:
        """One float pass over up to ``max_samples`` samples, keeping the chosen nodes' inputs."""
        wanted = set(nodes) & set(self._nodes)
        if not wanted:
            return
        weights = self.model.graph.weights
        exec_ = executor_for(self.model)
        batch_inputs: dict[str, list[np.ndarray | None]] = {}
        batch_outputs: dict[str, tuple[np.ndarray, ...]] = {}

        def hook(node: Node, inputs: Sequence[np.ndarray | None], outputs: tuple[np.ndarray, ...]) -> None:
            if node.name in wanted:
                batch_inputs[node.name] = list(inputs)
                batch_outputs[node.name] = tuple(outputs)
            return None

        for n, feeds, _ in data.batches(batch, stop=max_samples):
            _check_cancel(cancel)
            batch_inputs.clear()
            batch_outputs.clear()
            exec_.run(feeds, hook=hook)
            for name in batch_inputs:
                ins = batch_inputs[name]
                self.inputs.setdefault(name, []).append(ins)
                self.outputs.setdefault(name, []).append(batch_outputs[name])
                self.nbytes += sum(
                    int(a.nbytes) for a, nm in zip(ins, self._nodes[name].inputs) if a is not None and nm not in weights
                )
                self.nbytes += sum(int(np.asarray(o).nbytes) for o in batch_outputs[name])
            self.samples += n
            if self.nbytes >= max_bytes:
                break

    def _executor(self, plan: QuantPlan) -> Any:
        for p, e in self._executors:
            if p is plan:
                return e
        e = int8_executor(self.model, plan)
        self._executors.append((plan, e))
        return e

    def has(self, node: str) -> bool:
        return node in self.inputs

    def evaluate(
        self, node: str, plan: QuantPlan | None = None, inputs_override: Mapping[str, np.ndarray] | None = None
    ) -> ErrorAccumulator:
        """Isolated error of ``node`` under ``plan`` (default: the probe's plan) on the cached samples."""
        plan = plan or self.plan
        n = self._nodes[node]
        executor = self._executor(plan)
        acc = ErrorAccumulator()
        for ins, refs in zip(self.inputs.get(node, []), self.outputs.get(node, [])):
            q_outs, clipped = executor.run_node(n, list(ins))
            for name, ref, test in zip(n.outputs, refs, q_outs):
                if not name or not isinstance(ref, np.ndarray) or ref.dtype.kind != "f" or test is None:
                    continue
                acc.update(ref, np.asarray(test), int(clipped.get(name, 0) or 0))
        return acc


# ------------------------------------------------------------------ histograms


def _downsample(counts: np.ndarray, edges: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Merge adjacent bins (exactly) to at most ``bins`` bins."""
    factor = max(1, -(-counts.size // bins))
    if factor == 1:
        return counts, edges
    pad = (-counts.size) % factor
    c = np.concatenate((counts, np.zeros(pad, dtype=counts.dtype))).reshape(-1, factor).sum(axis=1)
    width = edges[1] - edges[0]
    e = edges[0] + np.arange(c.size + 1) * width * factor
    return c, e


def activation_views(stats: CalibrationStats, plan: QuantPlan, bins: int = ACT_HIST_BINS) -> dict[str, ActivationView]:
    """Histogram, clipping range and int8 grid of every observed activation."""
    views: dict[str, ActivationView] = {}
    for name in stats.order:
        obs = stats.tensors[name]
        if obs.count == 0:
            continue
        counts, edges = obs.histogram()
        first = int(np.flatnonzero(counts)[0]) if counts.any() else 0
        counts, edges = _downsample(counts[first:], edges[first:], bins)
        qp = plan.activations.get(name)
        rng = qparams_range(qp) if qp is not None else None
        p99 = percentile_range(obs, 99.0, symmetric=True)[1] if obs.count > 1 else None
        views[name] = ActivationView(
            name,
            [int(c) for c in counts],
            [float(e) for e in edges],
            float(obs.min),
            float(obs.max),
            p99,
            None if rng is None else rng[0],
            None if rng is None else rng[1],
            None if qp is None else qp.to_dict(),
        )
    return views


def weight_views(model: Model, plan: QuantPlan) -> dict[str, WeightView]:
    """Per-channel min/max (output-channel axis) of every quantized weight."""
    views: dict[str, WeightView] = {}
    axes = quantized_weights(model)
    for name, qp in plan.weights.items():
        if name not in model.graph.weights:
            continue
        node_axis = axes.get(name)
        axis = qp.axis if qp.axis is not None else (node_axis[1] if node_axis else 0)
        w = np.asarray(model.graph.weights[name])
        if w.ndim == 0:
            continue
        obs = PerChannelMinMaxObserver(axis)
        obs.update(w)
        assert obs.min is not None and obs.max is not None
        views[name] = WeightView(
            name,
            node_axis[0].name if node_axis else "",
            axis % w.ndim,
            [float(v) for v in obs.min],
            [float(v) for v in obs.max],
            qp.to_dict(),
        )
    return views


# ------------------------------------------------------------------- pipeline


@dataclass
class AnalysisConfig:
    """Options of :func:`run_analysis` (see the CLI's ``analyze`` for their meaning)."""

    scheme: QuantScheme = field(default_factory=QuantScheme)
    float_ops: list[str] | None = None
    int16_ops: list[str] | None = None
    integer_ops: list[str] | None = None
    rounding: Rounding = "half_even_float"
    workers: int = 1
    batch: int = DEFAULT_BATCH
    findings: bool = True
    probe_samples: int = PROBE_SAMPLES


def _attach_labels(labels: np.ndarray | None, data: CalibrationData, what: str) -> np.ndarray | None:
    if labels is None:
        return None
    lab = np.asarray(labels)
    if lab.dtype.kind not in "iub":
        raise ModelError(f"labels must be integers, got {lab.dtype}", what)
    if lab.ndim == 0 or lab.shape[0] < data.num_samples:
        got = 0 if lab.ndim == 0 else lab.shape[0]
        raise ModelError(f"holds {got} labels for {data.num_samples} evaluation samples", what)
    return lab[: data.num_samples].astype(np.int64)


def run_analysis(
    model: Model,
    calib: DataSpec | None,
    evaluation: DataSpec | None = None,
    labels: np.ndarray | None = None,
    labels_source: str = "labels",
    config: AnalysisConfig | None = None,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> AnalysisResult:
    """Calibrate (or read a QDQ model's scales), evaluate both views, compute findings.

    ``calib``: the calibration data (None for a QDQ model: its own scales are used; the
    evaluation then defaults to synthetic data when nothing is given). ``evaluation``:
    data to measure on (default: the calibration data). ``labels``: one integer label per
    evaluation sample (else ``labels`` arrays inside the evaluation files, when present).
    ``progress(done, total)`` counts samples over calibration, evaluation and the probe.
    """
    from engine.findings import compute_findings, probe_candidates

    cfg = config or AnalysisConfig()
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    float_model = model
    stats: CalibrationStats | None = None
    if has_qdq(model):
        from engine.int8.qdq import plan_from_qdq

        float_model, plan = plan_from_qdq(model)
        calib_data = None
        calibration: dict[str, Any] = {
            "method": "qdq",
            "samples": 0,
            "synthetic": False,
            "data": None,
            "note": "scales and zero points read from the model's QuantizeLinear/DequantizeLinear nodes",
        }
    else:
        if calib is None:
            raise ModelError("a float model needs calibration data (or synthetic data)", model.path)
        calib_data = open_data(calib, model)
        plan = None  # type: ignore[assignment]
    eval_spec = evaluation or calib or DataSpec("synthetic")
    eval_data = open_data(eval_spec, float_model)
    if labels is not None and eval_data.synthetic:
        raise ModelError("labels need the inputs they label: give calibration data, or a labels file that holds the inputs", labels_source)
    eval_labels = _attach_labels(labels, eval_data, labels_source)
    probe_n = min(cfg.probe_samples, eval_data.num_samples) if cfg.findings else 0
    total = (calib_data.num_samples if calib_data is not None else 0) + eval_data.num_samples + probe_n
    offset = [0]

    def phase(done: int, _total: int) -> None:
        if progress is not None:
            progress(offset[0] + done, total)

    if calib_data is not None:
        stats = calibrate(model, calib_data, batch=cfg.batch, workers=cfg.workers, progress=phase, cancel=cancel)
        plan = build_plan(model, stats, cfg.scheme, cfg.float_ops, cfg.int16_ops, cfg.integer_ops, cfg.rounding)
        offset[0] += calib_data.num_samples
        calibration = {
            "method": cfg.scheme.method,
            "percentile": cfg.scheme.percentile if cfg.scheme.method == "percentile" else None,
            "samples": stats.samples,
            "synthetic": stats.synthetic,
            "data": calib_data.description,
            "workers": cfg.workers,
        }
    timings["calibration_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    observed = CalibrationStats(synthetic=eval_data.synthetic, source=eval_data.description) if stats is None else None
    executor = int8_executor(float_model, plan)
    layers, outputs, paths = evaluate(
        float_model, plan, eval_data, cfg.batch, eval_labels, observed, phase, cancel, executor, workers=cfg.workers
    )
    offset[0] += eval_data.num_samples
    timings["evaluation_s"] = time.perf_counter() - t1
    act_stats = stats if stats is not None else observed
    assert act_stats is not None

    result = AnalysisResult(
        model=model.path,
        plan=plan,
        calibration=calibration,
        evaluation={
            "samples": eval_data.num_samples,
            "synthetic": eval_data.synthetic,
            "data": eval_data.description,
            "labels": bool(eval_labels is not None or eval_data.has_labels),
        },
        layers=layers,
        outputs=outputs,
        activations=activation_views(act_stats, plan),
        weights=weight_views(float_model, plan),
        timings=timings,
    )
    if cfg.findings:
        t2 = time.perf_counter()
        probe = LayerProbe(float_model, plan)
        probe._executors.append((plan, executor))
        probe.fill(eval_data, probe_candidates(float_model, plan, result, act_stats), cfg.batch, probe_n, cancel=cancel)
        phase(probe_n, total)
        result.findings = compute_findings(float_model, plan, result, act_stats, probe, paths)
        timings["findings_s"] = time.perf_counter() - t2
    timings["total_s"] = time.perf_counter() - t0
    return result


# ------------------------------------------------------------------- document


def analysis_document(result: AnalysisResult | None, extra: Mapping[str, Any] | None = None, model: Model | None = None) -> dict[str, Any]:
    """The JSON document of an analysis (see the CLI's ``analyze``); ``extra`` sections are
    merged in at the top level (e.g. cost-model keys). With ``result`` None (``--no-quant``)
    the document lists the layers of ``model`` without quantization metrics."""
    doc: dict[str, Any] = {"format": "deployment-inspector/analysis", "version": 1}
    if result is None:
        if model is None:
            raise ValueError("analysis_document needs a result or a model")
        doc["model"] = model.path
        doc["layers"] = [{"name": n.name, "op_type": n.op_type, "outputs": [o for o in n.outputs if o]} for n in model.graph.nodes]
        doc["quantization"] = None
    else:
        doc["model"] = result.model
        doc["metrics"] = {
            "sqnr_db": "10*log10(sum float^2 / sum (int8 - float)^2), dB, higher is better",
            "cosine": "cosine similarity of int8 and float values, 1 is best",
            "clip_fraction": "fraction of values saturated when the int8 executor produced them",
            "outside_fraction": "fraction of the float values beyond the range the output's QParams represent",
            "err_hist_steps": "histogram of (int8 - float) / output scale",
        }
        doc["calibration"] = dict(result.calibration)
        doc["evaluation"] = dict(result.evaluation)
        doc["plan"] = result.plan.to_dict()
        doc["layers"] = [layer.to_dict() for layer in result.layers]
        doc["outputs"] = [o.to_dict() for o in result.outputs]
        doc["findings"] = [f.to_dict() for f in result.findings]
        doc["activations"] = {k: v.to_dict() for k, v in result.activations.items()}
        doc["weights"] = {k: v.to_dict() for k, v in result.weights.items()}
        doc["timings"] = {k: round(v, 4) for k, v in result.timings.items()}
    if extra:
        doc.update(extra)
    return doc
