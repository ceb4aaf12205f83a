"""The float reference executor: numpy kernels run in topological order.

``run(model, feeds)`` returns the graph outputs; ``intermediate=True`` returns every
tensor by name (inputs, weights read by nodes, every node output). Intermediates are freed
after their last use unless kept. A ``hook(node, inputs, outputs)`` sees every node's
outputs and may return replacements (the int8 paths use this to substitute values).

Buffer reuse: when a node is the last reader of an intermediate tensor and the kernel can
write its output over that input (``OpKernel.reuses``), the executor hands the buffer over
through ``kernel.run_reusing``. It does so only for tensors produced by earlier nodes (never
graph inputs, weights, graph outputs or tensors kept for the caller), never with a hook or
``intermediate=True``, never for a tensor read twice by the node, and only when, at that
moment, the executor's own table holds the sole reference to an array that owns its memory
(``base is None``, writeable): a live view of it (a Reshape or Transpose output) or any
other holder (a weight cache, a Constant kernel, the caller) keeps a reference and so
blocks the reuse. Without ``sys.getrefcount`` (not CPython) or without the GIL there is
no reuse.
"""

from __future__ import annotations

import sys
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from engine.errors import ModelError
from engine.graph import Model, Node
from engine.memory import check_allocation, check_declared
from engine.ops import make_kernel, unsupported_reason

Hook = Callable[[Node, Sequence[np.ndarray | None], tuple[np.ndarray, ...]], Sequence[np.ndarray] | None]
ProgressFn = Callable[[int, int], None]


def unsupported_ops(model: Model) -> dict[str, str]:
    """Op name -> why it cannot run, for every op in the model the executor cannot run."""
    result: dict[str, str] = {}
    for node in model.graph.nodes:
        if node.qualified_op in result:
            continue
        reason = unsupported_reason(node, model.opsets.get(node.domain, model.opset))
        if reason:
            result[node.qualified_op] = reason
    return result


def _table_refs(values: dict[str, np.ndarray], name: str) -> int:
    """``sys.getrefcount`` of ``values[name]`` as seen from here (table entry + call temporaries)."""
    return sys.getrefcount(values[name])


def _calibrate_sole_refs() -> int:
    """The count :func:`_table_refs` reports for an array referenced only by the table
    (measured, so interpreter versions that count temporaries differently stay correct);
    0 disables buffer reuse."""
    if not hasattr(sys, "getrefcount"):
        return 0
    is_gil_enabled = getattr(sys, "_is_gil_enabled", None)
    if is_gil_enabled is not None and not is_gil_enabled():
        return 0  # free-threaded CPython: another thread's references are not reliably counted
    table = {"probe": np.empty(4, dtype=np.float32)}
    return _table_refs(table, "probe")


_SOLE_REFS = _calibrate_sole_refs()


def _sole_owner(values: dict[str, np.ndarray], name: str) -> bool:
    """Whether ``values[name]`` is an ndarray owning writeable memory that nothing but the
    value table references (no views of it, no other holder)."""
    value = values[name]
    if type(value) is not np.ndarray or value.base is not None or not value.flags.writeable:
        return False
    del value
    return _table_refs(values, name) <= _SOLE_REFS


