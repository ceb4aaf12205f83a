"""Pooling kernels: MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool (layout N, C, *spatial).

Windowed pools loop over the kernel taps (a handful) and combine one strided view of the
padded input per tap, so every tap is one vectorised numpy operation over the whole output.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from engine.graph import Node
from engine.ops import OpKernel, register
from engine.ops.conv import AUTO_PADS, conv_pads, ints, pad_spatial, tap_slices


@dataclass(frozen=True)
class PoolGeometry:
    """Window placement along every spatial axis (elements).

    ``begins``/``ends`` are the declared pads; ``extra`` is padding past ``ends`` that
    ceil_mode needs for its last window (never counted as padding by AveragePool).
    """

    kernel: list[int]
    strides: list[int]
    dilations: list[int]
    begins: list[int]
    ends: list[int]
    extra: list[int]
    out_shape: list[int]


def pool_geometry(
    in_shape: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    auto_pad: str,
    pads: Sequence[int] | None,
    ceil_mode: bool,
) -> PoolGeometry:
    """Output size and padding of a windowed pool (ONNX rules incl. ceil_mode and auto_pad)."""
    begins, ends = conv_pads(auto_pad, in_shape, kernel, strides, dilations, pads)
    out_shape: list[int] = []
    extra: list[int] = []
    for size, k, s, d, b, e in zip(in_shape, kernel, strides, dilations, begins, ends):
        span = (k - 1) * d + 1
        room = size + b + e - span
        if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            out = -(-size // s)
        elif ceil_mode:
            out = -(-room // s) + 1
            if (out - 1) * s >= size + b:  # the last window must start inside input or begin pad
                out -= 1
        else:
            out = room // s + 1
        if out <= 0:
            raise ValueError(f"kernel {list(kernel)} does not fit the padded input {list(in_shape)}")
        out_shape.append(out)
        extra.append(max(0, (out - 1) * s + span - (size + b + e)))
    return PoolGeometry(list(kernel), list(strides), list(dilations), begins, ends, extra, out_shape)


def _geometry(kernel: OpKernel, x: np.ndarray) -> PoolGeometry:
    nd = x.ndim - 2
    shape = kernel.attr("kernel_shape")
    if shape is None:
        raise ValueError("kernel_shape attribute is missing")
    return pool_geometry(
        x.shape[2:],
        [int(k) for k in shape],
        ints(kernel.attr("strides"), nd, 1),
        ints(kernel.attr("dilations"), nd, 1),
        kernel.attr("auto_pad", "NOTSET"),
        kernel.attr("pads"),
        bool(kernel.attr("ceil_mode", 0)),
    )


def _taps(geo: PoolGeometry) -> itertools.product:
    return itertools.product(*(range(k) for k in geo.kernel))


def _axis_count(size: int, geo: PoolGeometry, axis: int, lo: int, hi: int) -> np.ndarray:
    """Per output position along one axis: taps whose padded coordinate lies in [lo, hi)."""
    o = np.arange(geo.out_shape[axis])[:, None] * geo.strides[axis]
    t = np.arange(geo.kernel[axis])[None, :] * geo.dilations[axis]
    u = o + t  # padded coordinate
    return ((u >= lo) & (u < hi)).sum(axis=1)


def _check(node: Node) -> str | None:
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if auto_pad not in AUTO_PADS:
        return f"auto_pad {auto_pad!r} is not one of {', '.join(AUTO_PADS)}"
    if "kernel_shape" not in node.attrs:
        return "kernel_shape attribute is missing"
    return None


@register
class MaxPool(OpKernel):
    """Window maximum; optional second output: flat int64 argmax indices into X.

    Indices count over (N, C, *spatial) row-major; storage_order=1 orders the spatial
    part column-major (the batch/channel offset stays row-major), as ONNX defines.
    """

    op_type = "MaxPool"

    @classmethod
    def unsupported_reason(cls, node: Node, opset: int) -> str | None:
        return _check(node)

    def _run(self, x: np.ndarray) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        geo = _geometry(self, x)
        fill = -np.inf if x.dtype.kind == "f" else np.iinfo(x.dtype).min
        xp = pad_spatial(x, geo.begins, [e + more for e, more in zip(geo.ends, geo.extra)], fill)
        want_indices = len(self.node.outputs) > 1 and bool(self.node.outputs[1])
        if not want_indices:
            views = [
                xp[(slice(None), slice(None)) + tap_slices(tap, geo.dilations, geo.strides, geo.out_shape)]
                for tap in _taps(geo)
            ]
            if len(views) == 1:
                return views[0].copy()
            y = np.maximum(views[0], views[1])  # the first two taps make the output: no separate copy
            for view in views[2:]:
                np.maximum(y, view, out=y)
            return y
        return self._with_indices(x, xp, geo)

    def _with_indices(self, x: np.ndarray, xp: np.ndarray, geo: PoolGeometry) -> tuple[np.ndarray, np.ndarray]:
        n, c = x.shape[:2]
        spatial = x.shape[2:]
        nd = len(spatial)
        # element strides of the spatial index: row-major, or column-major for storage_order=1
        if int(self.attr("storage_order", 0)) == 1:
            steps = [int(np.prod(spatial[:i], dtype=np.int64)) for i in range(nd)]
        else:
            steps = [int(np.prod(spatial[i + 1 :], dtype=np.int64)) for i in range(nd)]
        base = (np.arange(n * c, dtype=np.int64) * int(np.prod(spatial, dtype=np.int64))).reshape(
            (n, c) + (1,) * nd
        )
        out_shape = (n, c) + tuple(geo.out_shape)
        y = np.empty(out_shape, dtype=x.dtype)
        idx = np.full(out_shape, -1, dtype=np.int64)
        for tap in _taps(geo):
            view = xp[(slice(None), slice(None)) + tap_slices(tap, geo.dilations, geo.strides, geo.out_shape)]
            flat = np.zeros((1, 1) + (1,) * nd, dtype=np.int64)
            valid = np.ones((1, 1) + (1,) * nd, dtype=bool)
            for axis in range(nd):
                coord = np.arange(geo.out_shape[axis]) * geo.strides[axis] + tap[axis] * geo.dilations[axis]
                coord = coord - geo.begins[axis]
                shape = [1] * (nd + 2)
                shape[axis + 2] = -1
                flat = flat + (coord * steps[axis]).reshape(shape)
                valid = valid & ((coord >= 0) & (coord < spatial[axis])).reshape(shape)
            take = valid & ((idx < 0) | (view > y))
            np.copyto(y, view, where=take)
            np.copyto(idx, np.broadcast_to(base + flat, out_shape), where=take)
        return y, idx


@register
class AveragePool(OpKernel):
    """Window mean. count_include_pad=1 counts declared pads (not ceil_mode's extra) as zeros."""

    op_type = "AveragePool"

    @classmethod
    def unsupported_reason(cls, node: Node, opset: int) -> str | None:
        return _check(node)

    def _run(self, x: np.ndarray) -> np.ndarray:
        geo = _geometry(self, x)
        acc_dtype = np.float32 if x.dtype == np.float16 else x.dtype
        ends = [e + more for e, more in zip(geo.ends, geo.extra)]
        xp = pad_spatial(x.astype(acc_dtype, copy=False), geo.begins, ends, 0)
        total = np.zeros((x.shape[0], x.shape[1]) + tuple(geo.out_shape), dtype=acc_dtype)
        for tap in _taps(geo):
            total += xp[(slice(None), slice(None)) + tap_slices(tap, geo.dilations, geo.strides, geo.out_shape)]
        include_pad = bool(self.attr("count_include_pad", 0))
        count = np.ones((), dtype=np.int64)
        for axis, size in enumerate(x.shape[2:]):
            if include_pad:
                lo, hi = 0, size + geo.begins[axis] + geo.ends[axis]
            else:
                lo, hi = geo.begins[axis], geo.begins[axis] + size
            per_axis = _axis_count(size, geo, axis, lo, hi)
            count = np.multiply.outer(count, per_axis)
        return (total / np.maximum(count, 1).astype(acc_dtype)).astype(x.dtype, copy=False)


@register
class GlobalAveragePool(OpKernel):
    """Mean over all spatial axes; output (N, C, 1, ..., 1)."""

    op_type = "GlobalAveragePool"

    def _run(self, x: np.ndarray) -> np.ndarray:
        axes = tuple(range(2, x.ndim))
        acc = np.float32 if x.dtype == np.float16 else None
        return x.mean(axis=axes, keepdims=True, dtype=acc).astype(x.dtype, copy=False)


@register
class GlobalMaxPool(OpKernel):
    """Maximum over all spatial axes; output (N, C, 1, ..., 1)."""

    op_type = "GlobalMaxPool"

    def _run(self, x: np.ndarray) -> np.ndarray:
        return x.max(axis=tuple(range(2, x.ndim)), keepdims=True)
