"""Clipping ranges (lo, hi) from calibration observers: MinMax, Percentile, Entropy, MSE.

All methods read a :class:`~engine.quant.observers.HistogramObserver` (MinMax also a plain
:class:`~engine.quant.observers.MinMaxObserver`) and return ``(lo, hi)`` in the tensor's
units, ``lo <= hi``; they never widen the range past the observed min/max. Symmetric
schemes work on the histogram of ``|x|`` and return ``(-T, T)``. The range need not contain
0: :func:`engine.quant.qparams.qparams_from_range` extends it to 0.

Histogram values are assumed uniformly spread inside each bin (bins are at most about
``(max - min) / 2048`` wide, see the observer's grid).
"""

from __future__ import annotations

import math

import numpy as np

from engine.errors import ModelError
from engine.quant.observers import HistogramObserver, MinMaxObserver

METHODS = ("minmax", "percentile", "entropy", "mse")

_KL_EPS = 1e-4
"""Count given to empty bins before the KL divergence (as MXNet's ``_smooth_distribution``)."""

KL_MAX_BINS = 2048
"""The entropy method's |x| histogram is merged 2:1 until it has at most this many bins
(TensorRT uses 2048 over [0, amax]; here 1025-2048 when the observer has more)."""

KL_TIE = 1e-12
"""KL divergences within this of the smallest are ties (the first candidate wins): the
terms summed are ~log(count) while a flat histogram's KL differences can be ~1e-15, so
which of the tied thresholds an exact argmin picked would depend on summation order."""

_MAX_EDGES = 1024
"""Asymmetric MSE search: at most about this many candidate edges per side of 0."""

_BLOCK = 128
"""Candidate thresholds evaluated per vectorised block of the MSE search (bounds temporary memory)."""


def _check(observer: MinMaxObserver) -> None:
    if observer.count == 0:
        raise ModelError("no finite value was observed: cannot compute a quantization range")


def minmax_range(observer: MinMaxObserver, symmetric: bool = False) -> tuple[float, float]:
    """The observed min and max (symmetric: ``(-amax, amax)`` with ``amax = max|x|``)."""
    _check(observer)
    if symmetric:
        amax = max(abs(observer.min), abs(observer.max))
        return -amax, amax
    return float(observer.min), float(observer.max)


def _quantile(counts: np.ndarray, edges: np.ndarray, q: float) -> float:
    """Value below which a fraction ``q`` of the histogram mass lies (linear inside a bin)."""
    cum = np.concatenate(([0.0], np.cumsum(counts, dtype=np.float64)))
    target = q * cum[-1]
    j = int(np.searchsorted(cum, target, side="left"))
    if j == 0:
        return float(edges[0])
    j = min(j, counts.size)
    inside = (target - cum[j - 1]) / counts[j - 1] if counts[j - 1] else 1.0
    return float(edges[j - 1] + inside * (edges[j] - edges[j - 1]))


def percentile_range(
    observer: HistogramObserver, percentile: float = 99.99, symmetric: bool = False
) -> tuple[float, float]:
    """Clip the tails: the ``percentile``-th percentile of the data.

    Symmetric: ``T`` = the ``percentile``-th percentile of ``|x|``, range ``(-T, T)``.
    Asymmetric (two-sided): ``lo`` = the ``(100 - percentile)``-th and ``hi`` = the
    ``percentile``-th percentile of ``x``, so each tail loses ``100 - percentile`` percent.
    Interpolated linearly inside a bin, then clamped to the observed min/max.
    """
    _check(observer)
    if not 50.0 < percentile <= 100.0:
        raise ModelError(f"percentile must be in (50, 100], got {percentile}")
    q = percentile / 100.0
    if symmetric:
        counts, width = observer.abs_histogram()
        edges = np.arange(counts.size + 1) * width
        amax = max(abs(observer.min), abs(observer.max))
        t = min(_quantile(counts, edges, q), amax)
        return -t, t
    counts, edges = observer.histogram()
    lo = max(_quantile(counts, edges, 1.0 - q), observer.min)
    hi = min(_quantile(counts, edges, q), observer.max)
    return float(lo), float(max(hi, lo))


