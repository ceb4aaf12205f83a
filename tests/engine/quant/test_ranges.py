"""Clipping-range methods on known distributions, and the KL search against a direct reference."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import ModelError
from engine.quant.observers import HistogramObserver, MinMaxObserver
from engine.quant.ranges import (
    KL_TIE,
    _kl_divergences,
    compute_range,
    entropy_range,
    kl_best,
    minmax_range,
    mse_range,
    percentile_range,
)


def _observer(x: np.ndarray) -> HistogramObserver:
    obs = HistogramObserver()
    for chunk in np.array_split(x, 4):
        obs.update(chunk)
    return obs


@pytest.fixture(scope="module")
def laplace_outliers() -> tuple[np.ndarray, HistogramObserver]:
    rng = np.random.default_rng(0)
    x = rng.laplace(scale=1.0, size=400_000)
    # two far outliers: few enough that clipping them costs less MSE than the resolution
    # they take (clip ~(30**2 + 28**2) / 4e5 = 0.004 vs noise (40 / 127)**2 / 12 = 0.008)
    x[:2] = [40.0, -38.0]
    return x, _observer(x)


def test_minmax_equals_extremes(laplace_outliers) -> None:
    x, obs = laplace_outliers
    assert minmax_range(obs) == (x.min(), x.max())
    assert minmax_range(obs, symmetric=True) == (-40.0, 40.0)
    mm = MinMaxObserver()
    mm.update(x)
    assert compute_range(mm, "minmax", False, -128, 127) == (x.min(), x.max())


@pytest.mark.parametrize("method", ["percentile", "entropy", "mse"])
@pytest.mark.parametrize("symmetric", [True, False])
def test_clipping_methods_clip_outliers(laplace_outliers, method: str, symmetric: bool) -> None:
    _, obs = laplace_outliers
    qmin, qmax = (-127, 127) if symmetric else (-128, 127)
    lo, hi = compute_range(obs, method, symmetric, qmin, qmax, percentile=99.99)
    # the bulk of a unit Laplace sits within +-13 (P(|x| > 13) = 2e-6); outliers at -38, 40
    assert 5.0 < hi < 30.0 and -30.0 < lo < -5.0
    if symmetric:
        assert lo == -hi


def test_percentile_on_uniform() -> None:
    x = np.random.default_rng(1).uniform(-1.0, 3.0, 1_000_000)
    lo, hi = percentile_range(_observer(x), 99.0)
    # 1 % in each tail: -1 + 0.04 and 3 - 0.04; sampling sd of a quantile here ~4e-4
    assert lo == pytest.approx(-0.96, abs=3e-3) and hi == pytest.approx(2.96, abs=3e-3)
    t = percentile_range(_observer(x), 99.0, symmetric=True)[1]
    # |x| > t with prob. 1 %: P(|x|>t) = (3 - t) / 4 for t > 1
    assert t == pytest.approx(2.96, abs=3e-3)
    assert percentile_range(_observer(x), 100.0) == (x.min(), x.max())


def _laplace_mse(alpha: np.ndarray, b: float, steps: int) -> np.ndarray:
    """Closed-form expected MSE of clipping Laplace(0, b) to +-alpha with `steps` uniform steps."""
    clip = 2.0 * b * b * np.exp(-alpha / b)
    noise = (2.0 * alpha / steps) ** 2 / 12.0 * (1.0 - np.exp(-alpha / b))
    return clip + noise


def test_mse_symmetric_matches_laplace_optimum() -> None:
    b = 0.5
    x = np.random.default_rng(2).laplace(scale=b, size=2_000_000)
    t = mse_range(_observer(x), -127, 127, symmetric=True)[1]
    grid = np.linspace(0.5, 15.0, 100_001)
    alpha = grid[np.argmin(_laplace_mse(grid, b, 254))]  # ~9.9 b for 8 bits (Banner et al., ACIQ)
    assert alpha / b == pytest.approx(9.9, abs=0.1)
    # the objective is flat near the optimum; the sample's tail is noisy: 4 %
    assert t == pytest.approx(alpha, rel=0.04)


def test_mse_asymmetric_prefers_range_with_lower_real_error() -> None:
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.exponential(1.0, 75_000), -rng.exponential(0.05, 25_000)])
    lo, hi = mse_range(_observer(x), 0, 255, symmetric=False)
    assert x.min() <= lo < 0.0 < hi < x.max()

    def real_mse(lo: float, hi: float) -> float:
        scale = (hi - lo) / 255
        zp = np.round(-lo / scale)
        q = np.clip(np.round(x / scale) + zp, 0, 255)
        return float(np.mean(((q - zp) * scale - x) ** 2))

    # the histogram estimate picks a range whose real fake-quant MSE clearly beats MinMax
    # and is no worse than a brute-force search over 24 x 24 ranges (within 2 %)
    best_grid = min(
        real_mse(a, b) for a in np.linspace(x.min(), 0.0, 24, endpoint=False) for b in np.linspace(1.0, x.max(), 24)
    )
    assert real_mse(lo, hi) < 0.9 * real_mse(x.min(), x.max())
    assert real_mse(lo, hi) <= 1.02 * best_grid


def _kl_reference(hist: np.ndarray, i: int, levels: int, eps: float = 1e-4) -> float:
    """Per-bin transcription of the TensorRT/MXNet procedure, one candidate at a time."""
    h = hist.astype(np.float64)
    p = h[:i].copy()
    p[i - 1] += h[i:].sum()
    nonzero = p != 0
    width = i // levels
    q = np.zeros(i)
    for c in range(levels):
        a, e = c * width, (i if c == levels - 1 else (c + 1) * width)
        k = nonzero[a:e].sum()
        if k:
            q[a:e] = np.where(nonzero[a:e], h[a:e].sum() / k, 0.0)
    p = np.where(p == 0, eps, p)
    q = np.where(q == 0, eps, q)
    p /= p.sum()
    q /= q.sum()
    return float(np.sum(p * np.log(p / q)))


def test_kl_matches_direct_reference() -> None:
    rng = np.random.default_rng(5)
    hist = rng.poisson(4.0, 900) * (rng.random(900) < 0.6)  # many empty bins
    hist[-50:] = 0
    hist[-1] = 3  # a lone outlier bin
    hist[899 - 60] = 0
    candidates = np.arange(128, 901)
    fast = _kl_divergences(hist, candidates, 128)
    ref = np.array([_kl_reference(hist, int(i), 128) for i in candidates])
    np.testing.assert_allclose(fast, ref, rtol=1e-9, atol=1e-12)
    assert int(np.argmin(fast)) == int(np.argmin(ref))


def test_kl_ties_go_to_the_first_candidate() -> None:
    """A head narrower than the levels (every candidate up to 2 x levels keeps each head bin
    in its own chunk: Q = P there) and one outlier: KL is the same for 128 candidates up to
    rounding (~1e-15), where an exact argmin picks one by summation order. The threshold
    is the first candidate within KL_TIE of the smallest."""
    rng = np.random.default_rng(0)
    counts = np.zeros(600, dtype=np.int64)
    counts[:40] = rng.integers(0, 10**6, 40)
    counts[-1] = 5
    candidates = np.arange(128, counts.size + 1)
    kl = _kl_divergences(counts, candidates, 128)
    tied = np.flatnonzero(kl <= kl.min() + KL_TIE)
    assert tied.size == 128 and int(np.argmin(kl)) != tied[0]  # a real tie an argmin resolves by chance
    ref = np.array([_kl_reference(counts, int(i), 128) for i in candidates[tied]])
    assert np.ptp(ref) < 1e-12  # equal in the per-bin reference too
    assert kl_best(kl) == tied[0] == 0


def test_entropy_on_gaussian_and_small_histograms() -> None:
    x = np.random.default_rng(6).normal(size=500_000)
    obs = _observer(x)
    lo, hi = entropy_range(obs, 128)
    # KL calibration of a Gaussian lands well inside the max (~5 sigma) but keeps the bulk
    assert 2.5 < hi < np.abs(x).max() and lo == -hi
    lo_a, hi_a = entropy_range(obs, 128, symmetric=False)
    assert lo_a == max(x.min(), -hi) and hi_a == min(x.max(), hi)
    # fewer occupied bins than levels: nothing to clip
    few = _observer(np.array([0.0, 1.0, 2.0, 3.0]))
    assert entropy_range(few, 128) == (-3.0, 3.0)


def test_empty_observer_and_unknown_method_raise() -> None:
    with pytest.raises(ModelError):
        minmax_range(HistogramObserver())
    obs = _observer(np.arange(10.0))
    with pytest.raises(ModelError):
        compute_range(obs, "kl", True, -127, 127)
    with pytest.raises(ModelError):
        compute_range(MinMaxObserver(count=1, min=0.0, max=1.0), "entropy", True, -127, 127)


def test_entropy_zero_spike_after_relu() -> None:
    x = np.maximum(np.random.default_rng(8).normal(size=1_000_000), 0.0)  # half exact zeros
    obs = _observer(x)
    _, t = entropy_range(obs, 128)
    # with the first bin flattened (pytorch-quantization) the threshold keeps the bulk
    assert 3.0 < t <= x.max()
    _, t_raw = entropy_range(obs, 128, flatten_zero_bin=False)
    # without it, the zero spike drags the threshold down to about 1.5 sigma
    assert t_raw < 2.0
    # uint8 after ReLU: all 256 codes on the positive side
    lo, hi = compute_range(obs, "entropy", False, 0, 255)
    assert lo == 0.0 and 3.0 < hi <= x.max()
