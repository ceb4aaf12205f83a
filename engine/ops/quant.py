"""QuantizeLinear / DequantizeLinear for integer types (int8, uint8, int16, uint16; int32 input
to DequantizeLinear).

Conventions: q = saturate(round_half_to_even(x / scale) + zero_point) and
x' = (q - zero_point) * scale. ``scale`` and ``zero_point`` are per tensor (scalar or
1 element), per axis (1-D of length shape[axis], ``axis`` default 1), or blocked
(``block_size`` > 0: same rank as x, shape[axis] = ceil(x.shape[axis] / block_size)).
Quantization divides in the input's float dtype (float32 stays float32, as ONNX Runtime
does), unless the ``precision`` attribute names another float type.
"""

from __future__ import annotations

import numpy as np

from engine.errors import ModelError
from engine.graph import Node
from engine.ops import OpKernel, register
from engine.ops.elementwise import ONNX_TO_NUMPY, as_array

# integer types the kernels quantize to / dequantize from, with their saturation ranges
QUANT_RANGES: dict[np.dtype, tuple[int, int]] = {
    np.dtype(np.uint8): (0, 255),
    np.dtype(np.int8): (-128, 127),
    np.dtype(np.uint16): (0, 65535),
    np.dtype(np.int16): (-32768, 32767),
}
DEQUANT_TYPES = set(QUANT_RANGES) | {np.dtype(np.int32)}


def broadcast_param(value: np.ndarray, shape: tuple[int, ...], axis: int, block_size: int, where: str) -> np.ndarray:
    """A scale or zero point reshaped (or, when blocked, repeated) to broadcast against ``shape``."""
    value = np.asarray(value)
    if value.ndim == 0 or (value.size == 1 and block_size <= 0):
        return value.reshape(())
    rank = len(shape)
    if not -rank <= axis < rank:
        raise ModelError(f"{where}: axis {axis} out of range for rank {rank}")
    axis %= rank
    if block_size <= 0:
        if value.ndim != 1 or value.size != shape[axis]:
            raise ModelError(
                f"{where}: per-axis parameter has shape {value.shape}, expected ({shape[axis]},) for axis {axis}"
            )
        dims = [1] * rank
        dims[axis] = value.size
        return value.reshape(dims)
    blocks = -(-shape[axis] // block_size)
    expected = tuple(blocks if i == axis else d for i, d in enumerate(shape))
    if value.shape != expected:
        raise ModelError(f"{where}: blocked parameter has shape {value.shape}, expected {expected}")
    return np.repeat(value, block_size, axis=axis).take(np.arange(shape[axis]), axis=axis)


def _output_dtype_attr(node: Node) -> np.dtype | None:
    code = int(node.attrs.get("output_dtype", 0) or 0)
    return ONNX_TO_NUMPY.get(code) if code else None


@register
class QuantizeLinear(OpKernel):
    """Float to integer: saturate(rint(x / scale) + zero_point); the output type is the zero
    point's, else ``output_dtype``, else uint8."""

    op_type = "QuantizeLinear"

    @classmethod
    def unsupported_reason(cls, node: Node, opset: int) -> str | None:
        code = int(node.attrs.get("output_dtype", 0) or 0)
        if code and _output_dtype_attr(node) not in QUANT_RANGES:
            return f"QuantizeLinear to element type {code} (only int8, uint8, int16, uint16)"
        precision = int(node.attrs.get("precision", 0) or 0)
        if precision and ONNX_TO_NUMPY.get(precision, np.dtype(np.int8)).kind != "f":
            return f"QuantizeLinear precision type {precision} (numpy float types only)"
        return None

    def _run(self, x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None = None) -> np.ndarray:
        x = np.asarray(x)
        where = f"node {self.node.name} (QuantizeLinear)"
        if zero_point is not None:
            out_dtype = np.asarray(zero_point).dtype
        else:
            out_dtype = _output_dtype_attr(self.node) or np.dtype(np.uint8)
        if out_dtype not in QUANT_RANGES:
            raise ModelError(f"{where}: quantizing to {out_dtype} is not supported (int8, uint8, int16, uint16)")
        axis = int(self.attr("axis", 1))
        block_size = int(self.attr("block_size", 0) or 0)
        scale_b = broadcast_param(scale, x.shape, axis, block_size, where)
        precision = int(self.attr("precision", 0) or 0)
        if precision:
            work = ONNX_TO_NUMPY[precision]
            xs, ss = x.astype(work, copy=False), scale_b.astype(work, copy=False)
        else:
            xs, ss = x, scale_b
        with np.errstate(all="ignore"):
            q = np.rint(xs / ss)
            if q.dtype.itemsize < 4:  # float16 holds integers exactly only up to 2048
                q = q.astype(np.float32)
            if zero_point is not None:
                q = q + broadcast_param(zero_point, x.shape, axis, block_size, where).astype(q.dtype)
            lo, hi = QUANT_RANGES[out_dtype]
            q = np.clip(np.nan_to_num(q, nan=0.0), lo, hi)
        return as_array(q, out_dtype)


@register
class DequantizeLinear(OpKernel):
    """Integer to float: (q - zero_point) * scale, in the scale's dtype (or ``output_dtype``)."""

    op_type = "DequantizeLinear"

    @classmethod
    def unsupported_reason(cls, node: Node, opset: int) -> str | None:
        code = int(node.attrs.get("output_dtype", 0) or 0)
        if code:
            dtype = _output_dtype_attr(node)
            if dtype is None or dtype.kind != "f":
                return f"DequantizeLinear to element type {code} (numpy float types only)"
        return None

    def _run(self, x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None = None) -> np.ndarray:
        x = np.asarray(x)
        scale = np.asarray(scale)
        where = f"node {self.node.name} (DequantizeLinear)"
        if x.dtype not in DEQUANT_TYPES:
            raise ModelError(f"{where}: dequantizing {x.dtype} is not supported (int8, uint8, int16, uint16, int32)")
        axis = int(self.attr("axis", 1))
        block_size = int(self.attr("block_size", 0) or 0)
        # integer difference is exact (int64 covers int32 - int32); one rounding into float32
        diff = x.astype(np.int64 if x.dtype == np.int32 else np.int32)
        if zero_point is not None:
            diff = diff - broadcast_param(zero_point, x.shape, axis, block_size, where).astype(diff.dtype)
        scale_b = broadcast_param(scale, x.shape, axis, block_size, where)
        work = np.dtype(np.float64) if scale.dtype == np.float64 else np.dtype(np.float32)
        y = diff.astype(work) * scale_b.astype(work, copy=False)
        out_dtype = _output_dtype_attr(self.node) or scale.dtype
        return as_array(y, out_dtype)
