"""Headless core of the Deployment Inspector: model loading, executors, analysis, cost model.

Never imports Qt. Plain data in and out: dataclasses and numpy arrays.
"""

from engine.errors import ModelError
from engine.executor import Executor, random_feeds, run, unsupported_ops
from engine.graph import Graph, Model, Node, TensorInfo, WeightStore
from engine.loader import load_model, load_model_bytes, model_from_proto

__all__ = [
    "Executor",
    "Graph",
    "Model",
    "ModelError",
    "Node",
    "TensorInfo",
    "WeightStore",
    "load_model",
    "load_model_bytes",
    "model_from_proto",
    "random_feeds",
    "run",
    "unsupported_ops",
]
