"""Integer Conv (layout N, C, *spatial; 1-D, 2-D, 3-D; groups, depthwise, strides, dilations).

The float Conv's algorithms, on centred codes: the input codes minus the input zero point
are converted to float32 once (exact: at most 16-bit magnitudes) and padded with 0 (a
padded tap then contributes ``zp - zp = 0``, exactly like a zero in float). The weight,
centred on its per-channel zero points, is prepared once per kernel (:class:`ConvWeight`).
Then, as the float kernel does: 1x1 unit-stride convolutions are one product with the
input; large unit-stride 2-D maps are one product per kernel row over shifted views of
the flattened input (:func:`_kernel_row_products`); everything else copies every kernel
tap's strided view into a column matrix ``(N, group, C/group * prod(kernel), positions)``
(im2col) for one product.

Exactness: every product is an integer matmul. With ``K = C/group * prod(kernel)`` and
``bound = K * max|w| * max|x|``, every partial sum of the accumulator is an integer of
magnitude at most ``bound`` (plus ``max|bias|`` when the bias joins the product), so when
that is at most ``2**24`` float32 BLAS is exact in any summation order -- also across the
kernel-row products added one by one. The int32 bias (scale ``s_x * s_w[m]``) then joins
the first product as one more weight column against a row of ones. Beyond ``2**24`` the
im2col path runs :func:`engine.quant.integer.exact_matmul` (K slices, int32) and the bias
is added to the accumulator. The result is requantized per output channel (multiplier
``s_x * s_w[m] / s_y``).
"""

from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from engine.int8.ops import IntKernel, NotInteger, out_param, qinput, register_int
from engine.int8.qtensor import (
    QTensor,
    Value,
    add_bias,
    real_multiplier,
    scale32,
    zero_point,
)
from engine.ops.conv import conv_pads, ints, pad_spatial, tap_slices
from engine.quant.integer import (
    FLOAT32_EXACT,
    INT32_MAX,
    INT32_MIN,
    MatmulOperand,
    exact_matmul,
    matmul_operand,
)
from engine.quant.qparams import QParams

_CODE_RANGE = {np.dtype(np.int8): (-128, 127), np.dtype(np.uint8): (0, 255), np.dtype(np.int16): (-(2**15), 2**15 - 1)}


@dataclass(frozen=True)
class ConvWeight:
    """A Conv weight prepared for the exact product: ``operand`` holds the centred weights as
    ``(group, M/group, C/group * prod(k))`` (float32, exact) with their bound; ``kernel`` is
    the kernel's spatial shape; ``bias`` (int64 per output channel, or None) is part of the
    accumulator."""

    operand: MatmulOperand
    kernel: tuple[int, ...]
    bias: np.ndarray | None = None

    @functools.cached_property
    def bias_bound(self) -> int:
        """``max |bias|`` (0 without a bias)."""
        return int(np.abs(self.bias).max()) if self.bias is not None and self.bias.size else 0

    @functools.cached_property
    def bias_column(self) -> np.ndarray | None:
        """The bias as one more weight column ``(group, M/group, 1)`` (float32: exact where it is used)."""
        if self.bias is None:
            return None
        g, mg = self.operand.values.shape[:2]
        return self.bias.astype(np.float32).reshape(g, mg, 1)

    @functools.cached_property
    def augmented(self) -> np.ndarray:
        """``(group, M/group, K + 1)``: the weights with the bias column (zeros without a bias)."""
        column = self.bias_column if self.bias_column is not None else np.zeros(self.operand.values.shape[:2] + (1,), np.float32)
        return np.concatenate([self.operand.values.astype(np.float32), column], axis=-1)

    @functools.cached_property
    def row_weights(self) -> list[np.ndarray]:
        """For a 2-D kernel: per kernel row ``i`` the weights ``(group, M/group, C/group * kw)``
        of that row (taps ordered (c, j)); the first with the bias column appended when there
        is a bias."""
        g, mg, _ = self.operand.values.shape
        kh, kw = self.kernel
        per_tap = self.operand.values.astype(np.float32).reshape(g, mg, -1, kh, kw)
        rows = [np.ascontiguousarray(per_tap[:, :, :, i, :]).reshape(g, mg, -1) for i in range(kh)]
        if self.bias_column is not None:
            rows[0] = np.concatenate([rows[0], self.bias_column], axis=-1)
        return rows


