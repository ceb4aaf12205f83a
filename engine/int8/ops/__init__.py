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
from typing import Any, Callable, ClassVar, Hashable, Sequence, TypeVar

import numpy as np

from engine.graph import Node
from engine.int8.plan import Rounding
from engine.int8.qtensor import NotInteger, QTensor, Requantizer, Value
from engine.ops import OpKernel
from engine.quant.qparams import QParams

INT_REGISTRY: dict[tuple[str, str], type["IntKernel"]] = {}
_loaded = False
T = TypeVar("T")


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
        self.constant_inputs: frozenset[int] = frozenset()
        """Input indices that are model constants (initializers): set by the executor; their
        prepared forms (:meth:`prepared`) are kept between runs."""
        self._prepared: dict[Hashable, tuple[object, Any]] = {}

    def constant(self, index: int, value: object) -> tuple[IntKernel, int, object] | None:
        """``(self, index, value)`` when input ``index`` is a constant of the model (its
        prepared form may be cached, see :meth:`prepared`), else None."""
        return (self, index, value) if index in self.constant_inputs and value is not None else None

    def prepared(self, index: Hashable, source: object, build: Callable[[], T]) -> T:
        """``build()`` for slot ``index`` (a constant input's index, or a name) derived from
        ``source`` (the input value, or a tuple of the objects and numbers it depends on),
        computed once and reused while the same ``source`` objects arrive (the executor
        passes the same quantized constants and the plan's QParams objects every run; a
        new object rebuilds). One entry per slot."""
        entry = self._prepared.get(index)
        if entry is not None and _same_source(entry[0], source):
            return entry[1]  # type: ignore[no-any-return]
        value = build()
        self._prepared[index] = (source, value)
        return value

    def requantizer(
        self, sources: tuple[object, ...], multiplier: Callable[[], float | np.ndarray], out: QParams, axis: int = -1, slot: str = ""
    ) -> Requantizer:
        """The node's :class:`Requantizer` to ``out`` (per channel along ``axis``) with the real
        multiplier ``multiplier()``, which depends only on ``sources`` (the input QParams and
        numbers it is computed from): built once per distinct sources."""
        key = ("requantizer", slot)
        source = (*sources, out, axis)
        entry = self._prepared.get(key)
        if entry is not None and _same_source(entry[0], source):
            return entry[1]  # type: ignore[no-any-return]
        requantizer = Requantizer(multiplier(), out, self.rounding, axis)
        self._prepared[key] = (source, requantizer)
        return requantizer

    def attr(self, name: str, default: Any = None) -> Any:
        """An attribute's value, or ``default`` when the node does not set it."""
        return self.attrs.get(name, default)

    def const_params(self, index: int, value: np.ndarray, out_params: Sequence[QParams | None]) -> QParams | None:
        """QParams for a float constant (initializer) at input ``index`` that the plan does not
        list, or None for the executor's default (per-tensor symmetric, the weight dtype)."""
        return None

    def run(self, inputs: Sequence[Value | None], out_params: Sequence[QParams | None]) -> tuple[Value, ...]:  # pragma: no cover - abstract
        raise NotImplementedError(f"integer kernel {type(self).__name__} has no run")


_PLAIN = (int, float, str, tuple)


def _same_source(cached: object, source: object) -> bool:
    """Identity of a prepared value's source; tuples element by element (``is``, or ``==``
    for plain numbers, strings and tuples of them such as shapes)."""
    if cached is source:
        return True
    if type(cached) is not tuple or type(source) is not tuple or len(cached) != len(source):  # type: ignore[arg-type]
        return False
    for a, b in zip(cached, source):  # type: ignore[call-overload]
        if a is not b and not (type(a) in _PLAIN and type(a) is type(b) and a == b):
            return False
    return True


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
