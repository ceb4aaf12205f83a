"""Streaming per-tensor statistics for calibration: min/max and a mergeable histogram.

Every observer keeps a fixed amount of state whatever the number of samples fed, and two
observers fed two parts of the data merge (``merge(a, b)``) into exactly the state of one
observer fed all of it: min/max, counts and every histogram bin count are equal, not close.

Non-finite values (NaN, +Inf, -Inf) are counted separately and never enter min/max or the
histogram, so one overflowed activation cannot blow up a calibration range.

Histogram bin grid
------------------
Bins have width ``2**exponent`` and are anchored at 0: bin ``k`` (an integer, negative
below 0) covers ``[k * 2**exponent, (k + 1) * 2**exponent)``. The observer stores
``NUM_BINS`` counts for bins ``offset .. offset + NUM_BINS - 1`` with
``offset = floor(min / 2**exponent)``. The exponent is always the SMALLEST integer
``>= MIN_EXPONENT`` for which the bins from ``floor(min / w)`` to ``floor(max / w)`` fit in
``NUM_BINS`` and every bin index stays within +-2**52 (exact in float64). Because that
choice depends only on the overall min and max, and because a coarser power-of-two grid
nests exactly in a finer one (bin ``k`` at exponent ``e`` lies in bin ``k >> d`` at
``e + d``), growing the range re-bins by an integer factor ``2**d`` without any
approximation, and the state after any split of the data is the same.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from engine.errors import ModelError

NUM_BINS = 4096
"""Bins of a :class:`HistogramObserver`. The grid fills between half and all of them, and
folding to ``|x|`` halves that for data of both signs, so ``|x|`` gets 1024-4096 bins over
``[0, amax]``: at least half of TensorRT's 2048 (the entropy method coarsens to <= 2048)."""

MIN_EXPONENT = -160
"""Finest bin width is ``2**MIN_EXPONENT``: the width used for an all-zero tensor."""

_MAX_INDEX = float(2**52)

MAX_ABS_BINS = 1 << 20
"""Most bins :meth:`HistogramObserver.abs_histogram` returns (it coarsens beyond)."""


