"""I-BERT integer-only kernels against float references.

Measured max abs errors (seeds 0-2, this implementation) and the tolerances asserted:

============================  ===========================  =========
case                          measured max abs error       asserted
============================  ===========================  =========
i-exp, S=1e-3, x in [-20, 0]  0.00213 (= the polynomial's)  0.0025
i-exp, S=1/16 (coarse)        0.039 (floor(b/S) offset)     0.05
Softmax, S=1e-3 (int32 in)    0.0044-0.0046                 0.006
Softmax, S=8/127 (int8 in)    0.0227-0.0232                 0.03
GELU, S=8/127 and S=1e-3      0.0182 (float i-GELU: 0.0182) 0.02
LayerNorm, int8 in            0.00050-0.00057               0.001
LayerNorm, int32 in (S=1e-4)  0.0014-0.0018                 0.003
LayerNorm + gamma/beta, int8  0.00067-0.00075               0.0015
============================  ===========================  =========
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from engine.errors import ModelError
from engine.quant.ibert import i_erf, i_exp, i_gelu, i_layernorm, i_softmax, i_sqrt

SEEDS = [0, 1, 2]


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf, otypes=[np.float64])(x)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _layernorm(x: np.ndarray) -> np.ndarray:
    return (x - x.mean(axis=-1, keepdims=True)) / x.std(axis=-1, keepdims=True)


@pytest.mark.parametrize("seed", SEEDS)
def test_i_exp(seed: int) -> None:
    rng = np.random.default_rng(seed)
    q = -rng.integers(0, 20_000, 100_000)
    q_out, s_out = i_exp(q, 1e-3)
    assert np.abs(q_out * s_out - np.exp(q * 1e-3)).max() <= 0.0025
    q = -rng.integers(0, 160, 10_000)
    q_out, s_out = i_exp(q, 1.0 / 16)
    assert np.abs(q_out * s_out - np.exp(q / 16)).max() <= 0.05
    with pytest.raises(ModelError):
        i_exp(np.array([1]), 1e-3)  # positive input
    with pytest.raises(ModelError):
        i_exp(np.array([-1]), 1.0)  # scale above ln2


@pytest.mark.parametrize("seed", SEEDS)
def test_i_softmax(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 3.0, (2000, 64))
    q = np.rint(x / 1e-3).astype(np.int32)
    q_out, s_out = i_softmax(q, 1e-3)
    assert s_out == 2.0**-8 and q_out.min() >= 0 and q_out.max() <= 255
    assert np.abs(q_out * s_out - _softmax(q * 1e-3)).max() <= 0.006
    # each output floors: a row sums to between 1 - 64 codes and 1
    sums = q_out.sum(axis=-1)
    assert np.all((sums <= 256) & (sums >= 256 - 64))
    s8 = 8.0 / 127
    q8 = np.clip(np.rint(x / s8), -127, 127).astype(np.int8)
    q_out, s_out = i_softmax(q8, s8)
    assert np.abs(q_out * s_out - _softmax(q8 * s8)).max() <= 0.03
    # axis argument: softmax over axis 0 of the transpose is the same thing
    q_t, _ = i_softmax(q8.T, s8, axis=0)
    assert np.array_equal(q_t.T, q_out)


@pytest.mark.parametrize("seed", SEEDS)
def test_i_gelu(seed: int) -> None:
    rng = np.random.default_rng(seed)
    for scale, bound in ((8.0 / 127, 127), (1e-3, 8000)):
        q = rng.integers(-bound, bound, 50_000, endpoint=True)
        q_out, s_out = i_gelu(q, scale)
        assert s_out > 0
        assert np.abs(q_out * s_out - _gelu(q * scale)).max() <= 0.02
    q8 = np.arange(-128, 128).astype(np.int8)
    q_out, _ = i_gelu(q8, 8.0 / 127)
    assert np.abs(q_out).max() < 2**31  # int8 inputs stay in an int32 datapath


def test_i_erf_sign_and_saturation() -> None:
    scale = 0.01
    q = np.array([-1000, -177, -1, 0, 1, 177, 1000])
    q_out, s_out = i_erf(q, scale)
    value = q_out * s_out
    assert value[3] == 0.0
    np.testing.assert_allclose(value, -value[::-1])  # odd function
    assert abs(value[-1] - 1.0) < 1e-3 and abs(value[0] + 1.0) < 1e-3  # clipped: exactly the "+1" term
    # the integer result follows the float polynomial (whose own error vs erf reaches 0.096
    # just above 0, harmless in GELU where it is multiplied by x); the floors of b/S and
    # c/(a S**2) shift it by about |2 a b| S = 0.01
    x = np.abs(q * scale)
    poly = np.sign(q) * (-0.2888 * (np.minimum(x, 1.769) - 1.769) ** 2 + 1.0)
    assert np.abs(value - poly).max() < 0.012
    assert np.abs(poly - _erf(q * scale)).max() < 0.1


def test_i_sqrt_exact() -> None:
    rng = np.random.default_rng(0)
    n = np.concatenate(
        [
            rng.integers(0, 2**62, 20_000),
            rng.integers(0, 1000, 2000),
            np.arange(1, 3000) ** 2,
            np.arange(1, 3000) ** 2 - 1,
            [0, 1, 2, 3, 2**62 - 1, 2**31],
        ]
    ).astype(np.int64)
    assert i_sqrt(n).tolist() == [math.isqrt(int(v)) for v in n]
    with pytest.raises(ModelError):
        i_sqrt(np.array([-4]))


@pytest.mark.parametrize("seed", SEEDS)
def test_i_layernorm(seed: int) -> None:
    rng = np.random.default_rng(seed)
    x = rng.normal(0.5, 2.0, (500, 768))
    s8 = 0.05
    q8 = np.clip(np.rint(x / s8), -127, 127).astype(np.int8)
    q_out, s_out = i_layernorm(q8, s8)
    assert s_out == pytest.approx(math.sqrt(768) / 2**30)
    assert np.abs(q_out).max() < 2**31
    assert np.abs(q_out * s_out - _layernorm(q8 * s8)).max() <= 0.001
    q32 = np.rint(x / 1e-4).astype(np.int32)
    q_out, s_out = i_layernorm(q32, 1e-4)
    assert np.abs(q_out * s_out - _layernorm(q32 * 1e-4)).max() <= 0.003
    gamma = rng.normal(1.0, 0.2, 768)
    beta = rng.normal(0.0, 0.5, 768)
    q_out, s_out = i_layernorm(q8, s8, gamma, beta)
    assert np.abs(q_out * s_out - (_layernorm(q8 * s8) * gamma + beta)).max() <= 0.0015
    # channel axis other than the last
    q_ax, _ = i_layernorm(np.moveaxis(q8, -1, 0), s8, axis=0)
    assert np.array_equal(np.moveaxis(q_ax, 0, -1), i_layernorm(q8, s8)[0])


@pytest.mark.parametrize("dtype", [np.int8, np.uint8, np.int16])
def test_i_layernorm_exact_float_gives_the_same_integers(dtype) -> None:
    """``exact_float``: the same integers as the int64 passes, in float64 where every product
    stays below 2**53, else int64 (wide 16-bit rows); every axis and affine choice."""
    rng = np.random.default_rng(4)
    info = np.iinfo(dtype)
    mid = 128 if dtype == np.uint8 else 0
    used_float = False
    for channels, spread in ((8, 1), (256, 60), (768, 127), (1024, 20000), (3000, 5)):
        q = np.clip(rng.integers(-spread, spread + 1, (17, channels)) + mid, info.min, info.max).astype(dtype)
        for gamma, beta in ((None, None), (rng.normal(1.0, 0.3, channels), rng.normal(0.0, 2.0, channels))):
            want, s_want = i_layernorm(q, 0.05, gamma, beta)
            got, s_got = i_layernorm(q, 0.05, gamma, beta, exact_float=True)
            assert s_got == s_want and got.dtype in (np.int64, np.float64)
            used_float |= got.dtype == np.float64
            assert np.array_equal(got, want.astype(got.dtype)) and np.array_equal(got.astype(np.int64), want)
            got_ax, _ = i_layernorm(np.moveaxis(q, -1, 0), 0.05, gamma, beta, axis=0, exact_float=True)
            assert np.array_equal(np.moveaxis(got_ax, 0, -1), got)
    assert used_float


def test_i_layernorm_constant_rows() -> None:
    q = np.zeros((3, 10), np.int8)
    q[1] = 5
    q_out, _ = i_layernorm(q, 0.1)
    assert np.all(q_out == 0)
    q_out, s_out = i_layernorm(q, 0.1, np.ones(10), np.full(10, 0.25))
    np.testing.assert_allclose(q_out * s_out, 0.25, atol=1e-9)
