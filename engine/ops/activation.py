"""Activation kernels: element-wise non-linearities.

Each keeps its input dtype; scalar attributes are cast to that dtype before use so a
float32 tensor never turns float64. Formulas avoid overflow (sigmoid and softplus are
written in their numerically stable forms).
"""

from __future__ import annotations

import math

import numpy as np

from engine.graph import Node
from engine.ops import OpKernel, register
from engine.ops.elementwise import as_array, erf, erfc_large


def _scalar(x: np.ndarray, value: float) -> np.generic:
    """``value`` as a scalar of ``x``'s dtype (float64 for non-float input)."""
    dtype = x.dtype if x.dtype.kind == "f" else np.dtype(np.float64)
    return dtype.type(value)


def sigmoid(x: np.ndarray) -> np.ndarray:
    """1 / (1 + exp(-x)) without overflow: exp is only taken of -|x|."""
    e = np.exp(-np.abs(x))
    s = 1 / (1 + e)
    return np.where(x >= 0, s, e * s)


def softplus(x: np.ndarray) -> np.ndarray:
    """log(1 + exp(x)) without overflow."""
    return np.logaddexp(np.zeros((), dtype=x.dtype), x)


@register
class Relu(OpKernel):
    """max(x, 0)."""

    op_type = "Relu"
    reuses = (0,)

    def _run(self, x: np.ndarray) -> np.ndarray:
        return as_array(np.maximum(x, np.zeros((), dtype=x.dtype)), x.dtype)

    def _run_reusing(self, reusable: tuple[int, ...], x: np.ndarray) -> np.ndarray:
        if not x.flags.writeable:
            return self._run(x)
        return np.maximum(x, np.zeros((), dtype=x.dtype), out=x)


@register
class LeakyRelu(OpKernel):
    """x for x >= 0, alpha * x below (alpha default 0.01)."""

    op_type = "LeakyRelu"

    def _run(self, x: np.ndarray) -> np.ndarray:
        alpha = _scalar(x, self.attr("alpha", 0.01))
        return as_array(np.where(x >= 0, x, alpha * x), x.dtype)


@register
class PRelu(OpKernel):
    """x for x >= 0, slope * x below; ``slope`` broadcasts to x."""

    op_type = "PRelu"

    def _run(self, x: np.ndarray, slope: np.ndarray) -> np.ndarray:
        return as_array(np.where(x >= 0, x, slope.astype(x.dtype, copy=False) * x), x.dtype)


@register
class Elu(OpKernel):
    """x for x >= 0, alpha * (exp(x) - 1) below (alpha default 1)."""

    op_type = "Elu"

    def _run(self, x: np.ndarray) -> np.ndarray:
        alpha = _scalar(x, self.attr("alpha", 1.0))
        return as_array(np.where(x >= 0, x, alpha * np.expm1(np.minimum(x, 0))), x.dtype)


@register
class Celu(OpKernel):
    """max(0, x) + min(0, alpha * (exp(x / alpha) - 1)) (alpha default 1)."""

    op_type = "Celu"

    def _run(self, x: np.ndarray) -> np.ndarray:
        alpha = _scalar(x, self.attr("alpha", 1.0))
        neg = alpha * np.expm1(np.minimum(x, 0) / alpha)
        return as_array(np.maximum(x, 0) + np.minimum(neg, 0), x.dtype)


@register
class Selu(OpKernel):
    """gamma * (x for x > 0, alpha * (exp(x) - 1) below), with the SELU constants as defaults."""

    op_type = "Selu"

    def _run(self, x: np.ndarray) -> np.ndarray:
        alpha = _scalar(x, self.attr("alpha", 1.67326319217681884765625))
        gamma = _scalar(x, self.attr("gamma", 1.05070102214813232421875))
        return as_array(gamma * np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0))), x.dtype)


@register
class Sigmoid(OpKernel):
    """1 / (1 + exp(-x))."""

    op_type = "Sigmoid"

    def _run(self, x: np.ndarray) -> np.ndarray:
        return as_array(sigmoid(x), x.dtype)


