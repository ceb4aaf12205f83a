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
from engine.ops.elementwise import as_array


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


# ------------------------------------------------------------------ batch / instance / layer norm


@register
class BatchNormalization(OpKernel):
    """y = scale * (x - mean) / sqrt(var + epsilon) + bias, per channel (axis 1).

    Inference mode folds the parameters into one per-channel multiply-add (computed in
    float64, applied in the input dtype). With ``training_mode=1`` (opset 14+) the batch
    statistics normalize the input and the updated running mean and variance
    (``momentum`` weighted) are the second and third outputs.
    """

    op_type = "BatchNormalization"

    @classmethod
    def unsupported_reason(cls, node: Node, opset: int) -> str | None:
        extra_outputs = [o for o in node.outputs[1:] if o]
        if opset < 14 and extra_outputs:
            return "BatchNormalization in training mode (before opset 14: outputs beyond Y)"
        return None

    def _run(
        self, x: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray
    ) -> np.ndarray | tuple[np.ndarray, ...]:
        epsilon = float(self.attr("epsilon", 1e-5))
        if self.opset >= 14 and int(self.attr("training_mode", 0)):
            return self._training(x, scale, bias, mean, var, epsilon)
        shape = _channel_shape(np.asarray(scale), x.ndim)
        factor = np.asarray(scale, np.float64) / np.sqrt(np.asarray(var, np.float64) + epsilon)
        offset = np.asarray(bias, np.float64) - np.asarray(mean, np.float64) * factor
        dtype = x.dtype
        y = x * factor.astype(dtype).reshape(shape) + offset.astype(dtype).reshape(shape)
        return as_array(y, dtype)

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

    def _run(
        self, x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None = None
    ) -> tuple[np.ndarray, ...]:
        epsilon = float(self.attr("epsilon", 1e-5))
        axis = _normalize_axis(int(self.attr("axis", -1)), x.ndim, self.node, self.op_type)
        stat = _stat_dtype(x.dtype)
        xs = x.astype(stat, copy=False)
        axes = tuple(range(axis, x.ndim))
        mean = xs.mean(axis=axes, keepdims=True)
        centered = xs - mean
        var = np.mean(centered * centered, axis=axes, keepdims=True)
        inv_std = 1.0 / np.sqrt(var + stat.type(epsilon))
        y = centered * inv_std * np.asarray(scale).astype(stat, copy=False)
        if bias is not None:
            y = y + np.asarray(bias).astype(stat, copy=False)
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

    def compute(self, x: np.ndarray, axis: int) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def _run(self, x: np.ndarray) -> np.ndarray:
        if x.ndim == 0:
            raise ModelError(f"node {self.node.name} ({self.op_type}): input is a scalar")
        view, axis = self._blocks(np.asarray(x))
        stat = _stat_dtype(x.dtype) if x.dtype.kind == "f" else np.dtype(np.float64)
        with np.errstate(all="ignore"):
            y = self.compute(view.astype(stat, copy=False), axis)
        return as_array(y.reshape(x.shape), x.dtype)


@register
class Softmax(_SoftmaxBase):
    """exp(x - max) / sum(exp(x - max)) along the axis; large inputs stay finite."""

    op_type = "Softmax"

    def compute(self, x: np.ndarray, axis: int) -> np.ndarray:
        if x.size == 0:
            return x
        e = np.exp(x - np.max(x, axis=axis, keepdims=True))
        return e / np.sum(e, axis=axis, keepdims=True)


@register
class LogSoftmax(_SoftmaxBase):
    """(x - max) - log(sum(exp(x - max))) along the axis."""

    op_type = "LogSoftmax"

    def compute(self, x: np.ndarray, axis: int) -> np.ndarray:
        if x.size == 0:
            return x
        shifted = x - np.max(x, axis=axis, keepdims=True)
        return shifted - np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))


@register
class Hardmax(_SoftmaxBase):
    """1 at the first maximum along the axis, 0 elsewhere."""

    op_type = "Hardmax"

    def compute(self, x: np.ndarray, axis: int) -> np.ndarray:
        y = np.zeros_like(x)
        if x.size == 0:
            return y
        first = np.expand_dims(np.argmax(x, axis=axis), axis)
        np.put_along_axis(y, first, 1, axis=axis)
        return y
