"""Completing tensor shapes that static inference could not resolve.

ONNX shape inference (run by the loader, with symbolic dims bound) resolves most graphs.
Where a shape depends on computed values it cannot follow, ``complete_shapes`` runs the
float executor once on deterministic inputs and records every tensor's shape and dtype.
"""

from __future__ import annotations

from engine.errors import ModelError
from engine.executor import Executor, random_feeds, unsupported_ops
from engine.graph import Model, TensorInfo

# weights larger than this are not read just to learn shapes (bytes)
MAX_WEIGHT_BYTES_FOR_EXECUTION = 1 << 30


def unknown_tensors(model: Model) -> list[str]:
    """Names of node outputs whose shape or dtype is not fully known."""
    g = model.graph
    return [o for n in g.nodes for o in n.outputs if o and not (g.tensor(o).is_static and g.tensor(o).dtype is not None)]


def complete_shapes(model: Model) -> list[str]:
    """Fill unknown shapes by one execution; returns the names still unknown afterwards.

    Skipped (everything unknown stays unknown) when an input has an unbound symbolic
    dimension, an op has no kernel, or the weights exceed MAX_WEIGHT_BYTES_FOR_EXECUTION.
    """
    missing = unknown_tensors(model)
    if not missing:
        return []
    g = model.graph
    if any(not t.is_static for t in g.inputs) or unsupported_ops(model):
        return missing
    if sum(g.weights.nbytes(n) for n in g.weights) > MAX_WEIGHT_BYTES_FOR_EXECUTION:
        return missing
    try:
        feeds = random_feeds(model, seed=0)
        seen: dict[str, TensorInfo] = {}

        def record(node, inputs, outputs):
            for name, value in zip(node.outputs, outputs):
                if name:
                    seen[name] = TensorInfo(name, tuple(int(d) for d in value.shape), value.dtype)
            return None

        Executor(model).run(feeds, hook=record)
    except ModelError:
        return missing
    g.tensors.update(seen)
    return unknown_tensors(model)
