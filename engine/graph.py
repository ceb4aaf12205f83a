"""The engine's own graph objects: plain dataclasses, no protobuf.

Conventions: tensor shapes are tuples whose entries are ``int`` (known) or ``str``
(a symbolic dimension such as ``"batch"``, or ``"?"`` when nothing is known);
``None`` as a whole shape means the rank is unknown. Dtypes are numpy dtypes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping

import numpy as np

Dim = int | str
Shape = tuple[Dim, ...]


@dataclass(frozen=True)
class TensorInfo:
    """Name, shape and element type of one tensor."""

    name: str
    shape: Shape | None
    dtype: np.dtype | None

    @property
    def is_static(self) -> bool:
        """True when every dimension is a known integer."""
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    @property
    def numel(self) -> int | None:
        """Element count, or None when a dimension is unknown."""
        if not self.is_static:
            return None
        return int(np.prod(self.shape, dtype=np.int64)) if self.shape else 1

    @property
    def itemsize(self) -> int | None:
        """Bytes per element of the stored dtype, or None when unknown."""
        return None if self.dtype is None else int(np.dtype(self.dtype).itemsize)


@dataclass
class Node:
    """One operator invocation. Empty strings in ``inputs`` are omitted optional inputs."""

    name: str
    op_type: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""

    @property
    def qualified_op(self) -> str:
        """``op_type`` with its domain prefixed when it is not the default ONNX domain."""
        return self.op_type if self.domain in ("", "ai.onnx") else f"{self.domain}::{self.op_type}"


class WeightStore(Mapping[str, np.ndarray]):
    """Initializers, read on first access (memory-mapped when stored as external data).

    ``info[name]`` gives shape and dtype without reading any bytes; ``store[name]``
    returns the array (cached for embedded data; external data is an ``np.memmap``).
    """

    def __init__(self) -> None:
        self._loaders: dict[str, Callable[[], np.ndarray]] = {}
        self._cache: dict[str, np.ndarray] = {}
        self.info: dict[str, TensorInfo] = {}
        self.external: set[str] = set()

    def add(self, info: TensorInfo, loader: Callable[[], np.ndarray], external: bool = False) -> None:
        self.info[info.name] = info
        self._loaders[info.name] = loader
        if external:
            self.external.add(info.name)

    def add_array(self, name: str, array: np.ndarray) -> None:
        array = np.asarray(array)
        self.info[name] = TensorInfo(name, tuple(int(d) for d in array.shape), array.dtype)
        self._cache[name] = array
        self._loaders[name] = lambda: array

    def __getitem__(self, name: str) -> np.ndarray:
        if name in self._cache:
            return self._cache[name]
        array = self._loaders[name]()
        if name not in self.external:
            self._cache[name] = array
            # the loader held the stored tensor (an embedded TensorProto, which keeps the whole
            # parsed protobuf alive): once every weight was read, only the arrays remain
            self._loaders[name] = lambda: array
        return array

    def __iter__(self) -> Iterator[str]:
        return iter(self.info)

    def __len__(self) -> int:
        return len(self.info)

    def __contains__(self, name: object) -> bool:
        return name in self.info

    def nbytes(self, name: str) -> int:
        """Stored size of one initializer in bytes (0 when its shape is unknown)."""
        info = self.info[name]
        n = info.numel
        return 0 if n is None or info.itemsize is None else n * info.itemsize


@dataclass
class Graph:
    """A computation graph: nodes in topological order, tensors by name."""

    nodes: list[Node]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    weights: WeightStore
    tensors: dict[str, TensorInfo] = field(default_factory=dict)

    def producers(self) -> dict[str, Node]:
        """Tensor name -> the node that writes it."""
        return {out: n for n in self.nodes for out in n.outputs if out}

    def consumers(self) -> dict[str, list[Node]]:
        """Tensor name -> nodes that read it (in node order, one entry per node)."""
        result: dict[str, list[Node]] = {}
        for n in self.nodes:
            for name in dict.fromkeys(i for i in n.inputs if i):
                result.setdefault(name, []).append(n)
        return result

    def tensor(self, name: str) -> TensorInfo:
        """Shape and dtype of a tensor (unknowns when inference gave nothing)."""
        if name in self.tensors:
            return self.tensors[name]
        if name in self.weights:
            return self.weights.info[name]
        return TensorInfo(name, None, None)

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]


@dataclass
class Model:
    """A loaded model: its graph plus file-level facts."""

    path: str
    graph: Graph
    opset: int
    opsets: dict[str, int]
    ir_version: int
    producer: str
    dims: dict[str, int] = field(default_factory=dict)
    symbolic_dims: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        import os

        return os.path.splitext(os.path.basename(self.path))[0]
