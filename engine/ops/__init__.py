"""Operator kernels, one class per ONNX op, registered in a table.

Adding an op is adding one class (in any module of this package) decorated with
``@register``; every module here is imported on first use of the registry.

A kernel is built once per node (``__init__`` may precompute from attributes) and then
called as ``kernel.run(*inputs)``; omitted optional inputs arrive as ``None``. ``_run``
returns one array or a tuple of arrays, one per node output. Kernels keep the input
dtype (float32 stays float32) and use vectorised numpy only.

Buffer reuse: a kernel whose class lists input positions in ``reuses`` may be called as
``kernel.run_reusing(reusable, *inputs)`` by an executor that knows those inputs are dead
(nobody reads them again; see :mod:`engine.executor`). It may then write its output into
``inputs[i]`` for ``i`` in ``reusable`` and return that array, saving an allocation and a
pass over fresh memory. ``run(*inputs)`` never writes into its inputs.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any, ClassVar

import numpy as np

from engine.graph import Node

REGISTRY: dict[tuple[str, str], type["OpKernel"]] = {}
_loaded = False


class OpKernel:
    """Base class of every kernel: attribute access and the call convention."""

    op_type: ClassVar[str] = ""
    domain: ClassVar[str] = ""
    #: input positions whose buffer this kernel can take over for its output (``run_reusing``)
    reuses: ClassVar[tuple[int, ...]] = ()

    def __init__(self, node: Node, opset: int) -> None:
        self.node = node
        self.attrs = node.attrs
        self.opset = opset

    def attr(self, name: str, default: Any = None) -> Any:
        """An attribute's value, or ``default`` when the node does not set it."""
        return self.attrs.get(name, default)

    @classmethod
    def unsupported_reason(cls, node: Node, opset: int) -> str | None:
        """Why this kernel cannot run ``node`` (e.g. an attribute value it lacks), or None."""
        return None

    def run(self, *inputs: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """The node's outputs, one array per output; the inputs are left untouched."""
        result = self._run(*inputs)
        if type(result) is tuple:
            return result
        if isinstance(result, list):
            return tuple(result)
        return (result,)

    def run_reusing(self, reusable: tuple[int, ...], *inputs: np.ndarray | None) -> tuple[np.ndarray, ...]:
        """Like :meth:`run`, but ``inputs[i]`` for every ``i`` in ``reusable`` (positions from
        ``reuses``) are dead buffers the kernel may overwrite and return as an output.

        The caller guarantees that nothing else references those arrays (no views of them,
        not weights, graph inputs or kept tensors) and never reads them after the call.
        """
        result = self._run_reusing(reusable, *inputs) if reusable else self._run(*inputs)
        if type(result) is tuple:
            return result
        if isinstance(result, list):
            return tuple(result)
        return (result,)

    def _run(self, *inputs: np.ndarray | None) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError(f"kernel {type(self).__name__} has no _run")

    def _run_reusing(self, reusable: tuple[int, ...], *inputs: np.ndarray | None) -> Any:
        """``_run`` writing into a reusable input where it can; the default ignores them."""
        return self._run(*inputs)


def register(cls: type[OpKernel]) -> type[OpKernel]:
    """Class decorator: put a kernel into the registry under (domain, op_type)."""
    if not cls.op_type:
        raise ValueError(f"{cls.__name__} has no op_type")
    domain = "" if cls.domain in ("", "ai.onnx") else cls.domain
    key = (domain, cls.op_type)
    if key in REGISTRY and REGISTRY[key] is not cls:
        raise ValueError(f"op {cls.op_type} registered twice ({REGISTRY[key].__name__}, {cls.__name__})")
    REGISTRY[key] = cls
    return cls


def _load_all() -> None:
    global _loaded
    if _loaded:
        return
    for module in pkgutil.iter_modules(__path__):
        importlib.import_module(f"{__name__}.{module.name}")
    _loaded = True


def kernel_class(op_type: str, domain: str = "") -> type[OpKernel] | None:
    """The kernel class registered for an op, or None."""
    _load_all()
    domain = "" if domain in ("", "ai.onnx") else domain
    return REGISTRY.get((domain, op_type))


def supported_ops() -> list[str]:
    """Names of all ops with a kernel (default domain without prefix), sorted."""
    _load_all()
    return sorted(op if dom == "" else f"{dom}::{op}" for dom, op in REGISTRY)


def unsupported_reason(node: Node, opset: int) -> str | None:
    """Why ``node`` cannot be executed, or None when a kernel can run it."""
    cls = kernel_class(node.op_type, node.domain)
    if cls is None:
        return f"no kernel for op {node.qualified_op}"
    return cls.unsupported_reason(node, opset)


def make_kernel(node: Node, opset: int) -> OpKernel:
    """Build the kernel for one node (raises KeyError when the op has none)."""
    cls = kernel_class(node.op_type, node.domain)
    if cls is None:
        raise KeyError(node.qualified_op)
    return cls(node, opset)
