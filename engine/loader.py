"""Loading ONNX files into the engine's graph objects. Protobuf stops here.

``load_model(path, dims)`` parses and checks a file, validates external data (which is
memory-mapped, never read up front), binds symbolic dimensions, runs shape inference and
returns a :class:`engine.graph.Model`. Every problem with the input is a
:class:`engine.errors.ModelError` whose message names the file and the problem.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from engine.errors import ModelError
from engine.graph import Graph, Model, Node, Shape, TensorInfo, WeightStore

MIN_OPSET = 7
MAX_OPSET = onnx.defs.onnx_opset_version()


def onnx_dtype(elem_type: int) -> np.dtype | None:
    """numpy dtype of an ONNX element type, or None for types numpy lacks."""
    try:
        return np.dtype(helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        return None


def load_model(path: str | os.PathLike[str], dims: Mapping[str, int] | None = None) -> Model:
    """Load and check an ONNX file; bind symbolic dims (e.g. ``{"seq": 128}``).

    Raises ModelError on a missing or unreadable file, a file that is not ONNX, a
    truncated or corrupt protobuf, a graph that fails the ONNX checker, a missing or
    unsafe external-data file, or an unsupported opset.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelError("no such file", path)
    if os.path.isdir(path):
        raise ModelError("is a folder, not an .onnx file", path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ModelError(f"cannot read file ({e.strerror or e})", path) from None
    if not data:
        raise ModelError("file is empty, not an ONNX model", path)
    proto = _parse(data, path)
    base_dir = os.path.dirname(os.path.abspath(path))
    has_external = _validate_external_data(proto, base_dir, path)
    _check_opset(proto, path)
    light = _light_proto(proto, base_dir)
    _run_checker(light, path)
    return model_from_proto(proto, path=path, base_dir=base_dir, dims=dims, checked=True, light=light)


def load_model_bytes(data: bytes, name: str = "<memory>", dims: Mapping[str, int] | None = None) -> Model:
    """Load a serialized ModelProto held in memory (no external data)."""
    proto = _parse(data, name)
    _check_opset(proto, name)
    light = _light_proto(proto, None)
    _run_checker(light, name)
    return model_from_proto(proto, path=name, base_dir=None, dims=dims, checked=True, light=light)


def _run_checker(light: onnx.ModelProto, path: str) -> None:
    """The ONNX checker on the light copy (weights stand as typed graph inputs, so a big
    model is not serialised again; external data was validated by the loader itself)."""
    try:
        onnx.checker.check_model(light)
    except Exception as e:  # ValidationError, or other types from the checker's C++ side
        raise ModelError(f"fails the ONNX checker: {_first_line(str(e))}", path) from None


def model_from_proto(
    proto: onnx.ModelProto,
    path: str = "<memory>",
    base_dir: str | None = None,
    dims: Mapping[str, int] | None = None,
    checked: bool = False,
    light: onnx.ModelProto | None = None,
) -> Model:
    """Convert a ModelProto to the engine's Model (used by the loader and by tests).

    ``light`` is the loader's weight-free copy of ``proto`` (made here when not given)."""
    if not checked:
        _check_opset(proto, path)
    dims = dict(dims or {})
    symbolic = _symbolic_input_dims(proto)
    unknown = sorted(set(dims) - set(symbolic))
    if unknown:
        known = ", ".join(symbolic) or "none"
        raise ModelError(f"no symbolic dimension named {', '.join(unknown)} (the model has: {known})", path)
    for name, value in dims.items():
        if not isinstance(value, (int, np.integer)) or value <= 0:
            raise ModelError(f"dimension {name} must be a positive integer, got {value!r}", path)
    opsets = {(o.domain if o.domain != "ai.onnx" else ""): int(o.version) for o in proto.opset_import}
    opset = opsets.get("", 0)

    inferred = _infer_shapes(light if light is not None else _light_proto(proto, base_dir), dims)
    g = inferred.graph
    weights = WeightStore()
    for init in proto.graph.initializer:
        _add_initializer(weights, init, base_dir, path)
    for sparse in proto.graph.sparse_initializer:
        arr = numpy_helper.to_array(sparse.values)
        dense = np.zeros(tuple(sparse.dims), dtype=arr.dtype)
        idx = numpy_helper.to_array(sparse.indices)
        if idx.ndim == 1:
            dense.reshape(-1)[idx] = arr
        else:
            dense[tuple(idx.T)] = arr
        weights.add_array(sparse.values.name, dense)

    tensors: dict[str, TensorInfo] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        info = _value_info(vi, dims)
        if vi.name in tensors and info.shape is None:
            continue
        tensors[vi.name] = info

    nodes: list[Node] = []
    used_names: set[str] = set()
    for i, np_node in enumerate(proto.graph.node):
        node = _convert_node(np_node, i, used_names, path)
        if node.op_type == "Constant" and node.domain == "" and len(node.outputs) == 1:
            value = _constant_value(node)
            if value is not None:
                weights.add_array(node.outputs[0], value)
                continue
        nodes.append(node)

    init_names = set(weights)
    inputs = [tensors.get(vi.name) or _value_info(vi, dims) for vi in proto.graph.input if vi.name not in init_names]
    outputs = [tensors.get(vi.name) or _value_info(vi, dims) for vi in proto.graph.output]
    for t in inputs:
        tensors[t.name] = t
    graph = Graph(nodes=nodes, inputs=inputs, outputs=outputs, weights=weights, tensors=tensors)
    _topological_check(graph, path)
    return Model(
        path=path,
        graph=graph,
        opset=opset,
        opsets=opsets,
        ir_version=int(proto.ir_version),
        producer=" ".join(x for x in (proto.producer_name, proto.producer_version) if x),
        dims=dims,
        symbolic_dims=symbolic,
    )


# ---------------------------------------------------------------- parsing and checks


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    line = lines[0] if lines else "unknown error"
    if line.startswith("[ONNXRuntimeError]"):
        line = line.split(":", 1)[-1].strip()
    return line[:300]


def _parse(data: bytes, path: str) -> onnx.ModelProto:
    proto = onnx.ModelProto()
    try:
        proto.ParseFromString(data)
    except Exception:
        if data[:1] in (b"{", b"<", b"#") or data[:4] == b"PK\x03\x04" or data[:6] == b"\x93NUMPY":
            raise ModelError("not an ONNX model (the file is text, zip or numpy data, not a protobuf)", path) from None
        raise ModelError("not a valid ONNX protobuf: the file is truncated or corrupt", path) from None
    if proto.ir_version <= 0 or not proto.HasField("graph"):
        raise ModelError("not an ONNX model (no IR version or no graph in the file)", path)
    if not proto.graph.node and not proto.graph.output:
        raise ModelError("not an ONNX model (the graph has no nodes and no outputs)", path)
    _check_text(proto, path)
    return proto


def _check_text(proto: onnx.ModelProto, path: str) -> None:
    """Refuse names that are not valid UTF-8 (protobuf hands them over as bytes, which no
    name lookup, message or JSON report can use): a corrupt file, or a byte flipped in it."""
    g = proto.graph

    def check(value: object, what: str) -> None:
        if isinstance(value, bytes):
            shown = value.decode("utf-8", errors="replace")
            raise ModelError(f"{what} {shown!r} is not valid UTF-8 text (the file is corrupt)", path)

    for field in ("producer_name", "producer_version", "domain"):
        check(getattr(proto, field), f"model {field}")
    for o in proto.opset_import:
        check(o.domain, "opset domain")
    check(g.name, "graph name")
    for vi in (*g.input, *g.output, *g.value_info):
        check(vi.name, "tensor name")
    for t in g.initializer:
        check(t.name, "initializer name")
    for sp in g.sparse_initializer:
        check(sp.values.name, "initializer name")
    for i, node in enumerate(g.node):
        check(node.name, f"node {i} name")
        check(node.op_type, f"node {i} op type")
        check(node.domain, f"node {i} domain")
        for name in (*node.input, *node.output):
            check(name, f"node {i} tensor name")
        for a in node.attribute:
            check(a.name, f"node {i} attribute name")


def _check_opset(proto: onnx.ModelProto, path: str) -> None:
    versions = {o.domain: o.version for o in proto.opset_import}
    default = versions.get("", versions.get("ai.onnx"))
    if default is None:
        if proto.ir_version < 3:
            default = 1
        else:
            raise ModelError("no opset import for the default ONNX domain", path)
    if not MIN_OPSET <= default <= MAX_OPSET:
        raise ModelError(f"unsupported opset {default} (supported: {MIN_OPSET} to {MAX_OPSET})", path)


def _external_fields(tensor: TensorProto) -> dict[str, str]:
    return {kv.key: kv.value for kv in tensor.external_data}


def _iter_tensors(proto: onnx.ModelProto):
    yield from proto.graph.initializer
    for node in proto.graph.node:
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.TENSOR:
                yield attr.t


def _safe_location(location: str, base_dir: str, path: str, tensor: str) -> str:
    """Resolve an external-data location; refuse anything outside the model's folder."""
    if not location:
        raise ModelError(f"tensor {tensor}: external data without a location", path)
    if os.path.isabs(location) or location.startswith(("/", "\\")) or (len(location) > 1 and location[1] == ":"):
        raise ModelError(f"tensor {tensor}: external data location {location!r} is an absolute path (refused)", path)
    parts = location.replace("\\", "/").split("/")
    if ".." in parts:
        raise ModelError(f"tensor {tensor}: external data location {location!r} leaves the model's folder (refused)", path)
    full = os.path.join(base_dir, location)
    real_base = os.path.realpath(base_dir)
    real = os.path.realpath(full)
    if os.path.commonpath([real_base, real]) != real_base:
        raise ModelError(f"tensor {tensor}: external data {location!r} is a link out of the model's folder (refused)", path)
    return real


def _validate_external_data(proto: onnx.ModelProto, base_dir: str, path: str) -> bool:
    found = False
    for t in _iter_tensors(proto):
        if t.data_location != TensorProto.EXTERNAL:
            continue
        found = True
        fields = _external_fields(t)
        real = _safe_location(fields.get("location", ""), base_dir, path, t.name)
        if not os.path.isfile(real):
            raise ModelError(f"external data file {fields['location']!r} for tensor {t.name} is missing", path)
        size = os.path.getsize(real)
        try:
            offset = int(fields.get("offset", "0"))
            length = int(fields["length"]) if "length" in fields else None
        except ValueError:
            raise ModelError(f"tensor {t.name}: external data offset/length are not integers", path) from None
        dtype = onnx_dtype(t.data_type)
        need = int(np.prod(t.dims, dtype=np.int64)) * (dtype.itemsize if dtype is not None else 1)
        if length is None:
            length = size - offset
        if offset < 0 or length < 0 or offset + length > size:
            raise ModelError(
                f"external data file {fields['location']!r} is too short for tensor {t.name} "
                f"(needs bytes {offset}..{offset + length}, file has {size})",
                path,
            )
        if dtype is not None and length < need:
            raise ModelError(f"tensor {t.name}: external data holds {length} bytes, its shape needs {need}", path)
    return found


def _symbolic_input_dims(proto: onnx.ModelProto) -> list[str]:
    init = {t.name for t in proto.graph.initializer}
    names: list[str] = []
    for vi in proto.graph.input:
        if vi.name in init or not vi.type.HasField("tensor_type"):
            continue
        for d in vi.type.tensor_type.shape.dim:
            if d.HasField("dim_param") and d.dim_param and d.dim_param not in names:
                names.append(d.dim_param)
    return names


def _inline_external(t: TensorProto, base_dir: str | None) -> None:
    """Read a small external tensor's bytes into ``t`` (already validated by the loader)."""
    fields = _external_fields(t)
    dtype = onnx_dtype(t.data_type)
    if base_dir is None or dtype is None:
        _clear_data(t)
        return
    real = os.path.realpath(os.path.join(base_dir, fields.get("location", "")))
    count = int(np.prod(t.dims, dtype=np.int64))
    with open(real, "rb") as f:
        f.seek(int(fields.get("offset", "0")))
        raw = f.read(count * dtype.itemsize)
    t.ClearField("external_data")
    t.data_location = TensorProto.DEFAULT
    t.raw_data = raw


# initializers with more elements than this stand as typed graph inputs in the light copy
LIGHT_MAX_ELEMENTS = 64


def _light_proto(proto: onnx.ModelProto, base_dir: str | None) -> onnx.ModelProto:
    """A copy of ``proto`` without weight bytes, for the checker and shape inference.

    Initializers of more than LIGHT_MAX_ELEMENTS elements become graph inputs of the same
    type and shape (valid from IR 4; older models list them as inputs already). Small ones
    are kept with their values, since Reshape/Expand/Slice targets come from them; small
    external ones are read in. Copying only this keeps a big model's load from holding the
    interpreter for the checker's re-serialisation of every weight.
    """
    light = onnx.ModelProto()
    for fd, value in proto.ListFields():
        if fd.name == "graph":
            continue
        _copy_field(light, fd.name, value)
    src, g = proto.graph, light.graph
    for fd, value in src.ListFields():
        if fd.name == "initializer":
            continue
        _copy_field(g, fd.name, value)
    declared = {vi.name for vi in src.input}
    for t in src.initializer:
        if int(np.prod(t.dims, dtype=np.int64)) <= LIGHT_MAX_ELEMENTS:
            kept = g.initializer.add()
            kept.CopyFrom(t)
            if kept.data_location == TensorProto.EXTERNAL:
                _inline_external(kept, base_dir)
        elif t.name not in declared:
            g.input.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    return light


def _copy_field(message: Any, name: str, value: Any) -> None:
    """Copy one set field (repeated, message or scalar) of a protobuf message onto another."""
    if hasattr(value, "extend"):
        getattr(message, name).extend(value)
    elif hasattr(value, "CopyFrom"):
        getattr(message, name).CopyFrom(value)
    else:
        setattr(message, name, value)


def _infer_shapes(light: onnx.ModelProto, dims: Mapping[str, int]) -> onnx.ModelProto:
    """Shape inference on the light copy, with symbolic dims bound (on a copy of it)."""
    if dims:
        bound = onnx.ModelProto()
        bound.CopyFrom(light)
        for vi in bound.graph.input:
            for d in vi.type.tensor_type.shape.dim:
                if d.HasField("dim_param") and d.dim_param in dims:
                    d.dim_value = int(dims[d.dim_param])
        light = bound
    try:
        return onnx.shape_inference.infer_shapes(light, check_type=False, strict_mode=False, data_prop=True)
    except Exception:
        return light


def _clear_data(t: TensorProto) -> None:
    for field in ("float_data", "int32_data", "string_data", "int64_data", "double_data", "uint64_data"):
        t.ClearField(field)
    t.ClearField("raw_data")
    t.ClearField("external_data")
    t.data_location = TensorProto.DEFAULT


def _shape_of(type_proto: onnx.TypeProto, dims: Mapping[str, int]) -> Shape | None:
    if not type_proto.HasField("tensor_type") or not type_proto.tensor_type.HasField("shape"):
        return None
    shape: list[int | str] = []
    for d in type_proto.tensor_type.shape.dim:
        if d.HasField("dim_value"):
            shape.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            shape.append(int(dims[d.dim_param]) if d.dim_param in dims else d.dim_param)
        else:
            shape.append("?")
    return tuple(shape)


def _value_info(vi: onnx.ValueInfoProto, dims: Mapping[str, int]) -> TensorInfo:
    dtype = onnx_dtype(vi.type.tensor_type.elem_type) if vi.type.HasField("tensor_type") else None
    return TensorInfo(vi.name, _shape_of(vi.type, dims), dtype)


def _add_initializer(weights: WeightStore, t: TensorProto, base_dir: str | None, path: str) -> None:
    dtype = onnx_dtype(t.data_type)
    shape = tuple(int(d) for d in t.dims)
    info = TensorInfo(t.name, shape, dtype)
    if t.data_location == TensorProto.EXTERNAL:
        if base_dir is None:
            raise ModelError(f"tensor {t.name} has external data but the model was not loaded from a file", path)
        fields = _external_fields(t)
        real = _safe_location(fields.get("location", ""), base_dir, path, t.name)
        offset = int(fields.get("offset", "0"))
        if dtype is None:
            raise ModelError(f"tensor {t.name}: external data of unsupported element type {t.data_type}", path)

        def load_external(real: str = real, offset: int = offset, dtype: np.dtype = dtype, shape: tuple = shape):
            if int(np.prod(shape, dtype=np.int64)) == 0:
                return np.zeros(shape, dtype=dtype)
            return np.memmap(real, dtype=dtype, mode="r", offset=offset, shape=shape)

        weights.add(info, load_external, external=True)
        return

    def load_embedded(t: TensorProto = t) -> np.ndarray:
        try:
            return numpy_helper.to_array(t)
        except Exception as e:
            raise ModelError(f"tensor {t.name}: stored data does not match its shape ({_first_line(str(e))})", path) from None

    weights.add(info, load_embedded)


def _attr_value(attr: onnx.AttributeProto) -> Any:
    if attr.type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(attr.t)
    if attr.type == onnx.AttributeProto.TENSORS:
        return [numpy_helper.to_array(t) for t in attr.tensors]
    if attr.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        return SubgraphAttr(attr.name)
    if attr.type == onnx.AttributeProto.SPARSE_TENSOR:
        values = numpy_helper.to_array(attr.sparse_tensor.values)
        dense = np.zeros(tuple(attr.sparse_tensor.dims), dtype=values.dtype)
        idx = numpy_helper.to_array(attr.sparse_tensor.indices)
        if idx.ndim == 1:
            dense.reshape(-1)[idx] = values
        else:
            dense[tuple(idx.T)] = values
        return dense
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode("utf-8", errors="replace") for v in value]
    return value


