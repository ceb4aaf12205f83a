"""Integer Conv (layout N, C, *spatial; 1-D, 2-D, 3-D; groups, depthwise, strides, dilations).

The float Conv's im2col, on codes: the input codes are padded with the input ZERO POINT
(a padded tap then contributes ``zp - zp = 0``, exactly like a zero in float), the kernel
taps are read through ``sliding_window_view`` and copied once into an int8 column matrix
``(N, group, C/group * prod(kernel), prod(out))``; 1x1 unit-stride convolutions skip the
copy. One exact ``int_matmul`` per call (batched over samples and groups) gives the int32
accumulator, the int32 bias (scale ``s_x * s_w[m]``) is added, and the result is
requantized per output channel (multiplier ``s_x * s_w[m] / s_y``).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from engine.int8.ops import IntKernel, NotInteger, out_param, qinput, register_int
from engine.int8.qtensor import (
    QTensor,
    Value,
    add_bias,
    real_multiplier,
    requantize_acc,
    scale32,
    zero_point,
)
from engine.ops.conv import conv_pads, ints, pad_spatial
from engine.quant.integer import INT32_MAX, INT32_MIN, int_matmul
from engine.quant.qparams import QParams


def im2col_codes(
    xp: np.ndarray,
    kernel: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    out_shape: Sequence[int],
    group: int,
) -> np.ndarray:
    """Column matrix ``(N, group, C/group * prod(kernel), prod(out))`` of padded codes ``xp``;
    rows ordered (channel, *kernel) like the weight's trailing axes."""
    n, c = xp.shape[:2]
    nd = len(kernel)
    if all(k == 1 for k in kernel) and all(s == 1 for s in strides):
        return np.ascontiguousarray(xp).reshape(n, group, c // group, -1)
    spatial = tuple(range(2, 2 + nd))
    span = [(k - 1) * d + 1 for k, d in zip(kernel, dilations)]
    windows = sliding_window_view(xp, span, axis=spatial)  # (N, C, *windows, *span)
    pick = (slice(None), slice(None)) + tuple(slice(None, None, s) for s in strides) + tuple(
        slice(None, None, d) for d in dilations
    )
    order = (0, 1) + tuple(range(2 + nd, 2 + 2 * nd)) + tuple(range(2, 2 + nd))
    windows = windows[pick].transpose(order)  # (N, C, *k, *out)
    k_size = int(np.prod(kernel))
    return windows.reshape(n, group, (c // group) * k_size, int(np.prod(out_shape)))  # the one copy


def conv_accumulate(
    x: QTensor, w: QTensor, group: int, strides: Sequence[int], dilations: Sequence[int], pads: tuple[list[int], list[int]]
) -> np.ndarray:
    """Exact int32 ``sum (x - zx) * (w - zw)`` over each output's window: ``(N, M, *out)``."""
    zx = zero_point(x.qp)
    codes = x.codes
    wc = w.codes
    kernel = list(wc.shape[2:])
    if codes.shape[1] != wc.shape[1] * group:
        raise ValueError(f"input has {codes.shape[1]} channels, weight expects {wc.shape[1]} x group {group}")
    zw = np.asarray(w.qp.zero_point, dtype=np.int64)
    if np.any(zw):  # asymmetric weights: centre them once (int16 holds w - zw exactly)
        zw_b = zw.reshape((-1,) + (1,) * (wc.ndim - 1)) if w.qp.per_channel else zw
        wc = (wc.astype(np.int16) - zw_b.astype(np.int16)).astype(np.int16)
    xp = pad_spatial(codes, pads[0], pads[1], zx)
    out_shape = [(size - (k - 1) * d - 1) // s + 1 for size, k, s, d in zip(xp.shape[2:], kernel, strides, dilations)]
    if any(o <= 0 for o in out_shape):
        raise ValueError(f"kernel {kernel} does not fit the padded input {list(xp.shape[2:])}")
    m = wc.shape[0]
    cols = im2col_codes(xp, kernel, strides, dilations, out_shape, group)
    wg = wc.reshape(group, m // group, -1)
    acc = int_matmul(wg, cols, 0, zx)  # (N, G, M/G, P)
    return acc.reshape((codes.shape[0], m) + tuple(out_shape))


@register_int
class Conv(IntKernel):
    """``Y = conv(X, W) + B``: X and Y per tensor, W per tensor or per output channel (axis 0)."""

    op_type = "Conv"
    float_inputs = frozenset({2})

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        x, w = qinput(inputs[0], "input X"), qinput(inputs[1], "weight W")
        out = out_param(out_params)
        if x.qp.per_channel:
            raise NotInteger("Conv input per channel")
        if w.qp.per_channel and (w.qp.axis or 0) % w.codes.ndim != 0:
            raise NotInteger(f"Conv weight per channel along axis {w.qp.axis}, not the output channels")
        nd = x.codes.ndim - 2
        kernel = list(w.codes.shape[2:])
        strides = ints(self.attr("strides"), nd, 1)
        dilations = ints(self.attr("dilations"), nd, 1)
        pads = conv_pads(self.attr("auto_pad", "NOTSET"), x.codes.shape[2:], kernel, strides, dilations, self.attr("pads"))
        acc = conv_accumulate(x, w, int(self.attr("group", 1)), strides, dilations, pads)
        acc_scale = (scale32(x.qp) * np.asarray(w.qp.scale, dtype=np.float32)).astype(np.float32)
        b = inputs[2] if len(inputs) > 2 else None
        total: np.ndarray = acc
        if b is not None:
            m = acc.shape[1]
            bias = np.rint(np.asarray(b, dtype=np.float64).reshape(-1) / np.broadcast_to(acc_scale, (m,)).astype(np.float64))
            bias = np.clip(bias, INT32_MIN, INT32_MAX).astype(np.int64)
            terms = int(np.prod(w.codes.shape[1:]))
            bits = 8 * max(x.codes.dtype.itemsize, w.codes.dtype.itemsize)
            total = add_bias(acc, bias.reshape((1, m) + (1,) * nd), terms, bits)
        return (requantize_acc(total, real_multiplier(acc_scale, out=out), out, self.rounding, axis=1),)