def _kl_divergences(hist: np.ndarray, candidates: np.ndarray, num_levels: int) -> np.ndarray:
    """KL(P || Q) for each candidate bin count ``i`` in ``candidates`` (all ``>= num_levels``).

    P = bins ``0 .. i-1`` of ``hist`` with the mass of all later bins added to bin ``i - 1``.
    Q = bins ``0 .. i-1`` (without that added mass) merged into ``num_levels`` chunks of
    ``i // num_levels`` bins (the last chunk takes the remainder), each chunk's total spread
    evenly over the chunk's bins that are non-zero in P; bins that are zero in P stay zero.
    Empty bins of P and Q then get ``_KL_EPS`` counts and both are normalised.

    Computed per chunk, not per bin: inside a chunk Q is constant on the non-zero bins of
    P, and zero bins contribute ``eps * log(eps / eps) = 0``, so with ``Zp``/``Zq`` the
    smoothed totals, ``KL = (sum P log P - sum_c mass_c log q_c) / Zp + log(Zq / Zp)``.
    Every chunk but the last depends on the chunk width ``i // num_levels`` alone, shared
    by ``num_levels`` consecutive candidates: their sums are taken once per width, and only
    the last chunk per candidate. Cost: O(widths x levels + candidates) via prefix sums.
    """
    h = hist.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        h_log_h = np.where(h > 0, h * np.log(np.where(h > 0, h, 1.0)), 0.0)
    cum = np.concatenate(([0.0], np.cumsum(h)))
    cum_nz = np.concatenate(([0], np.cumsum(hist != 0))).astype(np.float64)
    cum_hlh = np.concatenate(([0.0], np.cumsum(h_log_h)))
    total = cum[-1]
    i = np.asarray(candidates, dtype=np.int64)
    width = i // num_levels

    # chunks 0 .. levels-2 of each distinct width
    widths = np.unique(width)
    c_lo = np.arange(num_levels - 1)[None, :] * widths[:, None]
    c_hi = c_lo + widths[:, None]
    chunk_sum = cum[c_hi] - cum[c_lo]
    chunk_nz = cum_nz[c_hi] - cum_nz[c_lo]
    zeros = widths[:, None] - chunk_nz
    q_val = np.where(chunk_sum > 0, chunk_sum / np.maximum(chunk_nz, 1.0), _KL_EPS)
    head_zq = np.sum(np.where(chunk_sum > 0, chunk_sum, _KL_EPS * chunk_nz) + _KL_EPS * zeros, axis=1)
    head_zeros = zeros.sum(axis=1)
    head_plogq = np.sum(np.where(chunk_sum > 0, chunk_sum * np.log(q_val), 0.0), axis=1)
    k = np.searchsorted(widths, width)

    # the last chunk, [(levels - 1) * width, i), which also takes the clipped mass
    lo = (num_levels - 1) * width
    outliers = total - cum[i]
    h_last = h[i - 1]
    p_last = h_last + outliers
    extra = np.where((h_last == 0) & (outliers > 0), 1.0, 0.0)
    last_sum = cum[i] - cum[lo]
    last_nz = cum_nz[i] - cum_nz[lo] + extra
    last_mass = last_sum + outliers  # P mass, all on non-zero bins
    last_q = np.where(last_sum > 0, last_sum / np.maximum(last_nz, 1.0), _KL_EPS)
    last_zeros = (i - lo) - last_nz
    z_q = head_zq[k] + (np.where(last_sum > 0, last_sum, _KL_EPS * last_nz) + _KL_EPS * last_zeros)
    z_p = total + _KL_EPS * (head_zeros[k] + last_zeros)
    with np.errstate(divide="ignore", invalid="ignore"):
        last_term = np.where(p_last > 0, p_last * np.log(np.where(p_last > 0, p_last, 1.0)), 0.0)
        p_log_q = head_plogq[k] + np.where(last_mass > 0, last_mass * np.log(last_q), 0.0)
    p_log_p = cum_hlh[i - 1] + last_term
    return (p_log_p - p_log_q) / z_p + np.log(z_q) - np.log(z_p)


def kl_best(kl: np.ndarray) -> int:
    """Index of the smallest KL divergence; ties within :data:`KL_TIE` go to the first."""
    return int(np.flatnonzero(kl <= kl.min() + KL_TIE)[0])


