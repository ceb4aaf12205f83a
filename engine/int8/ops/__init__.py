"""Integer kernels of the int8 executor, one class per ONNX op, registered in a table.

The int8 twin of :mod:`engine.ops`: adding an integer op is adding one class (in any module
of this package) decorated with :func:`register_int`. A kernel is built once per node with
the node's float kernel (reused on codes by data-movement ops) and the plan's rounding
mode, then called as ``kernel.run(inputs, out_params)``:

- ``inputs``: one entry per node input, ``None`` for omitted optional inputs; a
  :class:`QTensor` for quantized inputs, except the indices in ``float_inputs`` (parameters
  such as a bias, BatchNorm statistics or LayerNorm gamma/beta), which arrive as float
  arrays; non-float tensors (int64 shapes and indices) arrive as they are.
- ``out_params``: the plan's QParams of each output (None when the plan has none).
- returns one value per node output: a QTensor in ``out_params`` (or, for pass-through
  ops without output QParams, in the input's parameters) or a non-float array.

Every kernel is "integer math, then requantize": exact integer arithmetic on the codes and
one requantization (:func:`engine.int8.qtensor.requantize_acc`). A kernel that cannot run
a node as configured raises :class:`NotInteger`; the executor then runs that node on the
float-fallback path. Ops without an integer kernel always do.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, ClassVar, Sequence

import numpy as np

from engine.graph import Node
from engine.int8.plan import Rounding
from engine.int8.qtensor import NotInteger, QTensor, Value
from engine.ops import OpKernel
from engine.quant.qparams import QParams

INT_REGISTRY: dict[tuple[str, str], type["IntKernel"]] = {}
_loaded = False


class IntKernel:
    """Base class of every integer kernel: attribute access, input checks, the call convention."""

    op_type: ClassVar[str] = ""
    domain: ClassVar[str] = ""
    float_inputs: ClassVar[frozenset[int]] = frozenset()
    """Input indices taken as float arrays (parameters folded into integer constants)."""

    def __init__(self, node: Node, opset: int, rounding: Rounding, float_kernel: OpKernel | None) -> None:
        self.node = node
        self.attrs = node.attrs
        self.opset = opset
        self.rounding = rounding
        self.float_kernel = float_kernel

    def attr(self, name: str, default: Any = None) -> Any:
        """An attribute's value, or ``default`` when the node does not set it."""
        return self.attrs.get(name, default)

    def const_params(self, index: int, value: np.ndarray, out_params: Sequence[QParams | None]) -> QParams | None:
        """QParams for a float constant (initializer) at input ``index`` that the plan does not
        list, or None for the executor's default (per-tensor symmetric, the weight dtype)."""
        return None

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:  # pragma: no cover - abstract
        raise NotImplementedError(f"integer kernel {type(self).__name__} has no run")


def register_int(cls: type[IntKernel]) -> type[IntKernel]:
    """Class decorator: put an integer kernel into the registry under (domain, op_type)."""
    if not cls.op_type:
        raise ValueError(f"{cls.__name__} has no op_type")
    domain = "" if cls.domain in ("", "ai.onnx") else cls.domain
    key = (domain, cls.op_type)
    if key in INT_REGISTRY and INT_REGISTRY[key] is not cls:
        raise ValueError(f"integer op {cls.op_type} registered twice ({INT_REGISTRY[key].__name__}, {cls.__name__})")
    INT_REGISTRY[key] = cls
    return cls


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    _loaded = True


def int_kernel_class(op_type: str, domain: str = "") -> type[IntKernel] | None:
    """The integer kernel class registered for an op, or None (the op runs float-fallback)."""
    _load_all()
    domain = "" if domain in ("", "ai.onnx") else domain
    return INT_REGISTRY.get((domain, op_type))


def integer_ops() -> list[str]:
    """Names of all ops with an integer kernel, sorted."""
    _load_all()
    return sorted(op if dom == "" else f"{dom}::{op}" for dom, op in INT_REGISTRY)


# ------------------------------------------------------------------ helpers for kernels


def qinput(value: Value | None, what: str) -> QTensor:
    """The quantized input ``what`` (NotInteger when it is missing or not quantized)."""
    if not isinstance(value, QTensor):
        raise NotInteger(f"{what} is not a quantized tensor")
    return value


def out_param(out_params: Sequence[QParams | None], index: int = 0) -> QParams:
    """The plan's QParams of output ``index`` (NotInteger when the plan has none)."""
    qp = out_params[index] if index < len(out_params) else None
    if qp is None:
        raise NotInteger(f"output {index} has no QParams in the plan")
    return qp


__all__ = [
    "INT_REGISTRY",
    "IntKernel",
    "NotInteger",
    "int_kernel_class",
    "integer_ops",
    "out_param",
    "qinput",
    "register_int",
]