class SubgraphAttr:
    """Marks a graph-valued attribute (If/Loop/Scan bodies): kept by name only."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"<subgraph {self.name}>"


def _convert_node(p: onnx.NodeProto, index: int, used: set[str], path: str) -> Node:
    name = p.name or f"{p.op_type}_{index}"
    while name in used:
        name = f"{name}_{index}"
    used.add(name)
    try:
        attrs = {a.name: _attr_value(a) for a in p.attribute}
    except Exception as e:
        raise ModelError(f"node {name}: attribute cannot be read ({_first_line(str(e))})", path) from None
    domain = "" if p.domain == "ai.onnx" else p.domain
    return Node(name=name, op_type=p.op_type, inputs=list(p.input), outputs=list(p.output), attrs=attrs, domain=domain)


def _constant_value(node: Node) -> np.ndarray | None:
    """The value a Constant node holds (computed by the Constant kernel), or None for strings."""
    from engine.ops import make_kernel

    value = make_kernel(node, 0).run()[0]
    return None if value.dtype == object else value


def _topological_check(graph: Graph, path: str) -> None:
    available = set(graph.input_names) | set(graph.weights)
    for node in graph.nodes:
        for name in node.inputs:
            if name and name not in available:
                raise ModelError(
                    f"node {node.name} reads {name!r}, which no earlier node, input or initializer provides", path
                )
        available.update(o for o in node.outputs if o)
    for out in graph.output_names:
        if out not in available:
            raise ModelError(f"graph output {out!r} is produced by no node", path)
