"""Integer ReduceMean: an int64 sum of centred codes over the node's axes, then one
requantization by ``s_in / (s_out * count)`` (as average pooling)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from engine.int8.ops import IntKernel, NotInteger, out_param, qinput, register_int
from engine.int8.ops.pool import mean_of_sum
from engine.int8.qtensor import Value, centered, rescale, scale32
from engine.quant.qparams import QParams


@register_int
class ReduceMean(IntKernel):
    """Mean over the node's axes (attribute or input, as the float kernel reads them): int64
    sums of centred codes, requantized by ``s_in / (s_out * count)``."""

    op_type = "ReduceMean"

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        x = qinput(inputs[0], "input X")
        out = out_param(out_params)
        if x.qp.per_channel:
            raise NotInteger("ReduceMean input per channel")
        axes_input = inputs[1] if len(inputs) > 1 else None
        axes = self.float_kernel._axes(x.codes, axes_input)  # type: ignore[union-attr]
        keepdims = bool(int(self.attr("keepdims", 1)))
        if not axes:
            return (rescale(x, out, self.rounding),)
        total = centered(x).sum(axis=axes, keepdims=keepdims, dtype=np.int64)
        count = int(np.prod([x.codes.shape[a] for a in axes], dtype=np.int64))
        return (mean_of_sum(total, count, scale32(x.qp), out, self.rounding),)