@register
class HardSigmoid(OpKernel):
    """max(0, min(1, alpha * x + beta)) (alpha 0.2, beta 0.5 by default)."""

    op_type = "HardSigmoid"

    def _run(self, x: np.ndarray) -> np.ndarray:
        alpha = _scalar(x, self.attr("alpha", 0.2))
        beta = _scalar(x, self.attr("beta", 0.5))
        return as_array(np.clip(alpha * x + beta, 0, 1), x.dtype)


@register
class HardSwish(OpKernel):
    """x * max(0, min(1, x / 6 + 1 / 2))."""

    op_type = "HardSwish"

    def _run(self, x: np.ndarray) -> np.ndarray:
        alpha = _scalar(x, 1.0 / 6.0)
        beta = _scalar(x, 0.5)
        return as_array(x * np.clip(alpha * x + beta, 0, 1), x.dtype)


@register
class Tanh(OpKernel):
    """Hyperbolic tangent."""

    op_type = "Tanh"

    def _run(self, x: np.ndarray) -> np.ndarray:
        return as_array(np.tanh(x), x.dtype)


@register
class Softplus(OpKernel):
    """log(1 + exp(x))."""

    op_type = "Softplus"

    def _run(self, x: np.ndarray) -> np.ndarray:
        return as_array(softplus(x), x.dtype)


@register
class Softsign(OpKernel):
    """x / (1 + |x|)."""

    op_type = "Softsign"

    def _run(self, x: np.ndarray) -> np.ndarray:
        return as_array(x / (1 + np.abs(x)), x.dtype)


@register
class Mish(OpKernel):
    """x * tanh(softplus(x))."""

    op_type = "Mish"

    def _run(self, x: np.ndarray) -> np.ndarray:
        return as_array(x * np.tanh(softplus(x)), x.dtype)


@register
class ThresholdedRelu(OpKernel):
    """x where x > alpha, else 0 (alpha default 1)."""

    op_type = "ThresholdedRelu"

    def _run(self, x: np.ndarray) -> np.ndarray:
        alpha = _scalar(x, self.attr("alpha", 1.0))
        return as_array(np.where(x > alpha, x, np.zeros((), dtype=x.dtype)), x.dtype)


@register
class Gelu(OpKernel):
    """0.5 x (1 + erf(x / sqrt 2)), or the tanh approximation when ``approximate="tanh"``.

    Computed in float32 for float16/float32 input (float64 for float64); the negative tail
    (x < -sqrt 2) uses erfc directly, so small outputs keep their relative accuracy.
    """

    op_type = "Gelu"

    @classmethod
    def unsupported_reason(cls, node: Node, opset: int) -> str | None:
        mode = node.attrs.get("approximate", "none")
        if mode not in ("none", "tanh"):
            return f"Gelu approximate={mode!r} (only 'none' and 'tanh' are defined)"
        return None

    def _run(self, x: np.ndarray) -> np.ndarray:
        work = np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)
        xw = x.astype(work, copy=False).reshape(-1)  # flat, C order (a view when x is contiguous)
        if self.attr("approximate", "none") == "tanh":
            inner = work.type(math.sqrt(2.0 / math.pi)) * (xw + work.type(0.044715) * xw * xw * xw)
            y = 0.5 * xw * (1.0 + np.tanh(inner))
        else:
            u = xw * work.type(1.0 / math.sqrt(2.0))
            y = 0.5 * xw * (1.0 + erf(u))
            # below u = -1, 1 + erf(u) cancels: take erfc(-u) directly (float64, on those elements only)
            tail = np.flatnonzero(u < -1)
            if tail.size:
                y[tail] = 0.5 * xw[tail] * erfc_large(-u[tail].astype(np.float64))
        return as_array(y.reshape(x.shape), x.dtype)


@register
class Swish(OpKernel):
    """x * sigmoid(alpha * x) (alpha default 1; SiLU when alpha is 1)."""

    op_type = "Swish"

    def _run(self, x: np.ndarray) -> np.ndarray:
        alpha = _scalar(x, self.attr("alpha", 1.0))
        return as_array(x * sigmoid(alpha * x), x.dtype)