def entropy_range(
    observer: HistogramObserver, num_levels: int = 128, symmetric: bool = True, flatten_zero_bin: bool = True
) -> tuple[float, float]:
    """TensorRT's entropy calibration: the threshold minimising KL(P || Q) on ``|x|``.

    Method (Migacz, "8-bit Inference with TensorRT", GTC 2017; MXNet's
    ``_get_optimal_threshold``): on the histogram of ``|x|`` with ``n`` bins of width
    ``w``, for every candidate ``i = num_levels .. n`` build the reference distribution P
    (bins ``< i``, the mass of bins ``>= i`` added to the last kept bin, i.e. clipped)
    and the candidate Q (the same bins quantized to ``num_levels`` levels and expanded
    back, see :func:`_kl_divergences`), smooth empty bins with a tiny count, and take the
    ``i`` with the smallest KL divergence; ``T = i * w``. ``num_levels`` is 128 for
    symmetric int8 (one sign's worth of codes). The observer's ``|x|`` histogram is first
    merged 2:1 down to at most ``KL_MAX_BINS`` bins, TensorRT's resolution. With
    ``flatten_zero_bin`` the first bin's count is replaced by the second's before the
    search, as NVIDIA's pytorch-quantization entropy calibrator does: the spike of exact
    zeros after ReLU (half of all values) otherwise dominates P and drives the threshold
    down to ~1 sigma.

    Returns ``(-T, T)`` when ``symmetric``, else the observed ``[min, max]`` clipped to
    ``[-T, T]``. With fewer histogram bins than levels there is nothing to clip: the
    result is the MinMax range.
    """
    _check(observer)
    if num_levels < 2:
        raise ModelError(f"entropy calibration needs at least 2 levels, got {num_levels}")
    counts, width = observer.abs_histogram()
    while counts.size > KL_MAX_BINS:  # exact 2:1 merges (the grid is anchored at 0)
        counts = np.add.reduceat(counts, np.arange(0, counts.size, 2))
        width *= 2.0
    if flatten_zero_bin and counts.size > 1:
        counts = counts.copy()
        counts[0] = counts[1]
    amax = max(abs(observer.min), abs(observer.max))
    n = counts.size
    if n <= num_levels:
        t = amax
    else:
        candidates = np.arange(num_levels, n + 1)
        kl = _kl_divergences(counts, candidates, num_levels)
        t = min(float(candidates[kl_best(kl)]) * width, amax)
    if symmetric:
        return -t, t
    return float(max(observer.min, -t)), float(min(observer.max, t))


