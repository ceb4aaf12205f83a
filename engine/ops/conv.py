"""Convolution kernels: Conv and ConvTranspose (layout N, C, *spatial; 1-D, 2-D and 3-D).

Conv is im2col + one BLAS matrix product per group and sample: every kernel tap's strided
view of the padded input is copied once into a (C/group * prod(kernel), prod(out)) column
matrix (a handful of large copies, measured ~2x faster than one copy through a
``sliding_window_view``). 1x1 convolutions with unit stride skip the copy. Large unit-stride
2-D maps skip im2col: one product per kernel row over shifted views of the flattened padded
input (see ``Conv._kernel_row_products``). (Building and multiplying the column matrix in
cache-sized blocks of output rows measured no faster.) Depthwise
convolutions take the same path (a batch of one-row products per group), which measured
~2x faster than a multiply-add per kernel tap. ConvTranspose is one BLAS product per group
followed by a col2im scatter-add, one vectorised strided add per kernel tap.

The spatial helpers here (pads from ``auto_pad``, padding that also crops) are shared
with the pooling kernels.
"""

from __future__ import annotations

import itertools
from typing import Any, Sequence

import numpy as np

from engine.graph import Node
from engine.ops import OpKernel, register

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def ints(values: Any, count: int, default: int) -> list[int]:
    """An int-list attribute, or ``count`` copies of ``default`` when absent."""
    if values is None:
        return [default] * count
    return [int(v) for v in values]


