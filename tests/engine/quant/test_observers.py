"""Observers: exact mergeability, non-finite handling, histogram grid invariants."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import ModelError
from engine.quant.observers import (
    NUM_BINS,
    HistogramObserver,
    MinMaxObserver,
    PerChannelMinMaxObserver,
    fit_exponent,
    merge,
)


def _feed(obs, chunks):
    for chunk in chunks:
        obs.update(chunk)
    return obs


@pytest.mark.parametrize("seed", range(6))
def test_histogram_merge_equals_single_pass_exactly(seed: int) -> None:
    rng = np.random.default_rng(seed)
    # halves with very different ranges, so the two observers end on different grids
    first = rng.laplace(scale=0.01, size=5000).astype(np.float32)
    second = np.concatenate([rng.normal(3.0, 2.0, 7000), rng.uniform(-50, 1, 30)])
    rng.shuffle(second)
    first[::997] = np.nan
    second[::1301] = np.inf
    second[5] = -np.inf
    a = _feed(HistogramObserver(), np.array_split(first, 3))
    b = _feed(HistogramObserver(), np.array_split(second, 5))
    whole = _feed(HistogramObserver(), np.array_split(np.concatenate([first.astype(np.float64), second]), 4))
    assert a.exponent != b.exponent  # the merge really re-bins
    merged = merge(a, b)
    assert merged.equals(whole)
    assert merge(b, a).equals(whole)
    assert merged.count == int(np.isfinite(np.concatenate([first, second])).sum())
    assert merged.counts.sum() == merged.count
    assert (merged.nan_count, merged.posinf_count, merged.neginf_count) == (whole.nan_count, whole.posinf_count, 1)


def test_histogram_counts_match_numpy_on_its_own_grid() -> None:
    rng = np.random.default_rng(7)
    x = rng.normal(size=20000)
    obs = _feed(HistogramObserver(), np.array_split(x, 10))
    counts, edges = obs.histogram()
    ref, _ = np.histogram(x, bins=edges)
    assert np.array_equal(counts, ref)
    # grid invariants: width is a power of two, anchored at 0, smallest that fits
    assert edges[0] <= x.min() and edges[-1] > x.max()
    assert obs.exponent == fit_exponent(float(x.min()), float(x.max()))
    assert np.floor(x.max() / obs.width * 2) - np.floor(x.min() / obs.width * 2) + 1 > NUM_BINS


def test_abs_histogram_is_exact_fold() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=5000)
    obs = HistogramObserver()
    obs.update(x)
    counts, width = obs.abs_histogram()
    ref, _ = np.histogram(np.abs(x), bins=np.arange(counts.size + 1) * width)
    # only values exactly on a bin edge (measure zero here) could fall differently
    assert np.array_equal(counts, ref)


def test_nonfinite_values_do_not_poison_ranges() -> None:
    obs = HistogramObserver()
    obs.update(np.array([np.nan, 1.0, -2.0, np.inf, -np.inf, np.nan], dtype=np.float32))
    assert (obs.min, obs.max, obs.count) == (-2.0, 1.0, 2)
    assert (obs.nan_count, obs.posinf_count, obs.neginf_count, obs.nonfinite_count) == (2, 1, 1, 4)
    assert obs.counts.sum() == 2
    only_bad = MinMaxObserver()
    only_bad.update(np.array([np.nan, np.inf]))
    assert only_bad.empty and only_bad.min == np.inf


def test_zero_and_constant_tensors_then_growth() -> None:
    obs = HistogramObserver()
    obs.update(np.zeros(10))
    assert obs.counts.sum() == 10 and obs.min == obs.max == 0.0
    obs.update(np.array([1e30, -3.0]))
    fresh = HistogramObserver()
    fresh.update(np.concatenate([np.zeros(10), [1e30, -3.0]]))
    assert obs.equals(fresh)


def test_minmax_observer_merge() -> None:
    a, b, whole = MinMaxObserver(), MinMaxObserver(), MinMaxObserver()
    x = np.random.default_rng(0).normal(size=1000)
    a.update(x[:300])
    b.update(x[300:])
    whole.update(x)
    assert merge(a, b) == whole
    with pytest.raises(ModelError):
        merge(a, HistogramObserver())


def test_per_channel_minmax() -> None:
    rng = np.random.default_rng(1)
    w = rng.normal(size=(8, 3, 3, 3)).astype(np.float32)
    w[2, 0, 0, 0] = np.nan
    obs = PerChannelMinMaxObserver(axis=0)
    obs.update(w)
    flat = w.reshape(8, -1)
    assert np.array_equal(obs.min, np.nanmin(flat, axis=1))
    assert np.array_equal(obs.max, np.nanmax(flat, axis=1))
    assert obs.nonfinite_count == 1
    a, b = PerChannelMinMaxObserver(axis=1), PerChannelMinMaxObserver(axis=1)
    m = rng.normal(size=(40, 6))
    a.update(m[:10])
    b.update(m[10:])
    merged = a.merge(b)
    assert np.array_equal(merged.min, m.min(axis=0)) and np.array_equal(merged.max, m.max(axis=0))
    with pytest.raises(ModelError):
        a.update(np.zeros((3, 5)))
