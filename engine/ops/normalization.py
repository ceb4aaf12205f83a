"""Normalization kernels: BatchNormalization, LayerNormalization, InstanceNormalization,
MeanVarianceNormalization, LpNormalization, and the softmax family.

Layout is NCHW (channel axis 1) for the batch/instance norms. Statistics are computed in
float32 (float64 for float64 input); outputs keep the input dtype. Softmax, LogSoftmax and
Hardmax follow the opset: before 13 the input is coerced to 2-D at ``axis`` (default 1)
and normalized over the whole trailing block; from 13 on only the single ``axis``
(default -1) is normalized.
"""

from __future__ import annotations

import numpy as np

from engine.errors import ModelError
from engine.graph import Node
from engine.ops import OpKernel, register
from engine.ops.elementwise import as_array, broadcasts_into


def _stat_dtype(dtype: np.dtype) -> np.dtype:
    """Precision statistics are computed in: float64 for float64 input, else float32."""
    return np.dtype(np.float64) if dtype == np.float64 else np.dtype(np.float32)


def _channel_shape(param: np.ndarray, x_ndim: int) -> tuple[int, ...]:
    """Shape that broadcasts a per-channel parameter (C,) — or (C, D1, ...) — against NCHW input."""
    if param.ndim <= 1:
        return (1, param.size) + (1,) * max(x_ndim - 2, 0)
    return (1,) + tuple(param.shape)


def _normalize_axis(axis: int, rank: int, node: Node, op: str) -> int:
    if not -rank <= axis < max(rank, 1):
        raise ModelError(f"node {node.name} ({op}): axis {axis} out of range for rank {rank}")
    return axis % rank if rank else 0


def row_sums(x2: np.ndarray) -> np.ndarray:
    """Sum of every row of a C-contiguous 2-D float array as one BLAS matrix-vector product
    (shape (rows, 1)); numpy's own reduction along a short contiguous axis costs ~5x more.
    Summation order differs from numpy's pairwise sum only in float rounding."""
    return np.matmul(x2, np.ones((x2.shape[1], 1), dtype=x2.dtype))


def row_max(x: np.ndarray, axis: int) -> np.ndarray:
    """Maximum along ``axis`` with the axis kept (size 1), identical to ``np.max`` (NaN
    propagates: argmax returns a NaN's position). Along the last axis of a C-contiguous
    array it is the values at ``argmax``, gathered by flat index: ~3x faster than ``max``
    along a short contiguous axis."""
    if axis != x.ndim - 1 or not x.flags.c_contiguous or x.size == 0:
        return np.max(x, axis=axis, keepdims=True)
    width = x.shape[-1]
    index = np.argmax(x, axis=axis).reshape(-1)
    index += np.arange(0, index.size * width, width, dtype=index.dtype)
    return np.take(x.reshape(-1), index).reshape(x.shape[:-1] + (1,))


# ------------------------------------------------------------------ batch / instance / layer norm