def _as_float64(x: np.ndarray | float) -> np.ndarray:
    """Flattened float64 view/copy (exact for every float16/32/64 and int up to 2**53)."""
    arr = np.asarray(x)
    if arr.dtype.kind not in "fiub":
        raise ModelError(f"observer fed a non-numeric array of dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False).reshape(-1)


@dataclass
class MinMaxObserver:
    """Running min/max of the finite values, with counts of finite and non-finite ones.

    ``min``/``max`` are ``+inf``/``-inf`` until a finite value has been seen.
    """

    count: int = 0
    nan_count: int = 0
    posinf_count: int = 0
    neginf_count: int = 0
    min: float = math.inf
    max: float = -math.inf

    @property
    def nonfinite_count(self) -> int:
        """NaN plus +-Inf values seen (excluded from every statistic)."""
        return self.nan_count + self.posinf_count + self.neginf_count

    @property
    def empty(self) -> bool:
        """True until at least one finite value was fed."""
        return self.count == 0

    def update(self, x: np.ndarray | float) -> np.ndarray:
        """Feed a batch; returns its finite values as a flat float64 array."""
        flat = _as_float64(x)
        finite = flat[np.isfinite(flat)]
        n_bad = flat.size - finite.size
        if n_bad:
            nan = int(np.count_nonzero(np.isnan(flat)))
            pos = int(np.count_nonzero(flat == np.inf))
            self.nan_count += nan
            self.posinf_count += pos
            self.neginf_count += n_bad - nan - pos
        if finite.size:
            self.count += int(finite.size)
            self.min = min(self.min, float(finite.min()))
            self.max = max(self.max, float(finite.max()))
        return finite

    def merge(self, other: "MinMaxObserver") -> "MinMaxObserver":
        """A new observer equal to one fed the data of ``self`` and ``other``."""
        return MinMaxObserver(
            count=self.count + other.count,
            nan_count=self.nan_count + other.nan_count,
            posinf_count=self.posinf_count + other.posinf_count,
            neginf_count=self.neginf_count + other.neginf_count,
            min=min(self.min, other.min),
            max=max(self.max, other.max),
        )

    def _copy_counts_from(self, other: "MinMaxObserver") -> None:
        self.count, self.nan_count = other.count, other.nan_count
        self.posinf_count, self.neginf_count = other.posinf_count, other.neginf_count
        self.min, self.max = other.min, other.max


def _fits(lo: float, hi: float, exponent: int, num_bins: int) -> bool:
    """True when [lo, hi] spans at most ``num_bins`` bins of width 2**exponent."""
    try:
        k_lo = math.floor(math.ldexp(lo, -exponent))
        k_hi = math.floor(math.ldexp(hi, -exponent))
    except OverflowError:  # the scaled value is beyond float range: far too fine a grid
        return False
    return k_hi - k_lo + 1 <= num_bins and max(abs(k_lo), abs(k_hi)) <= _MAX_INDEX


def fit_exponent(lo: float, hi: float, floor_exponent: int = MIN_EXPONENT, num_bins: int = NUM_BINS) -> int:
    """Smallest bin exponent ``>= floor_exponent`` whose grid covers [lo, hi] in ``num_bins`` bins.

    "Fits" is monotone in the exponent and in the range, so this is also the exponent an
    observer reaches by growing step by step, whatever the order of the data.
    """
    half_span = hi / 2 - lo / 2  # no overflow for |lo|, |hi| up to float max
    max_abs = max(abs(lo), abs(hi))
    start = floor_exponent
    if half_span > 0:
        start = max(start, math.floor(math.log2(half_span)) + 1 - math.ceil(math.log2(num_bins)) - 2)
    if max_abs > 0:
        start = max(start, math.floor(math.log2(max_abs)) - 54)
    exponent = start
    while not _fits(lo, hi, exponent, num_bins):
        exponent += 1
    return exponent


def _bin_index(values: np.ndarray, exponent: int) -> np.ndarray:
    """``floor(values / 2**exponent)`` as int64 (exact: power-of-two scaling)."""
    return np.floor(np.ldexp(values, -exponent)).astype(np.int64)


@dataclass
class HistogramObserver(MinMaxObserver):
    """Min/max plus a fixed-size, exactly mergeable histogram of the finite values.

    ``exponent`` is None until the first finite value; afterwards bin ``i`` of ``counts``
    covers ``[(offset + i) * width, (offset + i + 1) * width)`` with ``width = 2**exponent``.
    """

    num_bins: int = NUM_BINS
    exponent: int | None = None
    offset: int = 0
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def __post_init__(self) -> None:
        if self.num_bins < 2:
            raise ModelError(f"histogram needs at least 2 bins, got {self.num_bins}")
        if self.counts.size == 0:
            self.counts = np.zeros(self.num_bins, dtype=np.int64)

    @property
    def width(self) -> float:
        """Bin width in the tensor's units (1.0 before any data)."""
        return 1.0 if self.exponent is None else math.ldexp(1.0, self.exponent)

    def _rebinned(self, exponent: int, offset: int) -> np.ndarray:
        """This histogram's counts on the grid (exponent, offset); exponent >= self.exponent."""
        out = np.zeros(self.num_bins, dtype=np.int64)
        if self.exponent is None:
            return out
        occupied = np.flatnonzero(self.counts)
        if occupied.size == 0:
            return out
        shift = min(exponent - self.exponent, 63)
        new_index = ((occupied.astype(np.int64) + self.offset) >> shift) - offset
        counts = self.counts[occupied]
        if shift == 0:  # the same grid, moved: one bin each
            out[new_index] = counts
            return out
        # new_index is non-decreasing (a shift of ascending indices): sum each run of equal ones
        # (integer sums, exact; numpy's add.at took ~0.1 ms a histogram, ten times this)
        starts = np.flatnonzero(np.diff(new_index, prepend=new_index[0] - 1))
        out[new_index[starts]] = np.add.reduceat(counts, starts)
        return out

    def update(self, x: np.ndarray | float) -> np.ndarray:
        """Feed a batch (any shape); non-finite values are counted and skipped."""
        finite = super().update(x)
        if finite.size == 0:
            return finite
        floor_exp = MIN_EXPONENT if self.exponent is None else self.exponent
        exponent = fit_exponent(self.min, self.max, floor_exp, self.num_bins)
        offset = math.floor(math.ldexp(self.min, -exponent))
        if exponent != self.exponent or offset != self.offset:
            self.counts = self._rebinned(exponent, offset)
            self.exponent, self.offset = exponent, offset
        index = _bin_index(finite, exponent) - offset
        self.counts += np.bincount(index, minlength=self.num_bins)
        return finite

    def merge(self, other: "MinMaxObserver") -> "HistogramObserver":
        """A new observer equal (exactly) to one fed the data of ``self`` and ``other``."""
        if not isinstance(other, HistogramObserver) or other.num_bins != self.num_bins:
            raise ModelError("only histogram observers with the same bin count can be merged")
        result = HistogramObserver(num_bins=self.num_bins)
        result._copy_counts_from(MinMaxObserver.merge(self, other))
        if result.count == 0:
            return result
        floors = [o.exponent for o in (self, other) if o.exponent is not None]
        exponent = fit_exponent(result.min, result.max, max(floors), self.num_bins)
        offset = math.floor(math.ldexp(result.min, -exponent))
        result.exponent, result.offset = exponent, offset
        result.counts = self._rebinned(exponent, offset) + other._rebinned(exponent, offset)
        return result

    def histogram(self) -> tuple[np.ndarray, np.ndarray]:
        """(counts, edges) over the occupied bins: ``len(edges) == len(counts) + 1``."""
        if self.exponent is None:
            return np.zeros(0, dtype=np.int64), np.zeros(1)
        last = int(np.flatnonzero(self.counts)[-1]) + 1
        edges = np.ldexp((self.offset + np.arange(last + 1)).astype(np.float64), self.exponent)
        return self.counts[:last].copy(), edges

    def abs_histogram(self) -> tuple[np.ndarray, float]:
        """Histogram of |x|: (counts, width), bin ``j`` covers ``[j * width, (j + 1) * width)``.

        Exact fold of the signed histogram: the grid is anchored at 0, so bin ``k < 0``
        (values in ``[k w, (k + 1) w)``) holds magnitudes in bin ``-k - 1``.
        """
        if self.exponent is None:
            return np.zeros(0, dtype=np.int64), 1.0
        k = self.offset + np.arange(self.num_bins, dtype=np.int64)
        folded = np.where(k >= 0, k, -k - 1)
        # Data far from 0 on one side (a constant tensor: the grid is as fine as 2**-52 of
        # its value) would fold to ~2**52 bins from 0; coarsen by 2**shift so at most
        # MAX_ABS_BINS remain (bin j at exponent e lies in bin j >> shift at e + shift).
        occupied = np.flatnonzero(self.counts)
        top = int(folded[occupied].max()) + 1 if occupied.size else 0
        shift = max(0, (top - 1) // MAX_ABS_BINS).bit_length()
        counts = np.bincount(folded >> shift, weights=self.counts).astype(np.int64)
        last = int(np.flatnonzero(counts)[-1]) + 1 if counts.any() else 0
        return counts[:last], math.ldexp(1.0, self.exponent + shift)

    def equals(self, other: "HistogramObserver") -> bool:
        """Exact equality of the whole state (counts, min/max, grid)."""
        return (
            self.count == other.count
            and self.nan_count == other.nan_count
            and self.posinf_count == other.posinf_count
            and self.neginf_count == other.neginf_count
            and self.min == other.min
            and self.max == other.max
            and self.exponent == other.exponent
            and self.offset == other.offset
            and bool(np.array_equal(self.counts, other.counts))
        )


@dataclass
class PerChannelMinMaxObserver:
    """Min/max of the finite values per channel along ``axis`` (for weights).

    ``min``/``max`` have one entry per channel (``+inf``/``-inf`` for a channel with no
    finite value); ``nonfinite_count`` counts the excluded NaN/Inf values of all channels.
    """

    axis: int
    min: np.ndarray | None = None
    max: np.ndarray | None = None
    count: int = 0
    nonfinite_count: int = 0

    def update(self, x: np.ndarray) -> None:
        """Feed an array whose ``axis`` is the channel axis (same channel count every time)."""
        arr = np.asarray(x)
        if arr.ndim == 0:
            raise ModelError("per-channel observer needs an array with a channel axis")
        axis = self.axis % arr.ndim if -arr.ndim <= self.axis < arr.ndim else None
        if axis is None:
            raise ModelError(f"channel axis {self.axis} out of range for a rank-{arr.ndim} tensor")
        data = np.moveaxis(arr.astype(np.float64, copy=False), axis, 0).reshape(arr.shape[axis], -1)
        finite = np.isfinite(data)
        ch_min = np.where(finite, data, np.inf).min(axis=1, initial=np.inf)
        ch_max = np.where(finite, data, -np.inf).max(axis=1, initial=-np.inf)
        if self.min is not None and self.min.shape != ch_min.shape:
            raise ModelError(f"channel count changed from {self.min.size} to {ch_min.size}")
        self.min = ch_min if self.min is None else np.minimum(self.min, ch_min)
        self.max = ch_max if self.max is None else np.maximum(self.max, ch_max)
        n_finite = int(np.count_nonzero(finite))
        self.count += n_finite
        self.nonfinite_count += data.size - n_finite

    def merge(self, other: "PerChannelMinMaxObserver") -> "PerChannelMinMaxObserver":
        """A new observer equal to one fed the data of both."""
        if self.min is None:
            return PerChannelMinMaxObserver(other.axis, other.min, other.max, other.count, other.nonfinite_count)
        if other.min is None:
            return PerChannelMinMaxObserver(self.axis, self.min, self.max, self.count, self.nonfinite_count)
        if self.min.shape != other.min.shape:
            raise ModelError("cannot merge per-channel observers with different channel counts")
        return PerChannelMinMaxObserver(
            self.axis,
            np.minimum(self.min, other.min),
            np.maximum(self.max, other.max),
            self.count + other.count,
            self.nonfinite_count + other.nonfinite_count,
        )


Observer = MinMaxObserver | PerChannelMinMaxObserver


def merge(a: Observer, b: Observer) -> Observer:
    """Merge two observers of the same kind (see each class's ``merge``)."""
    if type(a) is not type(b):
        raise ModelError(f"cannot merge a {type(a).__name__} with a {type(b).__name__}")
    return a.merge(b)  # type: ignore[arg-type]
