"""Reduction kernels: Reduce* over axes, ArgMax/ArgMin and TopK.

Axes come from the ``axes`` attribute (ReduceSum before opset 13, the others before 18) or
from the optional second input (later opsets); either way, no axes means "all axes" unless
``noop_with_empty_axes=1``, which reduces over no axis (the element-wise part still applies,
e.g. ReduceSumSquare squares). Reducing an empty set gives the identity of the reduction
(0 for sums, 1 for products, -inf / +inf for max / min, -inf for the log-sums).
float16 input is accumulated in float32; every result is returned in the input dtype.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from engine.errors import ModelError
from engine.ops import OpKernel, register
from engine.ops.elementwise import as_array


def _accumulator(dtype: np.dtype) -> np.dtype:
    """The dtype sums are computed in: float32 for float16, else the dtype itself."""
    return np.dtype(np.float32) if dtype == np.float16 else dtype


def _lowest(dtype: np.dtype) -> object:
    """The smallest value of ``dtype`` (the identity of max)."""
    if dtype.kind == "f":
        return -np.inf
    if dtype.kind == "b":
        return False
    return np.iinfo(dtype).min


def _highest(dtype: np.dtype) -> object:
    """The largest value of ``dtype`` (the identity of min)."""
    if dtype.kind == "f":
        return np.inf
    if dtype.kind == "b":
        return True
    return np.iinfo(dtype).max


class _Reduce(OpKernel):
    """Shared axis handling; subclasses implement ``reduce(x, axes, keepdims)``."""

    def _axes(self, x: np.ndarray, axes_input: np.ndarray | None) -> tuple[int, ...]:
        if axes_input is not None:
            axes = [int(a) for a in np.asarray(axes_input).reshape(-1)]
        else:
            axes = [int(a) for a in (self.attr("axes", None) or [])]
        if not axes:
            if int(self.attr("noop_with_empty_axes", 0)):
                return ()
            return tuple(range(x.ndim))
        rank = x.ndim
        normalized = []
        for a in axes:
            if not -rank <= a < max(rank, 1):
                raise ModelError(f"node {self.node.name} ({self.op_type}): axis {a} out of range for rank {rank}")
            normalized.append(a % rank if rank else 0)
        return tuple(sorted(set(normalized)))

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def _run(self, x: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
        x = np.asarray(x)
        keepdims = bool(int(self.attr("keepdims", 1)))
        reduced_axes = self._axes(x, axes) if x.ndim else ()
        with np.errstate(all="ignore"):
            result = self.reduce(x, reduced_axes, keepdims)
        return as_array(result, x.dtype)


@register
class ReduceSum(_Reduce):
    """Sum over axes."""

    op_type = "ReduceSum"

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        return np.sum(x, axis=axes, keepdims=keepdims, dtype=_accumulator(x.dtype))


@register
class ReduceMean(_Reduce):
    """Arithmetic mean over axes (NaN for an empty set)."""

    op_type = "ReduceMean"

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        acc = _accumulator(x.dtype) if x.dtype.kind == "f" else np.dtype(np.float64)
        return np.mean(x, axis=axes, keepdims=keepdims, dtype=acc)


@register
class ReduceMax(_Reduce):
    """Maximum over axes (the dtype's lowest value for an empty set: -inf, False, INT_MIN)."""

    op_type = "ReduceMax"

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        return np.max(x, axis=axes, keepdims=keepdims, initial=_lowest(x.dtype))


@register
class ReduceMin(_Reduce):
    """Minimum over axes (the dtype's highest value for an empty set: +inf, True, INT_MAX)."""

    op_type = "ReduceMin"

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        return np.min(x, axis=axes, keepdims=keepdims, initial=_highest(x.dtype))


@register
class ReduceProd(_Reduce):
    """Product over axes."""

    op_type = "ReduceProd"

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        return np.prod(x, axis=axes, keepdims=keepdims, dtype=_accumulator(x.dtype))


@register
class ReduceL1(_Reduce):
    """Sum of absolute values over axes."""

    op_type = "ReduceL1"

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        return np.sum(np.abs(x), axis=axes, keepdims=keepdims, dtype=_accumulator(x.dtype))


@register
class ReduceL2(_Reduce):
    """Euclidean norm over axes."""

    op_type = "ReduceL2"

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        acc = _accumulator(x.dtype) if x.dtype.kind == "f" else np.dtype(np.float64)
        xa = x.astype(acc, copy=False)
        return np.sqrt(np.sum(xa * xa, axis=axes, keepdims=keepdims))


@register
class ReduceSumSquare(_Reduce):
    """Sum of squares over axes."""

    op_type = "ReduceSumSquare"

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        xa = x.astype(_accumulator(x.dtype), copy=False)
        return np.sum(xa * xa, axis=axes, keepdims=keepdims)


@register
class ReduceLogSum(_Reduce):
    """log of the sum over axes (-inf for an empty set)."""

    op_type = "ReduceLogSum"

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        acc = _accumulator(x.dtype) if x.dtype.kind == "f" else np.dtype(np.float64)
        return np.log(np.sum(x, axis=axes, keepdims=keepdims, dtype=acc))


@register
class ReduceLogSumExp(_Reduce):
    """log(sum(exp(x))) over axes, shifted by the maximum so large inputs stay finite."""

    op_type = "ReduceLogSumExp"

    def reduce(self, x: np.ndarray, axes: tuple[int, ...], keepdims: bool) -> np.ndarray:
        acc = _accumulator(x.dtype) if x.dtype.kind == "f" else np.dtype(np.float64)
        xa = x.astype(acc, copy=False)
        peak = np.max(xa, axis=axes, keepdims=True, initial=-np.inf)
        shift = np.where(np.isfinite(peak), peak, 0).astype(acc)
        total = np.sum(np.exp(xa - shift), axis=axes, keepdims=True)
        result = np.log(total) + shift
        if not keepdims:
            result = np.squeeze(result, axis=axes)
        return result


# ------------------------------------------------------------------ index-returning reductions


class _ArgReduce(OpKernel):
    """ArgMax/ArgMin along ``axis`` (default 0) as int64; ties give the first index,
    or the last with ``select_last_index=1``."""

    pick: ClassVar[str] = "argmax"

    def _run(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        axis = int(self.attr("axis", 0))
        keepdims = bool(int(self.attr("keepdims", 1)))
        if not -x.ndim <= axis < x.ndim:
            raise ModelError(f"node {self.node.name} ({self.op_type}): axis {axis} out of range for rank {x.ndim}")
        axis %= x.ndim
        fn = np.argmax if self.pick == "argmax" else np.argmin
        if int(self.attr("select_last_index", 0)):
            flipped = np.flip(x, axis=axis)
            index = x.shape[axis] - 1 - fn(flipped, axis=axis, keepdims=keepdims)
        else:
            index = fn(x, axis=axis, keepdims=keepdims)
        return as_array(index, np.dtype(np.int64))


@register
class ArgMax(_ArgReduce):
    """Index of the maximum along an axis."""

    op_type = "ArgMax"
    pick = "argmax"


@register
class ArgMin(_ArgReduce):
    """Index of the minimum along an axis."""

    op_type = "ArgMin"
    pick = "argmin"


@register
class TopK(OpKernel):
    """The k largest (or smallest, ``largest=0``) values along ``axis`` and their int64 indices.

    Output is sorted (largest first, or smallest first); equal values keep the lower
    index first, as the ONNX spec requires. ``k`` is an attribute before opset 10 and a
    1-element int64 input after.
    """

    op_type = "TopK"

    def _run(self, x: np.ndarray, k: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        x = np.asarray(x)
        count = int(np.asarray(k).reshape(-1)[0]) if k is not None else int(self.attr("k"))
        axis = int(self.attr("axis", -1))
        if not -x.ndim <= axis < x.ndim:
            raise ModelError(f"node {self.node.name} (TopK): axis {axis} out of range for rank {x.ndim}")
        axis %= x.ndim
        n = x.shape[axis]
        if not 0 <= count <= n:
            raise ModelError(f"node {self.node.name} (TopK): k={count} is outside 0..{n} for axis {axis}")
        if int(self.attr("largest", 1)):
            # a stable ascending sort of the reversed axis, read backwards, is descending with
            # the lower original index first among equal values
            order = np.argsort(np.flip(x, axis=axis), axis=axis, kind="stable")
            order = np.flip(order, axis=axis)
            indices = (n - 1) - np.take(order, np.arange(count), axis=axis)
        else:
            order = np.argsort(x, axis=axis, kind="stable")
            indices = np.take(order, np.arange(count), axis=axis)
        values = np.take_along_axis(x, indices, axis=axis)
        return as_array(values, x.dtype), as_array(indices, np.dtype(np.int64))