@register
class BatchNormalization(OpKernel):
    """y = scale * (x - mean) / sqrt(var + epsilon) + bias, per channel (axis 1).

    Inference mode folds the parameters into one per-channel multiply-add (computed in
    float64, applied in the input dtype; the fold is cached for the same parameter arrays,
    which the executor passes run after run, and in place over a dead input). With ``training_mode=1`` (opset 14+) the batch
    statistics normalize the input and the updated running mean and variance
    (``momentum`` weighted) are the second and third outputs.
    """

    op_type = "BatchNormalization"
    reuses = (0,)

    def __init__(self, node: Node, opset: int) -> None:
        super().__init__(node, opset)
        # (scale, bias, mean, var, dtype) -> folded (factor, offset): parameters are the same
        # weight arrays run after run, so the fold is computed once per set of arrays
        self._folded: tuple[tuple[object, ...], np.ndarray, np.ndarray] | None = None

    @classmethod
    def unsupported_reason(cls, node: Node, opset: int) -> str | None:
        extra_outputs = [o for o in node.outputs[1:] if o]
        if opset < 14 and extra_outputs:
            return "BatchNormalization in training mode (before opset 14: outputs beyond Y)"
        return None

    def _run(
        self, x: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray
    ) -> np.ndarray | tuple[np.ndarray, ...]:
        return self._run_reusing((), x, scale, bias, mean, var)

    def _run_reusing(
        self, reusable: tuple[int, ...], x: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray,
        var: np.ndarray,
    ) -> np.ndarray | tuple[np.ndarray, ...]:
        epsilon = float(self.attr("epsilon", 1e-5))
        if self.opset >= 14 and int(self.attr("training_mode", 0)):
            return self._training(x, scale, bias, mean, var, epsilon)
        dtype = x.dtype
        factor, offset = self._fold(scale, bias, mean, var, epsilon, dtype, x.ndim)
        if not (dtype.kind == "f" and broadcasts_into(factor, x)):
            return as_array(x * factor + offset, dtype)
        y = np.multiply(x, factor, out=x if 0 in reusable and x.flags.writeable else None)
        y += offset
        return y

    def _fold(
        self, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray, epsilon: float,
        dtype: np.dtype, ndim: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel (factor, offset) in ``dtype``, shaped to broadcast against NCHW input:
        factor = scale / sqrt(var + epsilon), offset = bias - mean * factor (folded in float64)."""
        key = (scale, bias, mean, var, dtype, ndim, epsilon)
        cached = self._folded
        if cached is not None and all(a is b if isinstance(b, np.ndarray) else a == b for a, b in zip(cached[0], key)):
            return cached[1], cached[2]
        shape = _channel_shape(np.asarray(scale), ndim)
        factor64 = np.asarray(scale, np.float64) / np.sqrt(np.asarray(var, np.float64) + epsilon)
        offset64 = np.asarray(bias, np.float64) - np.asarray(mean, np.float64) * factor64
        factor = factor64.astype(dtype).reshape(shape)
        offset = offset64.astype(dtype).reshape(shape)
        self._folded = (key, factor, offset)
        return factor, offset

    def _training(
        self, x: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray, epsilon: float
    ) -> tuple[np.ndarray, ...]:
        momentum = float(self.attr("momentum", 0.9))
        axes = (0,) + tuple(range(2, x.ndim))
        stat = _stat_dtype(x.dtype)
        xs = x.astype(stat, copy=False)
        batch_mean = xs.mean(axis=axes)
        batch_var = xs.var(axis=axes)
        shape = _channel_shape(batch_mean, x.ndim)
        y = (xs - batch_mean.reshape(shape)) / np.sqrt(batch_var.reshape(shape) + epsilon)
        y = y * np.asarray(scale, stat).reshape(shape) + np.asarray(bias, stat).reshape(shape)
        running_mean = np.asarray(mean, stat) * momentum + batch_mean * (1 - momentum)
        running_var = np.asarray(var, stat) * momentum + batch_var * (1 - momentum)
        return (
            as_array(y, x.dtype),
            as_array(running_mean, np.asarray(mean).dtype),
            as_array(running_var, np.asarray(var).dtype),
        )


@register
class InstanceNormalization(OpKernel):
    """Per sample and channel: normalize over the spatial axes (2..), then scale and bias per channel."""

    op_type = "InstanceNormalization"

    def _run(self, x: np.ndarray, scale: np.ndarray, bias: np.ndarray) -> np.ndarray:
        epsilon = float(self.attr("epsilon", 1e-5))
        stat = _stat_dtype(x.dtype)
        xs = x.astype(stat, copy=False)
        axes = tuple(range(2, x.ndim))
        mean = xs.mean(axis=axes, keepdims=True)
        centered = xs - mean
        var = np.mean(centered * centered, axis=axes, keepdims=True)
        shape = _channel_shape(np.asarray(scale), x.ndim)
        y = centered / np.sqrt(var + epsilon) * np.asarray(scale, stat).reshape(shape)
        y = y + np.asarray(bias, stat).reshape(shape)
        return as_array(y, x.dtype)


@register
class LayerNormalization(OpKernel):
    """Normalize over the axes from ``axis`` (default -1) to the last, then ``* scale + bias``.

    Optional outputs: Mean and InvStdDev, shaped like the input with the normalized axes
    kept as size 1; they are float32 (the stash type) or float64 for float64 input.
    """

    op_type = "LayerNormalization"
    reuses = (0,)

    def _run(
        self, x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None = None
    ) -> tuple[np.ndarray, ...]:
        return self._run_reusing((), x, scale, bias)

    def _run_reusing(
        self, reusable: tuple[int, ...], x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None = None
    ) -> tuple[np.ndarray, ...]:
        """Rows of the input viewed as (prod(shape[:axis]), prod(shape[axis:])): mean from BLAS
        row sums, centre (into the dead input when offered), variance as one dot product per
        row, then scale by 1/std, ``scale`` and add ``bias`` in place (statistics in float32,
        float64 for float64 input, as before; only the summation order changed)."""
        epsilon = float(self.attr("epsilon", 1e-5))
        axis = _normalize_axis(int(self.attr("axis", -1)), x.ndim, self.node, self.op_type)
        stat = _stat_dtype(x.dtype)
        scale = np.asarray(scale).astype(stat, copy=False)
        bias = None if bias is None else np.asarray(bias).astype(stat, copy=False)
        if x.ndim == 0 or x.size == 0 or not broadcasts_into(scale, x) or (bias is not None and not broadcasts_into(bias, x)):
            return self._general(x, scale, bias, axis, epsilon, stat)
        rows = int(np.prod(x.shape[:axis], dtype=np.int64))
        xs = x.astype(stat, copy=False)
        x2 = np.ascontiguousarray(xs).reshape(rows, -1)  # a view when contiguous
        width = stat.type(x2.shape[1])
        mean = row_sums(x2)
        mean /= width
        # write the centred values over the input only when it is dead (or x2 is already a copy)
        in_place = (0 in reusable and x2.flags.writeable) or not np.may_share_memory(x2, x)
        centered = np.subtract(x2, mean, out=x2 if in_place else None)
        var = np.einsum("ij,ij->i", centered, centered).reshape(rows, 1)
        var /= width
        inv_std = 1.0 / np.sqrt(var + stat.type(epsilon))
        centered *= inv_std
        y = centered.reshape(x.shape)
        if y.base is x:  # written through a view of the dead input: hand out the input itself
            y = x
        y *= scale
        if bias is not None:
            y += bias
        outputs = [as_array(y, x.dtype)]
        n_out = len(self.node.outputs)
        stats_shape = x.shape[:axis] + (1,) * (x.ndim - axis)
        if n_out > 1:
            outputs.append(as_array(mean.reshape(stats_shape), stat))
        if n_out > 2:
            outputs.append(as_array(inv_std.reshape(stats_shape), stat))
        return tuple(outputs)

    def _general(
        self, x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None, axis: int, epsilon: float, stat: np.dtype
    ) -> tuple[np.ndarray, ...]:
        """Any shape (scalars, empty tensors, parameters that broadcast the output larger)."""
        xs = x.astype(stat, copy=False)
        axes = tuple(range(axis, x.ndim))
        mean = xs.mean(axis=axes, keepdims=True)
        centered = xs - mean
        var = np.mean(centered * centered, axis=axes, keepdims=True)
        inv_std = 1.0 / np.sqrt(var + stat.type(epsilon))
        y = centered * inv_std * scale
        if bias is not None:
            y = y + bias
        outputs = [as_array(y, x.dtype)]
        n_out = len(self.node.outputs)
        if n_out > 1:
            outputs.append(as_array(mean, stat))
        if n_out > 2:
            outputs.append(as_array(inv_std, stat))
        return tuple(outputs)


@register
class MeanVarianceNormalization(OpKernel):
    """(x - mean) / (std + 1e-9) over ``axes`` (default [0, 2, 3]), std the population one."""

    op_type = "MeanVarianceNormalization"

    def _run(self, x: np.ndarray) -> np.ndarray:
        axes = tuple(int(a) for a in self.attr("axes", [0, 2, 3]))
        stat = _stat_dtype(x.dtype)
        xs = x.astype(stat, copy=False)
        mean = xs.mean(axis=axes, keepdims=True)
        centered = xs - mean
        std = np.sqrt(np.mean(centered * centered, axis=axes, keepdims=True))
        return as_array(centered / (std + stat.type(1e-9)), x.dtype)


@register
class LpNormalization(OpKernel):
    """x / ||x||_p along ``axis`` (default -1), p = 1 or 2 (default 2); a zero norm gives 0."""

    op_type = "LpNormalization"

    @classmethod
    def unsupported_reason(cls, node: Node, opset: int) -> str | None:
        p = int(node.attrs.get("p", 2))
        return None if p in (1, 2) else f"LpNormalization p={p} (only 1 and 2 are defined)"

    def _run(self, x: np.ndarray) -> np.ndarray:
        axis = _normalize_axis(int(self.attr("axis", -1)), x.ndim, self.node, self.op_type)
        stat = _stat_dtype(x.dtype)
        xs = x.astype(stat, copy=False)
        if int(self.attr("p", 2)) == 1:
            norm = np.sum(np.abs(xs), axis=axis, keepdims=True)
        else:
            norm = np.sqrt(np.sum(xs * xs, axis=axis, keepdims=True))
        with np.errstate(all="ignore"):
            y = np.where(norm == 0, 0, xs / norm)
        return as_array(y, x.dtype)


# ------------------------------------------------------------------ softmax family


class _SoftmaxBase(OpKernel):
    """Axis handling shared by Softmax, LogSoftmax and Hardmax."""

    def _blocks(self, x: np.ndarray) -> tuple[np.ndarray, int]:
        """The input viewed so that one axis is normalized, and that axis.

        Before opset 13: reshaped to 2-D (prod(shape[:axis]), prod(shape[axis:])), axis 1.
        From 13: unchanged, the single ``axis``.
        """
        if self.opset < 13:
            axis = _normalize_axis(int(self.attr("axis", 1)), x.ndim, self.node, self.op_type)
            rows = int(np.prod(x.shape[:axis], dtype=np.int64))
            return x.reshape(rows, int(np.prod(x.shape[axis:], dtype=np.int64))), 1
        axis = _normalize_axis(int(self.attr("axis", -1)), x.ndim, self.node, self.op_type)
        return x, axis

    reuses = (0,)

    def compute(self, x: np.ndarray, axis: int, in_place: bool = False) -> np.ndarray:  # pragma: no cover
        """The normalized values of ``x`` along ``axis``; ``in_place`` allows overwriting ``x``."""
        raise NotImplementedError

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self._run_reusing((), x)

    def _run_reusing(self, reusable: tuple[int, ...], x: np.ndarray) -> np.ndarray:
        if x.ndim == 0:
            raise ModelError(f"node {self.node.name} ({self.op_type}): input is a scalar")
        view, axis = self._blocks(np.asarray(x))
        stat = _stat_dtype(x.dtype) if x.dtype.kind == "f" else np.dtype(np.float64)
        work = view.astype(stat, copy=False)
        # overwrite the input only when it is dead; a converted or reshaped copy is ours anyway
        in_place = work.flags.writeable and ((0 in reusable) or not np.may_share_memory(work, x))
        with np.errstate(all="ignore"):
            y = self.compute(work, axis, in_place)
        if y.shape != x.shape:
            y = y.reshape(x.shape)
        if y.base is x and y.dtype == x.dtype:  # written through a view of the dead input
            y = x
        return as_array(y, x.dtype)


@register
class Softmax(_SoftmaxBase):
    """exp(x - max) / sum(exp(x - max)) along the axis; large inputs stay finite."""

    op_type = "Softmax"

    def compute(self, x: np.ndarray, axis: int, in_place: bool = False) -> np.ndarray:
        if x.size == 0:
            return x
        e = np.subtract(x, row_max(x, axis), out=x if in_place else None)
        np.exp(e, out=e)
        if axis == e.ndim - 1 and e.flags.c_contiguous:
            e /= row_sums(e.reshape(-1, e.shape[-1])).reshape(e.shape[:-1] + (1,))
        else:
            e /= np.sum(e, axis=axis, keepdims=True)
        return e


@register
class LogSoftmax(_SoftmaxBase):
    """(x - max) - log(sum(exp(x - max))) along the axis."""

    op_type = "LogSoftmax"

    def compute(self, x: np.ndarray, axis: int, in_place: bool = False) -> np.ndarray:
        if x.size == 0:
            return x
        shifted = np.subtract(x, row_max(x, axis), out=x if in_place else None)
        shifted -= np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
        return shifted


@register
class Hardmax(_SoftmaxBase):
    """1 at the first maximum along the axis, 0 elsewhere."""

    op_type = "Hardmax"

    def compute(self, x: np.ndarray, axis: int, in_place: bool = False) -> np.ndarray:
        y = np.zeros_like(x)
        if x.size == 0:
            return y
        first = np.expand_dims(np.argmax(x, axis=axis), axis)
        np.put_along_axis(y, first, 1, axis=axis)
        return y
