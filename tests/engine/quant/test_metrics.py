"""Error statistics on hand-computed examples; JSON safety."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from engine.errors import ModelError
from engine.quant.metrics import SQNR_CAP_DB, compare


def test_hand_computed_example() -> None:
    ref = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    test = np.array([1.0, 2.0, 3.0, 5.0], np.float32)
    st = compare(ref, test, bins=4)
    # error e = [0, 0, 0, 1]: sum ref^2 = 30, sum e^2 = 1
    assert st.n == 4 and st.n_nonfinite == 0
    assert st.sqnr_db == pytest.approx(10 * math.log10(30.0))
    assert st.mse == pytest.approx(0.25)
    assert st.max_abs_err == 1.0
    assert st.cosine == pytest.approx(34.0 / math.sqrt(30.0 * 39.0))
    assert st.err_mean == pytest.approx(0.25)
    assert st.err_std == pytest.approx(math.sqrt(0.1875))
    # m3 = 0.09375, m4 = 0.08203125 about the mean 0.25
    assert st.err_skew == pytest.approx(0.09375 / 0.1875**1.5)
    assert st.err_kurtosis == pytest.approx(0.08203125 / 0.1875**2 - 3.0)
    assert st.hist_edges.tolist() == [-1.0, -0.5, 0.0, 0.5, 1.0]
    assert st.hist_counts.tolist() == [0, 0, 3, 1]


def test_identical_tensors_and_json_cap() -> None:
    x = np.linspace(-1, 1, 11)
    st = compare(x, x.copy())
    assert st.sqnr_db == math.inf and st.mse == 0.0 and st.cosine == pytest.approx(1.0)
    assert math.isnan(st.err_skew)
    d = st.to_dict()
    assert d["sqnr_db"] == SQNR_CAP_DB and d["sqnr_capped"] is True
    assert d["err_skew"] is None and d["err_kurtosis"] is None
    json.dumps(d, allow_nan=False)


def test_zero_reference_and_nonfinite_pairs() -> None:
    st = compare(np.zeros(4), np.array([0.0, 1.0, 0.0, 0.0]))
    assert st.sqnr_db == -math.inf and math.isnan(st.cosine)
    d = st.to_dict()
    assert d["sqnr_db"] == -SQNR_CAP_DB and d["cosine"] is None
    json.dumps(d, allow_nan=False)
    both_zero = compare(np.zeros(3), np.zeros(3))
    assert both_zero.cosine == 1.0 and both_zero.sqnr_db == math.inf
    st = compare(np.array([1.0, np.nan, 2.0, 3.0]), np.array([1.0, 0.0, np.inf, 4.0]))
    assert st.n == 2 and st.n_nonfinite == 2
    assert st.mse == pytest.approx(0.5) and st.sqnr_db == pytest.approx(10 * math.log10(10.0))


def test_gaussian_error_moments() -> None:
    rng = np.random.default_rng(0)
    ref = rng.normal(size=400_000)
    test = ref + rng.normal(0.01, 0.1, ref.size)
    st = compare(ref, test, bins=32)
    assert st.sqnr_db == pytest.approx(20.0, abs=0.05)  # 10 log10(1 / 0.0101)
    assert st.err_mean == pytest.approx(0.01, abs=1e-3) and st.err_std == pytest.approx(0.1, rel=1e-2)
    assert abs(st.err_skew) < 0.02 and abs(st.err_kurtosis) < 0.05
    assert st.hist_counts.sum() == ref.size and st.hist_counts.size == 32
    # a uniform (rounding-like) error has excess kurtosis -1.2
    uni = compare(ref, ref + rng.uniform(-0.5, 0.5, ref.size))
    assert uni.err_kurtosis == pytest.approx(-1.2, abs=0.02)


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ModelError):
        compare(np.zeros(3), np.zeros(4))