def same_pads(total: Sequence[int], auto_pad: str) -> tuple[list[int], list[int]]:
    """Split total padding per axis into (begins, ends); SAME_UPPER puts the odd extra at the end."""
    if auto_pad == "SAME_LOWER":
        return [t - t // 2 for t in total], [t // 2 for t in total]
    return [t // 2 for t in total], [t - t // 2 for t in total]


def conv_pads(
    auto_pad: str,
    in_shape: Sequence[int],
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: Sequence[int] | None,
) -> tuple[list[int], list[int]]:
    """Begin and end padding per spatial axis (elements) for Conv and the pools.

    SAME_*: output size ceil(in / stride), total padding split by :func:`same_pads`;
    VALID: none; NOTSET: the ``pads`` attribute ([x1_begin, x2_begin, ..., x1_end, ...]).
    """
    nd = len(in_shape)
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        total = []
        for size, k, s, d in zip(in_shape, kernel, strides, dilations):
            out = -(-size // s)
            total.append(max(0, (out - 1) * s + (k - 1) * d + 1 - size))
        return same_pads(total, auto_pad)
    if auto_pad == "VALID" or pads is None:
        return [0] * nd, [0] * nd
    pads = [int(p) for p in pads]
    return pads[:nd], pads[nd:]


def pad_spatial(x: np.ndarray, begins: Sequence[int], ends: Sequence[int], value: float | int = 0) -> np.ndarray:
    """Pad (positive) or crop (negative) the spatial axes 2.. of ``x`` with a constant.

    Returns ``x`` itself when there is nothing to do; otherwise a new array (or, for a pure
    crop, a view of ``x``). Padding fills a new buffer with ``value`` and copies ``x`` into
    its interior (one pass, cheaper than ``np.pad``).
    """
    if not any(begins) and not any(ends):
        return x
    crop = [slice(None), slice(None)]
    inner = [slice(None), slice(None)]
    shape = list(x.shape[:2])
    for size, b, e in zip(x.shape[2:], begins, ends):
        kept = size - max(0, -b) - max(0, -e)
        crop.append(slice(max(0, -b), size - max(0, -e)))
        inner.append(slice(max(0, b), max(0, b) + max(kept, 0)))
        shape.append(max(kept, 0) + max(0, b) + max(0, e))
    x = x[tuple(crop)]
    if tuple(shape) == x.shape:
        return x
    out = np.full(shape, value, dtype=x.dtype) if value != 0 else np.zeros(shape, dtype=x.dtype)
    out[tuple(inner)] = x
    return out


def tap_slices(
    tap: Sequence[int], dilations: Sequence[int], strides: Sequence[int], out_shape: Sequence[int]
) -> tuple[slice, ...]:
    """Spatial slices reading one kernel tap for every output position (padded-input coordinates)."""
    return tuple(
        slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, s, o in zip(tap, dilations, strides, out_shape)
    )


def _check_auto_pad(node: Node) -> str | None:
    auto_pad = node.attrs.get("auto_pad", "NOTSET")
    if auto_pad not in AUTO_PADS:
        return f"auto_pad {auto_pad!r} is not one of {', '.join(AUTO_PADS)}"
    return None


@register
class Conv(OpKernel):
    """Y = conv(X, W) + B. X: (N, C, *in), W: (M, C/group, *k), B: (M,); zero padding."""

    op_type = "Conv"

    @classmethod
    def unsupported_reason(cls, node: Node, opset: int) -> str | None:
        return _check_auto_pad(node)

    def _run(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        nd = x.ndim - 2
        kernel = list(w.shape[2:])
        group = int(self.attr("group", 1))
        strides = ints(self.attr("strides"), nd, 1)
        dilations = ints(self.attr("dilations"), nd, 1)
        auto_pad = self.attr("auto_pad", "NOTSET")
        begins, ends = conv_pads(auto_pad, x.shape[2:], kernel, strides, dilations, self.attr("pads"))
        if x.shape[1] != w.shape[1] * group:
            raise ValueError(f"input has {x.shape[1]} channels, weight expects {w.shape[1]} x group {group}")
        out_dtype = x.dtype
        if x.dtype == np.float16:  # accumulate half precision in float32
            x = x.astype(np.float32)
        w = w.astype(x.dtype, copy=False)
        xp = pad_spatial(x, begins, ends, 0)
        out_shape = [
            (size - (k - 1) * d - 1) // s + 1 for size, k, s, d in zip(xp.shape[2:], kernel, strides, dilations)
        ]
        if any(o <= 0 for o in out_shape):
            raise ValueError(f"kernel {kernel} does not fit the padded input {list(xp.shape[2:])}")
        n, c = x.shape[:2]
        m = w.shape[0]
        cg, mg = c // group, m // group
        wg = w.reshape(group, mg, -1)
        if all(k == 1 for k in kernel) and all(s == 1 for s in strides):
            # 1x1, unit stride: the padded input already is the column matrix
            cols = np.ascontiguousarray(xp).reshape(n, group, cg, -1)
            y = np.matmul(wg[0], cols[0, 0]) if n == 1 and group == 1 else np.matmul(wg, cols)
        elif nd == 2 and strides == [1, 1] and self._rows_pay_off(cg * kernel[1], xp.shape[3], out_shape):
            y = self._kernel_row_products(xp, wg, kernel, dilations, out_shape)
        else:
            cols = self._im2col(xp, kernel, strides, dilations, out_shape).reshape(n, group, wg.shape[2], -1)
            # one BLAS product, or one per sample and group
            y = np.matmul(wg[0], cols[0, 0]) if n == 1 and group == 1 else np.matmul(wg, cols)
        y = y.reshape((n, m) + tuple(out_shape))
        if b is not None:
            y += b.astype(x.dtype, copy=False).reshape((1, m) + (1,) * nd)
        return y.astype(out_dtype, copy=False)

    @staticmethod
    def _rows_pay_off(depth: int, padded_width: int, out_shape: list[int]) -> bool:
        """Whether :meth:`_kernel_row_products` beats im2col (measured, 3x3 kernels): large maps
        (>= 1024 positions: ~10% faster at 64x64 with 32 channels, slower at 16x16), at most 15%
        wasted columns, and products at least ``depth`` = C/group * kw = 64 deep (3 input
        channels: 2x slower than im2col's one product of depth 27)."""
        return depth >= 64 and out_shape[0] * out_shape[1] >= 1024 and out_shape[1] >= 0.85 * padded_width

    @staticmethod
    def _kernel_row_products(
        xp: np.ndarray, wg: np.ndarray, kernel: list[int], dilations: list[int], out_shape: list[int]
    ) -> np.ndarray:
        """Unit-stride 2-D convolution as one BLAS product per kernel row, without im2col.

        Flatten each padded channel to length L = Hp * Wp. ``shifted[c, j, t] = flat[c, t + j*dw]``
        holds kw shifted copies of the input (kw x the input, instead of im2col's kh*kw x). For
        kernel row i, the columns ``shifted[..., i*dh*Wp : i*dh*Wp + Ho*Wp]`` are a plain strided
        view (no copy) whose column ``ho*Wp + wo`` holds every (c, j) tap of output (ho, wo); one
        product with the weights of row i (ordered (c, j)) adds that row's contribution. Output
        columns wo >= Wo (Wp - Wo per row) are computed and dropped. Returns (N, G, Mg, Ho*Wo).
        """
        n, c, hp, wp = xp.shape
        group, mg, _ = wg.shape
        kh, kw = kernel
        dh, dw = dilations
        ho, wo = out_shape
        length = hp * wp
        width = ho * wp  # output columns including the dropped ones
        flat = xp.reshape(n, c, length)
        shifted = np.empty((n, c, kw, length), dtype=xp.dtype)
        for j in range(kw):
            start = j * dw
            shifted[:, :, j, : length - start] = flat[:, :, start:]
            shifted[:, :, j, length - start :] = 0  # read only by dropped columns
        cg = c // group
        rows = shifted.reshape(n, group, cg * kw, length)
        w_rows = wg.reshape(group, mg, cg, kh, kw)
        y = np.empty((n, group, mg, width), dtype=xp.dtype)
        part = np.empty_like(y) if kh > 1 else y
        for i in range(kh):
            w_i = np.ascontiguousarray(w_rows[:, :, :, i, :]).reshape(group, mg, cg * kw)
            cols = rows[..., i * dh * wp : i * dh * wp + width]
            target = y if i == 0 else part
            if n == 1 and group == 1:
                np.matmul(w_i[0], cols[0, 0], out=target[0, 0])
            else:
                np.matmul(w_i, cols, out=target)
            if i > 0:
                y += part
        return np.ascontiguousarray(y.reshape(n, group, mg, ho, wp)[..., :wo]).reshape(n, group, mg, ho * wo)

    @staticmethod
    def _im2col(
        xp: np.ndarray, kernel: list[int], strides: list[int], dilations: list[int], out_shape: list[int]
    ) -> np.ndarray:
        """Column tensor (N, C, *k, *out) of the padded input: one strided copy per kernel tap,
        rows ordered (c, *k) like the weight's trailing axes."""
        n, c = xp.shape[:2]
        cols = np.empty((n, c) + tuple(kernel) + tuple(out_shape), dtype=xp.dtype)
        everything = (slice(None), slice(None))
        for tap in itertools.product(*(range(k) for k in kernel)):
            cols[everything + tap] = xp[everything + tap_slices(tap, dilations, strides, out_shape)]
        return cols


@register
class ConvTranspose(OpKernel):
    """Y = conv_transpose(X, W) + B. X: (N, C, *in), W: (C, M/group, *k), B: (M,).

    Input position i and tap t land on output position i*stride + t*dilation - pad_begin.
    """

    op_type = "ConvTranspose"

    @classmethod
    def unsupported_reason(cls, node: Node, opset: int) -> str | None:
        return _check_auto_pad(node)

    def _run(self, x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
        nd = x.ndim - 2
        in_shape = list(x.shape[2:])
        kernel = list(w.shape[2:])
        group = int(self.attr("group", 1))
        strides = ints(self.attr("strides"), nd, 1)
        dilations = ints(self.attr("dilations"), nd, 1)
        out_pad = ints(self.attr("output_padding"), nd, 0)[:nd]
        auto_pad = self.attr("auto_pad", "NOTSET")
        # the un-cropped output: every input position times every tap, plus output_padding
        full = [
            s * (i - 1) + (k - 1) * d + 1 + op for s, i, k, d, op in zip(strides, in_shape, kernel, dilations, out_pad)
        ]
        output_shape = self.attr("output_shape")
        if output_shape is not None:
            output_shape = [int(v) for v in output_shape][-nd:]
        elif auto_pad in ("SAME_UPPER", "SAME_LOWER"):
            output_shape = [i * s for i, s in zip(in_shape, strides)]
        if output_shape is not None:
            total = [f - o for f, o in zip(full, output_shape)]
            begins, ends = same_pads(total, "SAME_UPPER" if auto_pad == "SAME_UPPER" else "SAME_LOWER")
        elif auto_pad == "VALID":
            begins, ends = [0] * nd, [0] * nd
        else:
            begins, ends = conv_pads("NOTSET", in_shape, kernel, strides, dilations, self.attr("pads"))
        out_shape = [f - pb - pe for f, pb, pe in zip(full, begins, ends)]
        if any(o <= 0 for o in out_shape):
            raise ValueError(f"output shape {out_shape} is empty")

        n, c = x.shape[:2]
        if c != w.shape[0]:
            raise ValueError(f"input has {c} channels, weight expects {w.shape[0]}")
        cg, mg = c // group, w.shape[1]
        m = mg * group
        k_size = int(np.prod(kernel))
        out_dtype = x.dtype
        if x.dtype == np.float16:  # accumulate half precision in float32
            x = x.astype(np.float32)
        w = w.astype(x.dtype, copy=False)
        # buffer covering both the full output and the requested window (pads may be negative)
        origin = [min(0, pb) for pb in begins]
        extent = [max(f, pb + o) - u0 for f, pb, o, u0 in zip(full, begins, out_shape, origin)]
        buf = np.zeros((n, group, mg) + tuple(extent), dtype=x.dtype)
        xg = x.reshape(n, group, cg, -1)
        # (G, Mg*K, Cg) @ (N, G, Cg, P) -> (N, G, Mg*K, P)
        wt = w.reshape(group, cg, mg * k_size).transpose(0, 2, 1)
        cols = np.matmul(wt, xg).reshape((n, group, mg) + tuple(kernel) + tuple(in_shape))
        for tap in itertools.product(*(range(k) for k in kernel)):
            sl = tuple(
                slice(t * d - u0, t * d - u0 + (i - 1) * s + 1, s)
                for t, d, u0, i, s in zip(tap, dilations, origin, in_shape, strides)
            )
            buf[(slice(None),) * 3 + sl] += cols[(slice(None),) * 3 + tap]
        crop = tuple(slice(pb - u0, pb - u0 + o) for pb, u0, o in zip(begins, origin, out_shape))
        y = buf.reshape((n, m) + tuple(extent))[(slice(None), slice(None)) + crop]
        y = np.ascontiguousarray(y)
        if b is not None:
            y += b.astype(x.dtype, copy=False).reshape((1, m) + (1,) * nd)
        return y.astype(out_dtype, copy=False)