class Executor:
    """A prepared plan for one model: kernels built once, buffers freed after last use."""

    def __init__(self, model: Model) -> None:
        # the graph and the file path, not the model: the model caches its executor
        # (executor_for), and a model <-> executor cycle would outlive the model's last
        # reference until a full garbage collection (a replaced model's arrays stayed)
        self.graph = model.graph
        self.path = model.path
        graph = model.graph
        check_declared(graph.tensors.values(), model.path)  # refuse what cannot fit before running
        missing = unsupported_ops(model)
        if missing:
            names = ", ".join(f"{op} ({why})" if not why.startswith("no kernel") else op for op, why in missing.items())
            raise ModelError(f"cannot execute: unsupported ops: {names}", model.path)
        self.kernels = [make_kernel(n, model.opsets.get(n.domain, model.opset)) for n in graph.nodes]
        outputs = set(graph.output_names)
        self.last_use: dict[str, int] = {}
        for i, node in enumerate(graph.nodes):
            for name in node.inputs:
                if name:
                    self.last_use[name] = i
        # tensors freed after node i: read last by it, not graph outputs, not weights
        self.free_after: list[list[str]] = [[] for _ in graph.nodes]
        for name, i in self.last_use.items():
            if name not in outputs and name not in graph.weights:
                self.free_after[i].append(name)
        # outputs never read by anyone and not graph outputs die right away
        self.dead_outputs: list[list[str]] = [
            [o for o in n.outputs if o and o not in self.last_use and o not in outputs] for n in graph.nodes
        ]
        # per node, (input position, tensor) pairs whose buffer the kernel may take over: the
        # node is the tensor's last reader and reads it once, an earlier node produced it,
        # and it is no graph output, graph input or weight
        produced = {o for n in graph.nodes for o in n.outputs if o} - set(graph.input_names)
        self.reuse_candidates: list[tuple[tuple[int, str], ...]] = []
        for i, (node, kernel) in enumerate(zip(graph.nodes, self.kernels)):
            self.reuse_candidates.append(tuple(
                (pos, node.inputs[pos])
                for pos in kernel.reuses
                if pos < len(node.inputs)
                and node.inputs[pos] in produced
                and node.inputs[pos] not in outputs
                and node.inputs[pos] not in graph.weights
                and self.last_use.get(node.inputs[pos]) == i
                and node.inputs.count(node.inputs[pos]) == 1
            ))
        # where each node's inputs come from: True = the value table, False = the weights
        self._from_values: list[tuple[tuple[str, bool], ...]] = [
            tuple((name, name not in graph.weights) for name in node.inputs) for node in graph.nodes
        ]

    def check_feeds(self, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Validate feeds against the declared inputs; returns them as arrays of the declared dtype."""
        graph = self.graph
        path = self.path
        result: dict[str, np.ndarray] = {}
        extra = sorted(set(feeds) - set(graph.input_names) - set(graph.weights))
        if extra:
            raise ModelError(f"feed {extra[0]!r} is not an input of the model (inputs: {', '.join(graph.input_names)})", path)
        for info in graph.inputs:
            if info.name not in feeds:
                raise ModelError(f"input {info.name!r} has no value", path)
            value = np.asarray(feeds[info.name])
            if info.dtype is not None and value.dtype != info.dtype:
                kind_ok = np.can_cast(value.dtype, info.dtype, casting="same_kind") or (
                    value.dtype.kind in "iu" and info.dtype.kind in "iu"
                )
                if not kind_ok:
                    raise ModelError(
                        f"input {info.name!r}: expected {info.dtype} values, got {value.dtype}", path
                    )
                value = value.astype(info.dtype)
            if info.shape is not None:
                ok = value.ndim == len(info.shape) and all(
                    not isinstance(d, int) or d == s for d, s in zip(info.shape, value.shape)
                )
                if not ok:
                    want = "(" + ", ".join(str(d) for d in info.shape) + ")"
                    raise ModelError(f"input {info.name!r}: expected shape {want}, got {tuple(value.shape)}", path)
            result[info.name] = value
        for name in feeds:
            if name in graph.weights and name not in result:
                result[name] = np.asarray(feeds[name])  # an override of an initializer
        return result

    def run(
        self,
        feeds: Mapping[str, np.ndarray],
        intermediate: bool = False,
        keep: Iterable[str] = (),
        hook: Hook | None = None,
        progress: ProgressFn | None = None,
    ) -> dict[str, np.ndarray]:
        """Execute once. Returns graph outputs, plus every tensor when ``intermediate``,
        plus the tensors named in ``keep``."""
        graph = self.graph
        values: dict[str, np.ndarray] = dict(self.check_feeds(feeds))
        weights = graph.weights
        kept = set(keep)
        collected: dict[str, np.ndarray] = dict(values) if intermediate else {}
        collecting = intermediate or bool(kept)
        reuse = _SOLE_REFS > 0 and hook is None and not intermediate
        total = len(graph.nodes)
        reuse_candidates = self.reuse_candidates
        for i, (node, kernel) in enumerate(zip(graph.nodes, self.kernels)):
            reusable: tuple[int, ...] = ()
            if reuse and reuse_candidates[i]:
                reusable = tuple(
                    pos for pos, name in reuse_candidates[i] if name not in kept and _sole_owner(values, name)
                )
            args: list[np.ndarray | None] = []
            for name, in_values in self._from_values[i]:
                if not name:
                    args.append(None)
                elif in_values or name in values:  # a feed may override an initializer
                    args.append(values[name])
                else:
                    w = weights[name]
                    args.append(w)
                    if intermediate:
                        collected[name] = w
            try:
                outs = kernel.run_reusing(reusable, *args) if reusable else kernel.run(*args)
            except ModelError as e:
                if e.path is None:  # a kernel's refusal (e.g. a tensor too large): say where
                    where = "" if e.problem.startswith(f"node {node.name} ") else f"node {node.name} ({node.op_type}): "
                    raise ModelError(f"{where}{e.problem}", self.path) from None
                raise
            except (ValueError, IndexError, TypeError, ZeroDivisionError, OverflowError, MemoryError) as e:
                detail = " ".join(str(e).split())[:200] or type(e).__name__
                raise ModelError(f"node {node.name} ({node.op_type}) failed: {detail}", self.path) from None
            if hook is not None:
                replaced = hook(node, args, outs)
                if replaced is not None:
                    outs = tuple(replaced)
            for name, value in zip(node.outputs, outs):
                if name:
                    values[name] = value
                    if collecting and (intermediate or name in kept):
                        collected[name] = value
            # drop this frame's references before the next node's sole-owner checks
            args = outs = value = None  # type: ignore[assignment]
            for name in self.free_after[i]:
                values.pop(name, None)
            for name in self.dead_outputs[i]:
                values.pop(name, None)
            if progress is not None:
                progress(i + 1, total)
        for name in graph.output_names:
            if name in values:
                collected[name] = values[name]
            elif name in weights:
                collected[name] = np.asarray(weights[name])
        return collected


def executor_for(model: Model) -> Executor:
    """The model's cached Executor (built on first use)."""
    plan = getattr(model, "_executor", None)
    if plan is None:
        plan = Executor(model)
        model._executor = plan  # type: ignore[attr-defined]
    return plan


def executor_with_weights(model: Model) -> Executor:
    """:func:`executor_for` with every embedded weight read (external ones stay mapped):
    called before forking worker processes, which then share one copy of the kernels'
    imports and the weights (copy-on-write, never written) instead of each building and
    reading them again on its first sample."""
    executor = executor_for(model)
    weights = model.graph.weights
    for name in weights:
        weights[name]
    return executor


def run(
    model: Model,
    feeds: Mapping[str, np.ndarray],
    intermediate: bool = False,
    keep: Iterable[str] = (),
    hook: Hook | None = None,
    progress: ProgressFn | None = None,
) -> dict[str, np.ndarray]:
    """Run the float model on ``feeds`` (input name -> array); see :class:`Executor`."""
    return executor_for(model).run(feeds, intermediate=intermediate, keep=keep, hook=hook, progress=progress)


def random_feeds(model: Model, seed: int = 0, batch: int = 1) -> dict[str, np.ndarray]:
    """Deterministic random inputs of the declared shapes and dtypes.

    Unbound symbolic dimensions must be bound first (``load_model(..., dims=...)``);
    a leading unknown batch dimension is set to ``batch``.
    """
    rng = np.random.default_rng(seed)
    feeds: dict[str, np.ndarray] = {}
    for info in model.graph.inputs:
        if info.shape is None:
            raise ModelError(f"input {info.name!r} has no declared shape; give --inputs", model.path)
        shape: list[int] = []
        for axis, d in enumerate(info.shape):
            if isinstance(d, int):
                shape.append(d)
            elif axis == 0:
                shape.append(batch)
            else:
                raise ModelError(
                    f"input {info.name!r} has symbolic dimension {d!r}; bind it with --dim {d}=N", model.path
                )
        dtype = info.dtype or np.dtype(np.float32)
        check_allocation(shape, np.float64, f"input {info.name!r}", model.path)  # drawn in float64
        if dtype.kind == "f":
            feeds[info.name] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[info.name] = rng.integers(0, 2, size=shape).astype(bool)
        elif dtype.kind in "iu":
            feeds[info.name] = rng.integers(0, 8, size=shape).astype(dtype)
        else:
            raise ModelError(f"input {info.name!r}: cannot make random values of type {dtype}", model.path)
    return feeds