class _BinMoments:
    """Prefix sums of a uniform-width histogram for O(1) expected-error queries at bin edges.

    Bin ``k`` covers ``[edges[k], edges[k + 1])`` and its values are taken as uniform over
    the bin: mean ``m_k`` (the centre), variance ``w**2 / 12``.
    """

    def __init__(self, counts: np.ndarray, edges: np.ndarray) -> None:
        c = counts.astype(np.float64)
        centre = (edges[:-1] + edges[1:]) / 2.0
        self.edges = edges
        self.total = float(c.sum())
        self.within = float((edges[1] - edges[0]) ** 2 / 12.0) if edges.size > 1 else 0.0
        self.n = np.concatenate(([0.0], np.cumsum(c)))
        self.s1 = np.concatenate(([0.0], np.cumsum(c * centre)))
        self.s2 = np.concatenate(([0.0], np.cumsum(c * centre * centre)))

    def clip_below(self, i: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(count, sum of (lo - x)**2) over bins ``< i``, with ``lo`` at or above their values."""
        n, s1, s2 = self.n[i], self.s1[i], self.s2[i]
        return n, s2 - 2.0 * lo * s1 + lo * lo * n + self.within * n

    def clip_above(self, j: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(count, sum of (x - hi)**2) over bins ``>= j``, with ``hi`` at or below their values."""
        n = self.n[-1] - self.n[j]
        s1 = self.s1[-1] - self.s1[j]
        s2 = self.s2[-1] - self.s2[j]
        return n, s2 - 2.0 * hi * s1 + hi * hi * n + self.within * n


def _expected_mse(
    moments: _BinMoments, i: np.ndarray, lo: np.ndarray, j: np.ndarray, hi: np.ndarray, steps: int
) -> np.ndarray:
    """Expected squared error per element for ranges ``[lo, hi]`` whose ends are bin edges.

    Bins below edge ``i`` are clipped to ``lo`` and bins from edge ``j`` up to ``hi``,
    each error integrated exactly under the uniform-within-bin model; the values kept
    get the rounding error of a uniform quantizer, variance ``s**2 / 12`` with
    ``s = (hi - lo) / steps``. Arrays broadcast against each other.
    """
    n_lo, e_lo = moments.clip_below(i, lo)
    n_hi, e_hi = moments.clip_above(j, hi)
    step = (hi - lo) / steps
    kept = moments.total - n_lo - n_hi
    return (e_lo + e_hi + kept * step * step / 12.0) / moments.total


def _thin(index: np.ndarray) -> np.ndarray:
    """Every k-th entry from the first (k a power of two, leaving <= ~_MAX_EDGES), plus the last."""
    stride = 1
    while index.size > stride * _MAX_EDGES:
        stride *= 2
    if stride == 1:
        return index
    return np.unique(np.concatenate((index[::stride], index[-1:])))


def mse_range(
    observer: HistogramObserver, qmin: int = -128, qmax: int = 127, symmetric: bool = True
) -> tuple[float, float]:
    """The range minimising the expected quantization + clipping MSE (from the histogram).

    Error model: see :func:`_expected_mse` (clipping error integrated exactly per bin,
    rounding error ``s**2 / 12`` for the values kept). Candidate ends are the histogram's
    bin edges (clamped to the observed min/max), searched exhaustively and vectorised:

    - symmetric: ``T`` over the edges of the ``|x|`` histogram; ``2 * ((qmax - qmin) // 2)``
      steps over ``[-T, T]`` (scale ``T / 127`` for int8), range ``(-T, T)``;
    - asymmetric: every pair (edge ``<= 0`` for ``lo``, edge ``>= 0`` for ``hi``) on the
      signed histogram (the grid is anchored at 0, so 0 is an edge), ``qmax - qmin`` steps;
      when a side has more than ``_MAX_EDGES`` edges, every 2nd/4th/... edge counted from
      0 (and the outermost one) is a candidate.
      Data of one sign keeps 0 as its near end (the quantizer's range always contains 0).
    """
    _check(observer)
    if qmax <= qmin:
        raise ModelError(f"qmax ({qmax}) must exceed qmin ({qmin})")
    if symmetric:
        counts, width = observer.abs_histogram()
        amax = max(abs(observer.min), abs(observer.max))
        if amax == 0.0:
            return 0.0, 0.0
        edges = np.arange(counts.size + 1) * width
        moments = _BinMoments(counts, edges)
        j = np.arange(1, counts.size + 1)
        t = np.minimum(edges[j], amax)
        steps = 2 * ((qmax - qmin) // 2)
        err = _expected_mse(moments, np.zeros(1, dtype=np.int64), -t, j, t, steps)
        best = float(t[int(np.argmin(err))])
        return -best, best
    lo_obs, hi_obs = float(observer.min), float(observer.max)
    if lo_obs == hi_obs:
        return lo_obs, hi_obs
    counts, edges = observer.histogram()
    moments = _BinMoments(counts, edges)
    index = np.arange(edges.size)
    lo_i = index[edges <= 0.0] if edges[0] <= 0.0 else np.zeros(1, dtype=np.int64)
    hi_j = index[edges >= 0.0] if edges[-1] >= 0.0 else np.full(1, edges.size - 1)
    lo_i = _thin(lo_i[::-1])  # thinned from the 0 edge outwards; returned ascending
    hi_j = _thin(hi_j)
    lo_v = np.clip(edges[lo_i], lo_obs, 0.0) if lo_obs < 0.0 else np.zeros(lo_i.size)
    hi_v = np.clip(edges[hi_j], 0.0, hi_obs) if hi_obs > 0.0 else np.zeros(hi_j.size)
    steps = qmax - qmin
    best = (math.inf, lo_obs, hi_obs)
    for start in range(0, lo_i.size, _BLOCK):
        i = lo_i[start : start + _BLOCK, None]
        lo = lo_v[start : start + _BLOCK, None]
        err = _expected_mse(moments, i, lo, hi_j[None, :], hi_v[None, :], steps)
        r, c = np.unravel_index(int(np.argmin(err)), err.shape)
        if err[r, c] < best[0]:
            best = (float(err[r, c]), float(lo[r, 0]), float(hi_v[c]))
    _, lo_best, hi_best = best
    return max(lo_best, lo_obs), max(min(hi_best, hi_obs), max(lo_best, lo_obs))


def compute_range(
    observer: MinMaxObserver,
    method: str,
    symmetric: bool,
    qmin: int,
    qmax: int,
    percentile: float = 99.99,
) -> tuple[float, float]:
    """Dispatch to one method by name (``METHODS``) for a scheme with codes ``[qmin, qmax]``.

    Entropy uses half the codes, ``(qmax - qmin + 2) // 2`` levels, on ``|x|`` (128 for
    int8 whether qmin is -128 or -127), or all ``qmax - qmin + 1`` levels for an asymmetric
    scheme on data of one sign (e.g. uint8 after ReLU), where every code lies on the data's
    side of 0.
    """
    if method == "minmax":
        return minmax_range(observer, symmetric)
    if not isinstance(observer, HistogramObserver):
        raise ModelError(f"the {method} method needs a histogram observer")
    if method == "percentile":
        return percentile_range(observer, percentile, symmetric)
    if method == "entropy":
        one_sided = observer.min >= 0.0 or observer.max <= 0.0
        levels = qmax - qmin + 1 if (one_sided and not symmetric) else (qmax - qmin + 2) // 2
        return entropy_range(observer, levels, symmetric)
    if method == "mse":
        return mse_range(observer, qmin, qmax, symmetric)
    raise ModelError(f"unknown calibration method {method!r}; expected one of {', '.join(METHODS)}")
