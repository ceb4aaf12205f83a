"""Error statistics between a float reference tensor and a quantized (test) tensor.

All statistics are computed in float64 over the element pairs where both values are finite
(``n``); pairs with a NaN/Inf on either side are counted in ``n_nonfinite`` and excluded.
The error is ``e = test - ref``.

- ``sqnr_db = 10 log10(sum ref**2 / sum e**2)``: signal-to-quantization-noise ratio, higher
  is better (int8 layers typically 30-45 dB; each bit of precision adds ~6 dB). No error
  gives ``+inf``; a zero reference with some error gives ``-inf``.
- ``cosine`` = ``<ref, test> / (|ref| |test|)``; 1.0 when both are all zero, NaN when only
  one is.
- ``mse``, ``max_abs_err``, and the error's ``err_mean``, ``err_std`` (population),
  ``err_skew`` and ``err_kurtosis`` (excess: 0 for a normal distribution; NaN when the
  error is constant, i.e. ``err_std <= 1e-12 * max_abs_err``), and a histogram of ``e`` with ``bins`` equal bins over
  ``[-max_abs_err, max_abs_err]`` (``[-1, 1]`` when there is no error).

JSON (``to_dict``): NaN becomes ``None`` and ``sqnr_db`` is clamped to
``[-SQNR_CAP_DB, SQNR_CAP_DB]`` so identical tensors report ``SQNR_CAP_DB`` (300 dB, beyond
the ~150 dB float32 rounding floor) and stay sortable/plottable; ``sqnr_capped`` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.errors import ModelError

SQNR_CAP_DB = 300.0
"""Largest |sqnr_db| written to JSON (identical tensors)."""

HIST_BINS = 64
"""Default number of error-histogram bins."""


def _json_float(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


@dataclass
class ErrorStats:
    """Comparison of a test tensor against a reference (see module doc for definitions)."""

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
    hist_counts: np.ndarray = field(repr=False)
    hist_edges: np.ndarray = field(repr=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict: no NaN/Inf (None instead; sqnr_db clamped to +-SQNR_CAP_DB)."""
        capped = math.isinf(self.sqnr_db) or abs(self.sqnr_db) > SQNR_CAP_DB
        sqnr = self.sqnr_db if math.isnan(self.sqnr_db) else max(-SQNR_CAP_DB, min(SQNR_CAP_DB, self.sqnr_db))
        return {
            "n": int(self.n),
            "n_nonfinite": int(self.n_nonfinite),
            "cosine": _json_float(self.cosine),
            "sqnr_db": _json_float(sqnr),
            "sqnr_capped": bool(capped),
            "mse": _json_float(self.mse),
            "max_abs_err": _json_float(self.max_abs_err),
            "err_mean": _json_float(self.err_mean),
            "err_std": _json_float(self.err_std),
            "err_skew": _json_float(self.err_skew),
            "err_kurtosis": _json_float(self.err_kurtosis),
            "hist_counts": [int(c) for c in self.hist_counts],
            "hist_edges": [float(e) for e in self.hist_edges],
        }


def compare(ref: np.ndarray, test: np.ndarray, bins: int = HIST_BINS) -> ErrorStats:
    """Error statistics of ``test`` against ``ref`` (same shape; any numeric dtypes)."""
    r = np.asarray(ref)
    t = np.asarray(test)
    if r.shape != t.shape:
        raise ModelError(f"cannot compare tensors of shapes {r.shape} and {t.shape}")
    if bins < 1:
        raise ModelError(f"error histogram needs at least one bin, got {bins}")
    r = r.astype(np.float64, copy=False).reshape(-1)
    t = t.astype(np.float64, copy=False).reshape(-1)
    ok = np.isfinite(r) & np.isfinite(t)
    n_bad = int(r.size - np.count_nonzero(ok))
    if n_bad:
        r, t = r[ok], t[ok]
    n = int(r.size)
    nan = math.nan
    if n == 0:
        return ErrorStats(0, n_bad, nan, nan, nan, nan, nan, nan, nan, nan, np.zeros(bins, np.int64), np.linspace(-1, 1, bins + 1))
    err = t - r
    signal = float(np.dot(r, r))
    noise = float(np.dot(err, err))
    test_energy = float(np.dot(t, t))
    if noise == 0.0:
        sqnr = math.inf
    elif signal == 0.0:
        sqnr = -math.inf
    else:
        sqnr = 10.0 * math.log10(signal / noise)
    if signal == 0.0 and test_energy == 0.0:
        cosine = 1.0
    elif signal == 0.0 or test_energy == 0.0:
        cosine = nan
    else:
        cosine = float(np.clip(np.dot(r, t) / (math.sqrt(signal) * math.sqrt(test_energy)), -1.0, 1.0))
    mean = float(err.mean())
    centred = err - mean
    m2 = float(np.dot(centred, centred)) / n
    std = math.sqrt(m2)
    max_abs = float(np.abs(err).max())
    if std > 1e-12 * max_abs:  # below that the spread is float64 rounding of a constant error
        c2 = centred * centred
        skew = float(np.dot(c2, centred)) / n / m2**1.5
        kurt = float(np.dot(c2, c2)) / n / (m2 * m2) - 3.0
    else:
        skew = kurt = nan
    half = max_abs if max_abs > 0.0 else 1.0
    counts, edges = np.histogram(err, bins=bins, range=(-half, half))
    return ErrorStats(n, n_bad, cosine, sqnr, noise / n, max_abs, mean, std, skew, kurt, counts.astype(np.int64), edges)
