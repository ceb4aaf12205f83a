"""A model at a glance: what ``inspector info`` prints and the GUI's model summary shows."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from engine.cost import model_cost
from engine.executor import unsupported_ops
from engine.graph import Model, TensorInfo
from engine.shapes import complete_shapes


def _tensor_dict(t: TensorInfo) -> dict[str, Any]:
    return {
        "name": t.name,
        "shape": None if t.shape is None else list(t.shape),
        "dtype": None if t.dtype is None else str(t.dtype),
    }


@dataclass
class ModelInfo:
    """Counts and facts of one model. ``macs`` counts multiply-accumulates (0 for unknown shapes)."""

    path: str
    nodes: int
    op_types: dict[str, int]
    opset: int
    opsets: dict[str, int]
    ir_version: int
    producer: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    params: int
    param_bytes: int
    external_weights: int
    macs: int
    shapes_complete: bool
    symbolic_dims: list[str]
    dims: dict[str, int]
    unsupported_ops: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "nodes": self.nodes,
            "op_types": self.op_types,
            "opset": self.opset,
            "opsets": self.opsets,
            "ir_version": self.ir_version,
            "producer": self.producer,
            "inputs": [_tensor_dict(t) for t in self.inputs],
            "outputs": [_tensor_dict(t) for t in self.outputs],
            "params": self.params,
            "param_bytes": self.param_bytes,
            "external_weights": self.external_weights,
            "macs": self.macs,
            "shapes_complete": self.shapes_complete,
            "symbolic_dims": self.symbolic_dims,
            "dims": self.dims,
            "unsupported_ops": sorted(self.unsupported_ops),
            "unsupported_reasons": self.unsupported_ops,
        }


def model_info(model: Model) -> ModelInfo:
    """Summarise ``model``; completes shapes by one execution where inference left gaps."""
    still_unknown = complete_shapes(model)
    g = model.graph
    cost = model_cost(model, act_bytes=4, weight_bytes=4)
    ops = Counter(n.qualified_op for n in g.nodes)
    return ModelInfo(
        path=model.path,
        nodes=len(g.nodes),
        op_types=dict(sorted(ops.items(), key=lambda kv: (-kv[1], kv[0]))),
        opset=model.opset,
        opsets=dict(model.opsets),
        ir_version=model.ir_version,
        producer=model.producer,
        inputs=[g.tensor(t.name) for t in g.inputs],
        outputs=[g.tensor(t.name) for t in g.outputs],
        params=cost.param_count,
        param_bytes=sum(g.weights.nbytes(n) for n in g.weights),
        external_weights=len(g.weights.external),
        macs=cost.macs,
        shapes_complete=not still_unknown,
        symbolic_dims=list(model.symbolic_dims),
        dims=dict(model.dims),
        unsupported_ops=unsupported_ops(model),
    )
