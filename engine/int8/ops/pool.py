"""Integer average pooling (layout N, C, *spatial): an exact integer sum of centred codes,
then one requantization by ``s_in / (s_out * count)``.

AveragePool pads with the zero point (centred value 0); its window count follows the
float kernel (``count_include_pad`` counts declared pads, never ceil_mode's extra), so the
multiplier varies per output position where windows overlap the border: it is applied per
flattened output position. MaxPool and GlobalMaxPool are pass-through ops (the maximum of
codes is the code of the maximum): see :mod:`engine.int8.ops.data`.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import numpy as np

from engine.int8.ops import IntKernel, NotInteger, out_param, qinput, register_int
from engine.int8.qtensor import (
    QTensor,
    Value,
    centered,
    real_multiplier,
    requantize_acc,
    scale32,
)
from engine.ops.conv import ints, pad_spatial, tap_slices
from engine.ops.pool import pool_geometry
from engine.quant.qparams import QParams


@register_int
class AveragePool(IntKernel):
    """Window mean: int32 window sums of ``q - zp`` (pads contribute 0), requantized per position."""

    op_type = "AveragePool"

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        x = qinput(inputs[0], "input X")
        out = out_param(out_params)
        if x.qp.per_channel:
            raise NotInteger("AveragePool input per channel")
        codes = x.codes
        nd = codes.ndim - 2
        shape = self.attr("kernel_shape")
        if shape is None:
            raise ValueError("kernel_shape attribute is missing")
        geo = pool_geometry(
            codes.shape[2:],
            [int(k) for k in shape],
            ints(self.attr("strides"), nd, 1),
            ints(self.attr("dilations"), nd, 1),
            self.attr("auto_pad", "NOTSET"),
            self.attr("pads"),
            bool(self.attr("ceil_mode", 0)),
        )
        ends = [e + more for e, more in zip(geo.ends, geo.extra)]
        xp = pad_spatial(centered(x), geo.begins, ends, 0)
        include_pad = bool(self.attr("count_include_pad", 0))
        ones = np.ones((1, 1) + tuple(codes.shape[2:]), dtype=np.int32)
        mask = pad_spatial(ones, geo.begins, geo.ends, 1 if include_pad else 0)
        mask = pad_spatial(mask, [0] * nd, geo.extra, 0)
        total = np.zeros(codes.shape[:2] + tuple(geo.out_shape), dtype=np.int32)
        count = np.zeros((1, 1) + tuple(geo.out_shape), dtype=np.int32)
        for tap in itertools.product(*(range(k) for k in geo.kernel)):
            window = (slice(None), slice(None)) + tap_slices(tap, geo.dilations, geo.strides, geo.out_shape)
            total += xp[window]
            count += mask[window]
        per_position = 1.0 / np.maximum(count, 1).reshape(-1).astype(np.float64)
        multiplier = real_multiplier(scale32(x.qp), out=out) * per_position
        flat = total.reshape(codes.shape[0], codes.shape[1], -1)
        y = requantize_acc(flat, multiplier, out, self.rounding, axis=2)
        y = QTensor(y.codes.reshape(total.shape), y.qp, y.clipped)
        return (y,)


def mean_of_sum(x_sum: np.ndarray, count: int, in_scale: np.float32, out: QParams, rounding: str) -> QTensor:
    """Requantize an integer sum of ``count`` centred codes as their mean."""
    return requantize_acc(x_sum, real_multiplier(in_scale, out=out) / float(max(count, 1)), out, rounding)


@register_int
class GlobalAveragePool(IntKernel):
    """Mean over all spatial axes: int64 sums, requantized by ``s_in / (s_out * H * W)``."""

    op_type = "GlobalAveragePool"

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        x = qinput(inputs[0], "input X")
        out = out_param(out_params)
        if x.qp.per_channel:
            raise NotInteger("GlobalAveragePool input per channel")
        axes = tuple(range(2, x.codes.ndim))
        total = centered(x).sum(axis=axes, keepdims=True, dtype=np.int64)
        count = int(np.prod([x.codes.shape[a] for a in axes], dtype=np.int64))
        return (mean_of_sum(total, count, scale32(x.qp), out, self.rounding),)