def conv_weight(w: QTensor, group: int, bias: np.ndarray | None = None) -> ConvWeight:
    """The weight ``(M, C/group, *k)`` centred on its (per-channel) zero points, bounded from
    the data, with an optional int64 ``bias`` per output channel."""
    zw = np.asarray(w.qp.zero_point, dtype=np.int64)
    centred = w.codes.astype(np.int64)
    if np.any(zw):
        centred -= zw.reshape((-1,) + (1,) * (centred.ndim - 1)) if w.qp.per_channel else zw
    m = centred.shape[0]
    if m % group:
        raise ValueError(f"{m} output channels do not split into {group} groups")
    operand = matmul_operand(centred.reshape(group, m // group, -1), 0, data_bound=True)
    return ConvWeight(operand, tuple(int(k) for k in w.codes.shape[2:]), None if bias is None else np.asarray(bias, dtype=np.int64).reshape(-1))


def centred_input(x: QTensor) -> tuple[np.ndarray, int]:
    """``codes - zero_point`` as float32 (exact) and a bound on its magnitude (from the
    dtype range and zero point for 8/16-bit codes, else from the data). Read only: it may be
    the codes' own float32 copy (:meth:`QTensor.codes_f32`)."""
    zx = zero_point(x.qp)
    codes = x.codes
    if codes.dtype in _CODE_RANGE:
        lo, hi = _CODE_RANGE[codes.dtype]
        fc = x.codes_f32()
        if fc is not None and not zx:
            return fc, max(hi, -lo)
        xf = codes.astype(np.float32)
        if zx:
            xf -= np.float32(zx)
        return xf, max(hi - zx, zx - lo)
    op = matmul_operand(codes, zx, data_bound=True)
    return op.values, op.bound


def _im2col(
    xp: np.ndarray, kernel: list[int], strides: list[int], dilations: list[int], out_shape: list[int], group: int, ones_row: bool
) -> np.ndarray:
    """Columns ``(N, group, C/group * prod(k) [+ 1], positions)`` of the padded input: one
    strided copy per kernel tap, rows ordered (c, *k) like the weight's trailing axes; with
    ``ones_row`` each group's rows end with a row of ones (against the bias column)."""
    n, c = xp.shape[:2]
    cg = c // group
    taps = int(np.prod(kernel, dtype=np.int64))
    rows_k = cg * taps
    extra = 1 if ones_row else 0
    cols = np.empty((n, group, rows_k + extra, int(np.prod(out_shape, dtype=np.int64))), dtype=xp.dtype)
    if ones_row:
        cols[:, :, rows_k, :] = 1.0
    grid = cols.reshape((n, group, rows_k + extra) + tuple(out_shape))  # a view: splits the last axis
    source = xp.reshape((n, group, cg) + xp.shape[2:])  # a view: splits the channel axis
    everything = (slice(None),) * 3
    for t, tap in enumerate(itertools.product(*(range(k) for k in kernel))):
        grid[:, :, t:rows_k:taps] = source[everything + tap_slices(tap, dilations, strides, out_shape)]  # rows ci*taps + t
    return cols


def _rows_pay_off(depth: int, padded_width: int, out_shape: list[int]) -> bool:
    """Whether :func:`_kernel_row_products` beats im2col: the float kernel's measured
    criterion (large maps of at least 1024 positions, at most 15% wasted columns, products
    at least 64 deep)."""
    return depth >= 64 and out_shape[0] * out_shape[1] >= 1024 and out_shape[1] >= 0.85 * padded_width


def _kernel_row_products(
    xp: np.ndarray, weight: ConvWeight, dilations: list[int], out_shape: list[int], group: int
) -> np.ndarray:
    """Unit-stride 2-D convolution as one product per kernel row, without im2col (the float
    kernel's method): each padded channel flattened to ``L = Hp * Wp``; ``kw`` shifted copies
    of it; for kernel row ``i`` the columns ``i*dh*Wp : i*dh*Wp + Ho*Wp`` of those copies
    hold every (c, j) tap of each output ``(ho, wo)`` at column ``ho*Wp + wo``; columns
    ``wo >= Wo`` are computed and dropped. The bias (if any) joins row 0's product against a
    row of ones. Returns float32 ``(N, group, M/group, Ho*Wo)``, exact (see the module doc)."""
    n, c, hp, wp = xp.shape
    kh, kw = weight.kernel
    dh, dw = dilations
    ho, wo = out_shape
    length = hp * wp
    width = ho * wp
    cg = c // group
    depth = cg * kw
    extra = 1 if weight.bias is not None else 0
    buffer = np.empty((n, group, depth + extra, length), dtype=np.float32)
    if extra:
        buffer[:, :, depth, :] = 1.0
    shifted = buffer[:, :, :depth].reshape(n, group, cg, kw, length)  # a view: splits the row axis
    flat = xp.reshape(n, group, cg, length)
    for j in range(kw):
        start = j * dw
        shifted[:, :, :, j, : length - start] = flat[..., start:]
        shifted[:, :, :, j, length - start :] = 0  # read only by dropped columns
    rows = weight.row_weights
    mg = rows[0].shape[1]
    y = np.empty((n, group, mg, width), dtype=np.float32)
    part = np.empty_like(y) if kh > 1 else y
    for i in range(kh):
        cols = buffer[:, :, : depth + (extra if i == 0 else 0), i * dh * wp : i * dh * wp + width]
        target = y if i == 0 else part
        if n == 1 and group == 1:
            np.matmul(rows[i][0], cols[0, 0], out=target[0, 0])
        else:
            np.matmul(rows[i], cols, out=target)
        if i > 0:
            y += part
    return np.ascontiguousarray(y.reshape(n, group, mg, ho, wp)[..., :wo]).reshape(n, group, mg, ho * wo)


def conv_accumulate(
    x: QTensor,
    w: QTensor,
    group: int,
    strides: Sequence[int],
    dilations: Sequence[int],
    pads: tuple[list[int], list[int]],
    weight: ConvWeight | None = None,
) -> np.ndarray:
    """Exact ``sum (x - zx) * (w - zw)`` over each output's window (plus the bias of a
    ``weight`` that has one): ``(N, M, *out)``, float32 holding exact integers, int32, or
    int64 when a bias takes it beyond int32. ``weight``: the prepared :func:`conv_weight`
    (built here, without bias, when None)."""
    codes = x.codes
    kernel = list(w.codes.shape[2:])
    strides, dilations = list(strides), list(dilations)
    if codes.shape[1] != w.codes.shape[1] * group:
        raise ValueError(f"input has {codes.shape[1]} channels, weight expects {w.codes.shape[1]} x group {group}")
    prepared = weight if weight is not None else conv_weight(w, group)
    xf, x_bound = centred_input(x)
    xp = pad_spatial(xf, pads[0], pads[1], 0)
    out_shape = [(size - (k - 1) * d - 1) // s + 1 for size, k, s, d in zip(xp.shape[2:], kernel, strides, dilations)]
    if any(o <= 0 for o in out_shape):
        raise ValueError(f"kernel {kernel} does not fit the padded input {list(xp.shape[2:])}")
    n, m = codes.shape[0], w.codes.shape[0]
    out_dims = (n, m) + tuple(out_shape)
    wg = prepared.operand
    rows_k = wg.values.shape[-1]
    bias = prepared.bias
    # every partial sum an integer within 2**24: float32 products are exact, the bias included
    in_float32 = wg.values.dtype == np.float32 and rows_k * wg.bound * x_bound + prepared.bias_bound <= FLOAT32_EXACT
    if all(k == 1 for k in kernel) and all(s == 1 for s in strides):
        cols = np.ascontiguousarray(xp).reshape(n, group, rows_k, -1)
        acc = exact_matmul(wg, MatmulOperand(cols, x_bound)).reshape(out_dims)
    elif in_float32 and len(kernel) == 2 and strides == [1, 1] and _rows_pay_off(
        (codes.shape[1] // group) * kernel[1], xp.shape[3], out_shape
    ):
        return _kernel_row_products(xp, prepared, dilations, out_shape, group).reshape(out_dims)
    elif in_float32:
        cols = _im2col(xp, kernel, strides, dilations, out_shape, group, bias is not None)
        values = prepared.augmented if bias is not None else wg.values
        if n == 1 and group == 1:
            return np.matmul(values[0], cols[0, 0]).reshape(out_dims)
        return np.matmul(values, cols).reshape(out_dims)
    else:
        cols = _im2col(xp, kernel, strides, dilations, out_shape, group, False)
        acc = exact_matmul(wg, MatmulOperand(cols, x_bound)).reshape(out_dims)
    if bias is not None:
        acc = add_bias(acc, bias.reshape((1, m) + (1,) * len(out_shape)))
    return acc


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
        group = int(self.attr("group", 1))
        strides = ints(self.attr("strides"), nd, 1)
        dilations = ints(self.attr("dilations"), nd, 1)
        pads = conv_pads(self.attr("auto_pad", "NOTSET"), x.codes.shape[2:], kernel, strides, dilations, self.attr("pads"))
        acc_scale = (scale32(x.qp) * np.asarray(w.qp.scale, dtype=np.float32)).astype(np.float32)
        b = inputs[2] if len(inputs) > 2 else None

        def prepare() -> ConvWeight:
            bias = None
            if b is not None:
                m = w.codes.shape[0]
                bias = np.rint(np.asarray(b, dtype=np.float64).reshape(-1) / np.broadcast_to(acc_scale, (m,)).astype(np.float64))
                bias = np.clip(bias, INT32_MIN, INT32_MAX).astype(np.int64)
            return conv_weight(w, group, bias)

        if self.constant(1, w) is not None and (b is None or self.constant(2, b) is not None):
            weight = self.prepared(1, (w, b, x.qp), prepare)
        else:
            weight = prepare()
        acc = conv_accumulate(x, w, group, strides, dilations, pads, weight)
        requantize = self.requantizer((x.qp, w.qp), lambda: real_multiplier(acc_scale, out=out), out, axis=1)
        return (requantize(acc),)
