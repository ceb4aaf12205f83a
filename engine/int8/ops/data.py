"""Data-movement kernels on codes: Reshape, Transpose, Flatten, Squeeze, Unsqueeze, Slice,
Gather (on data), Split, Expand, Tile, Identity, Dropout, DepthToSpace, SpaceToDepth,
MaxPool and GlobalMaxPool pass the codes through the op's FLOAT kernel (which is generic
over dtypes) and keep the input's QParams; Concat first requantizes every input to the
output's QParams.

A plan made consistent by :func:`engine.int8.plan.propagate_passthrough` gives a
pass-through output the QParams of its input, and the codes leave untouched. When the
plan gives different QParams, the codes are requantized to them (an extra integer rescale,
as a compiler would insert); when it gives none, the output keeps the input's.
Per-channel QParams pass only through Identity and Dropout. Shape and Size read the codes'
shape (no dequantization).
"""

from __future__ import annotations

from typing import ClassVar, Sequence

import numpy as np

from engine.int8.ops import IntKernel, NotInteger, out_param, qinput, register_int
from engine.int8.plan import AXIS_KEEPING_OPS, PASSTHROUGH_OPS
from engine.int8.qtensor import QTensor, Value, is_float, rescale
from engine.quant.qparams import QParams


class PassThrough(IntKernel):
    """Codes through the float kernel; data outputs keep the data input's QParams."""

    all_outputs: ClassVar[bool] = False
    """True when every output is data (Split); else only output 0 is (MaxPool's indices,
    Dropout's mask are not)."""

    def const_params(self, index: int, value: np.ndarray, out_params: Sequence[QParams | None]) -> QParams | None:
        return out_params[0] if index == 0 and out_params else None

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        x = qinput(inputs[0], "data input")
        if x.qp.per_channel and self.op_type not in AXIS_KEEPING_OPS:
            raise NotInteger(f"{self.op_type} of a per-channel tensor")
        rest = list(inputs[1:])
        if any(isinstance(v, QTensor) for v in rest):
            raise NotInteger(f"{self.op_type} with quantized non-data inputs")
        assert self.float_kernel is not None
        outs = self.float_kernel.run(x.codes, *rest)
        result: list[Value] = []
        for i, value in enumerate(outs):
            if i == 0 or self.all_outputs:
                target = out_params[i] if i < len(out_params) else None
                result.append(rescale(QTensor(np.asarray(value), x.qp), target, self.rounding))
            else:
                result.append(value)
        return tuple(result)


def _passthrough(op: str) -> type[IntKernel]:
    attrs: dict[str, object] = {
        "op_type": op,
        "all_outputs": op == "Split",
        "float_inputs": frozenset({1}) if op == "Dropout" else frozenset(),
        "__doc__": f"{op} on codes (pass-through: the data input's QParams).",
        "__module__": __name__,
    }
    return register_int(type(op, (PassThrough,), attrs))


for _op in sorted(PASSTHROUGH_OPS):
    _passthrough(_op)


@register_int
class Concat(IntKernel):
    """Join along ``axis`` after requantizing every input to the output's QParams."""

    op_type = "Concat"

    def const_params(self, index: int, value: np.ndarray, out_params: Sequence[QParams | None]) -> QParams | None:
        return out_params[0] if out_params else None

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        out = out_param(out_params)
        parts = [v for v in inputs if v is not None]
        if not all(is_float(v) for v in parts):
            raise NotInteger("Concat of quantized and non-float tensors")
        moved = [rescale(qinput(v, "Concat input"), out, self.rounding) for v in parts]
        assert self.float_kernel is not None
        (codes,) = self.float_kernel.run(*[m.codes for m in moved])
        return (QTensor(codes, out, sum(m.clipped for m in moved)),)


class _ShapeOf(IntKernel):
    """An op that reads only the shape of its input: the float kernel run on the codes."""

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:
        x = qinput(inputs[0], "input")
        assert self.float_kernel is not None
        return tuple(self.float_kernel.run(x.codes, *inputs[1:]))


for _op in ("Shape", "Size"):
    register_int(type(_op, (_ShapeOf,), {"op_type": _op, "__doc__": f"{_op} of a quantized tensor (its codes' shape).", "__module__": __name__}))
