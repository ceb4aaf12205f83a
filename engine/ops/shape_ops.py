"""Tensor and shape kernels: layout changes, indexing, scatter/gather, constants, padding.

Conventions: shape-valued outputs (Shape, Size, NonZero) are int64; axis and shape inputs
are read as int64; negative axes count from the end as ONNX defines. Inputs that moved
from attributes to tensors in later opsets (Squeeze/Unsqueeze axes, Split sizes, Slice
starts/ends, Pad pads) are read from whichever the node's opset uses.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from engine.graph import Node
from engine.memory import check_allocation
from engine.ops import OpKernel, register


def _axis(axis: int, rank: int) -> int:
    """Normalise a possibly negative axis; raises ValueError when out of range."""
    axis = int(axis)
    if not -rank <= axis < max(rank, 1):
        raise ValueError(f"axis {axis} is out of range for rank {rank}")
    return axis + rank if axis < 0 else axis


def _int_list(values: Any) -> list[int]:
    """An int64 tensor or attribute list as Python ints."""
    return [int(v) for v in np.asarray(values).reshape(-1)]


def _scalar(value: np.ndarray) -> Any:
    """The single element of a 0-d or one-element tensor as a Python number."""
    return np.asarray(value).reshape(-1)[0].item()


# ----------------------------------------------------------------------------- layout


@register
class Reshape(OpKernel):
    """New shape from an int64 tensor: 0 copies the input dim (unless allowzero), -1 is inferred."""

    op_type = "Reshape"

    def _run(self, x: np.ndarray, shape: np.ndarray | None = None) -> np.ndarray:
        if shape is None:  # opset 1-4 had the shape as an attribute
            shape = np.asarray(self.attr("shape", []), dtype=np.int64)
        target = _int_list(shape)
        if not int(self.attr("allowzero", 0)):
            target = [x.shape[i] if d == 0 and i < x.ndim else d for i, d in enumerate(target)]
        return x.reshape(target)


@register
class Transpose(OpKernel):
    """Permute axes; default ``perm`` reverses them."""

    op_type = "Transpose"

    def _run(self, x: np.ndarray) -> np.ndarray:
        perm = self.attr("perm")
        return np.transpose(x, None if perm is None else [int(p) for p in perm])


@register
class Flatten(OpKernel):
    """2-D output (prod(shape[:axis]), prod(shape[axis:]))."""

    op_type = "Flatten"

    def _run(self, x: np.ndarray) -> np.ndarray:
        axis = int(self.attr("axis", 1))
        if axis < 0:
            axis += x.ndim
        if not 0 <= axis <= x.ndim:
            raise ValueError(f"axis {self.attr('axis')} is out of range for rank {x.ndim}")
        outer = int(np.prod(x.shape[:axis], dtype=np.int64))
        return x.reshape(outer, int(np.prod(x.shape[axis:], dtype=np.int64)))


@register
class Squeeze(OpKernel):
    """Remove size-1 axes (the listed ones, or all); axes attribute before opset 13, input after."""

    op_type = "Squeeze"

    def _run(self, x: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
        if self.opset < 13:
            axes = self.attr("axes")
        if axes is None:
            return np.squeeze(x)
        norm = tuple(_axis(a, x.ndim) for a in _int_list(axes))
        return np.squeeze(x, axis=norm)


@register
class Unsqueeze(OpKernel):
    """Insert size-1 axes at the listed output positions (negative: from the output's end)."""

    op_type = "Unsqueeze"

    def _run(self, x: np.ndarray, axes: np.ndarray | None = None) -> np.ndarray:
        if self.opset < 13:
            axes = self.attr("axes")
        if axes is None:
            raise ValueError("axes are missing")
        listed = _int_list(axes)
        rank = x.ndim + len(listed)
        norm = sorted(_axis(a, rank) for a in listed)
        if len(set(norm)) != len(norm):
            raise ValueError(f"repeated axes {listed}")
        shape = list(x.shape)
        for a in norm:
            shape.insert(a, 1)
        return x.reshape(shape)


@register
class Concat(OpKernel):
    """Join along ``axis``."""

    op_type = "Concat"

    def _run(self, *xs: np.ndarray | None) -> np.ndarray:
        parts = [x for x in xs if x is not None]
        if self.attr("axis") is None:
            raise ValueError("axis attribute is missing")
        axis = _axis(self.attr("axis"), parts[0].ndim)
        return np.concatenate(parts, axis=axis)


@register
class Split(OpKernel):
    """Cut along ``axis`` by sizes (attribute before opset 13, input after), or evenly.

    Even split: into as many parts as outputs (or ``num_outputs`` from opset 18); when the
    size does not divide, every part has ceil(size / parts) and the last one the rest.
    """

    op_type = "Split"

    def _run(self, x: np.ndarray, split: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
        axis = _axis(self.attr("axis", 0), x.ndim)
        sizes = _int_list(self.attr("split")) if self.opset < 13 and self.attr("split") is not None else None
        if self.opset >= 13 and split is not None and np.asarray(split).size:
            sizes = _int_list(split)
        dim = x.shape[axis]
        if sizes is None:
            parts = int(self.attr("num_outputs", len(self.node.outputs)))
            step = -(-dim // parts)
            sizes = [step] * (parts - 1) + [dim - step * (parts - 1)]
        if sum(sizes) != dim or any(s < 0 for s in sizes):
            raise ValueError(f"split sizes {sizes} do not add up to dimension {dim}")
        cuts = np.cumsum(sizes)[:-1]
        return tuple(np.split(x, cuts, axis=axis))


@register
class Slice(OpKernel):
    """Strided slice per axis with ONNX clamping (same as Python's for out-of-range bounds)."""

    op_type = "Slice"

    def _run(
        self,
        x: np.ndarray,
        starts: np.ndarray | None = None,
        ends: np.ndarray | None = None,
        axes: np.ndarray | None = None,
        steps: np.ndarray | None = None,
    ) -> np.ndarray:
        if self.opset < 10:
            starts, ends, axes = self.attr("starts"), self.attr("ends"), self.attr("axes")
            steps = None
        start_list, end_list = _int_list(starts), _int_list(ends)
        axis_list = list(range(len(start_list))) if axes is None else _int_list(axes)
        step_list = [1] * len(start_list) if steps is None else _int_list(steps)
        index = [slice(None)] * x.ndim
        for s, e, a, st in zip(start_list, end_list, axis_list, step_list):
            if st == 0:
                raise ValueError("slice step 0")
            index[_axis(a, x.ndim)] = slice(s, e, st)
        return x[tuple(index)].copy()


@register
class DepthToSpace(OpKernel):
    """DepthToSpace: (N, C*b*b, H, W) -> (N, C, H*b, W*b); mode DCR (default) or CRD."""

    op_type = "DepthToSpace"

    def _run(self, x: np.ndarray) -> np.ndarray:
        b = int(self.attr("blocksize"))
        n, c, h, w = x.shape
        if self.attr("mode", "DCR") == "CRD":
            t = x.reshape(n, c // (b * b), b, b, h, w).transpose(0, 1, 4, 2, 5, 3)
        else:
            t = x.reshape(n, b, b, c // (b * b), h, w).transpose(0, 3, 4, 1, 5, 2)
        return t.reshape(n, c // (b * b), h * b, w * b)


@register
class SpaceToDepth(OpKernel):
    """(N, C, H*b, W*b) -> (N, C*b*b, H, W); mode DCR (block offsets outermost in the channel axis, default) or CRD."""

    op_type = "SpaceToDepth"

    def _run(self, x: np.ndarray) -> np.ndarray:
        b = int(self.attr("blocksize"))
        n, c, h, w = x.shape
        t = x.reshape(n, c, h // b, b, w // b, b)
        if self.attr("mode", "DCR") == "CRD":
            t = t.transpose(0, 1, 3, 5, 2, 4)
        else:
            t = t.transpose(0, 3, 5, 1, 2, 4)
        return t.reshape(n, c * b * b, h // b, w // b)


@register
class Expand(OpKernel):
    """Broadcast to ``shape`` (bidirectional: size-1 entries of ``shape`` keep the input's dim)."""

    op_type = "Expand"

    def _run(self, x: np.ndarray, shape: np.ndarray) -> np.ndarray:
        target = np.broadcast_shapes(x.shape, tuple(_int_list(shape)))
        check_allocation(target, x.dtype, f"tensor {self.node.outputs[0]!r}")
        return np.broadcast_to(x, target).copy()


@register
class Tile(OpKernel):
    """Repeat the whole tensor ``repeats[i]`` times along axis i."""

    op_type = "Tile"

    def _run(self, x: np.ndarray, repeats: np.ndarray) -> np.ndarray:
        reps = _int_list(repeats)
        if len(reps) != x.ndim:
            raise ValueError(f"{len(reps)} repeats for rank {x.ndim}")
        check_allocation([d * r for d, r in zip(x.shape, reps)], x.dtype, f"tensor {self.node.outputs[0]!r}")
        return np.tile(x, reps)


@register
class Trilu(OpKernel):
    """Upper (default) or lower triangle of the last two axes, shifted by diagonal offset k."""

    op_type = "Trilu"

    def _run(self, x: np.ndarray, k: np.ndarray | None = None) -> np.ndarray:
        offset = 0 if k is None else int(_scalar(k))
        return np.triu(x, offset) if int(self.attr("upper", 1)) else np.tril(x, offset)


# ----------------------------------------------------------------------------- shape facts


@register
class Shape(OpKernel):
    """The input's shape as int64, optionally sliced [start:end) (opset 15, clamped)."""

    op_type = "Shape"

    def _run(self, x: np.ndarray) -> np.ndarray:
        start = int(self.attr("start", 0))
        end = self.attr("end")
        return np.asarray(x.shape[start : None if end is None else int(end)], dtype=np.int64)


@register
class Size(OpKernel):
    """Element count as a 0-d int64."""

    op_type = "Size"

    def _run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x.size, dtype=np.int64)


@register
class NonZero(OpKernel):
    """Coordinates of non-zero elements, int64 (rank, count), row-major order."""

    op_type = "NonZero"

    def _run(self, x: np.ndarray) -> np.ndarray:
        if x.ndim == 0:
            return np.zeros((0, int(bool(x))), dtype=np.int64)
        return np.asarray(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1)


# ----------------------------------------------------------------------------- constants


@register
class Constant(OpKernel):
    """The tensor held in one of the value* attributes (value_string(s) give object arrays)."""

    op_type = "Constant"

    _FORMS = (
        "value", "sparse_value", "value_float", "value_floats",
        "value_int", "value_ints", "value_string", "value_strings",
    )

    @classmethod
    def unsupported_reason(cls, node: Node, opset: int) -> str | None:
        if not any(k in node.attrs for k in cls._FORMS):
            return "no value attribute"
        return None

    def _run(self) -> np.ndarray:
        a = self.attrs
        if "value" in a:
            return np.asarray(a["value"])
        if "sparse_value" in a:
            return np.asarray(a["sparse_value"])
        if "value_float" in a:
            return np.asarray(a["value_float"], dtype=np.float32)
        if "value_floats" in a:
            return np.asarray(a["value_floats"], dtype=np.float32)
        if "value_int" in a:
            return np.asarray(a["value_int"], dtype=np.int64)
        if "value_ints" in a:
            return np.asarray(a["value_ints"], dtype=np.int64)
        if "value_string" in a:
            return np.asarray(a["value_string"], dtype=object)
        return np.asarray(list(a["value_strings"]), dtype=object)


@register
class ConstantOfShape(OpKernel):
    """A tensor of the given int64 shape filled with ``value`` (default float32 0)."""

    op_type = "ConstantOfShape"

    def _run(self, shape: np.ndarray) -> np.ndarray:
        value = self.attr("value")
        fill = np.zeros(1, dtype=np.float32) if value is None else np.asarray(value).reshape(-1)
        check_allocation(_int_list(shape), fill.dtype, f"tensor {self.node.outputs[0]!r}")
        return np.full(tuple(_int_list(shape)), fill[0], dtype=fill.dtype)


@register
class Range(OpKernel):
    """start, start+delta, ... while < limit (> for negative delta); dtype of ``start``."""

    op_type = "Range"

    def _run(self, start: np.ndarray, limit: np.ndarray, delta: np.ndarray) -> np.ndarray:
        dtype = np.asarray(start).dtype
        s, lim, d = _scalar(start), _scalar(limit), _scalar(delta)
        if d == 0:
            raise ValueError("delta is 0")
        count = max(int(np.ceil((lim - s) / d)), 0)
        check_allocation([count], np.float64, f"tensor {self.node.outputs[0]!r}")
        return (s + np.arange(count, dtype=np.float64 if dtype.kind == "f" else np.int64) * d).astype(dtype)


@register
class CumSum(OpKernel):
    """Cumulative sum along ``axis`` (a tensor input); ``exclusive`` shifts by one, ``reverse`` runs backwards."""

    op_type = "CumSum"

    def _run(self, x: np.ndarray, axis: np.ndarray) -> np.ndarray:
        ax = _axis(_scalar(axis), x.ndim)
        reverse = bool(self.attr("reverse", 0))
        src = np.flip(x, axis=ax) if reverse else x
        out = np.cumsum(src, axis=ax, dtype=x.dtype)
        if self.attr("exclusive", 0):
            shifted = np.zeros_like(out)
            body = [slice(None)] * x.ndim
            head = [slice(None)] * x.ndim
            body[ax] = slice(1, None)
            head[ax] = slice(None, -1)
            shifted[tuple(body)] = out[tuple(head)]
            out = shifted
        return np.flip(out, axis=ax).copy() if reverse else out


# ----------------------------------------------------------------------------- gather / scatter


@register
class Gather(OpKernel):
    """Take entries along ``axis``; negative indices count from the end."""

    op_type = "Gather"

    def _run(self, x: np.ndarray, indices: np.ndarray) -> np.ndarray:
        axis = _axis(self.attr("axis", 0), x.ndim)
        idx = np.asarray(indices, dtype=np.int64)
        dim = x.shape[axis]
        if idx.size and (idx.min() < -dim or idx.max() >= dim):
            raise IndexError(f"gather index out of range [-{dim}, {dim - 1}]")
        return np.take(x, idx, axis=axis)


def _elements_index(indices: np.ndarray, axis: int, dim: int) -> tuple[np.ndarray, ...]:
    """Full advanced-index tuple for *Elements ops: ``indices`` on ``axis``, position elsewhere."""
    idx = np.asarray(indices, dtype=np.int64)
    if idx.size and (idx.min() < -dim or idx.max() >= dim):
        raise IndexError(f"index out of range [-{dim}, {dim - 1}]")
    idx = np.where(idx < 0, idx + dim, idx)
    grids = list(np.indices(idx.shape, sparse=True))
    grids[axis] = idx
    return tuple(grids)


@register
class GatherElements(OpKernel):
    """out[i][j][k] = x[idx[i][j][k]][j][k] for axis 0 (and likewise per axis)."""

    op_type = "GatherElements"

    def _run(self, x: np.ndarray, indices: np.ndarray) -> np.ndarray:
        axis = _axis(self.attr("axis", 0), x.ndim)
        return x[_elements_index(indices, axis, x.shape[axis])]


@register
class GatherND(OpKernel):
    """Gather slices by index tuples in the last axis of ``indices``; leading ``batch_dims`` are shared."""

    op_type = "GatherND"

    def _run(self, x: np.ndarray, indices: np.ndarray) -> np.ndarray:
        b = int(self.attr("batch_dims", 0))
        idx = np.asarray(indices, dtype=np.int64)
        k = idx.shape[-1]
        batch_shape = x.shape[:b]
        n_batch = int(np.prod(batch_shape, dtype=np.int64))
        data = x.reshape((n_batch,) + x.shape[b:])
        ind = idx.reshape((n_batch, -1, k))
        dims = np.asarray(x.shape[b : b + k], dtype=np.int64)
        ind = np.where(ind < 0, ind + dims, ind)
        if ind.size and ((ind < 0).any() or (ind >= dims).any()):
            raise IndexError("GatherND index out of range")
        batch = np.arange(n_batch)[:, None]
        picked = data[(batch,) + tuple(ind[..., j] for j in range(k))]
        return picked.reshape(idx.shape[:-1] + x.shape[b + k :])


_REDUCTIONS = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def _scatter(out: np.ndarray, index: tuple[np.ndarray, ...], updates: np.ndarray, reduction: str) -> np.ndarray:
    if reduction == "none":
        out[index] = updates
    else:
        _REDUCTIONS[reduction].at(out, index, updates)
    return out


def _reduction_reason(node: Node) -> str | None:
    reduction = node.attrs.get("reduction", "none")
    if reduction != "none" and reduction not in _REDUCTIONS:
        return f"reduction {reduction!r} is not one of none, add, mul, max, min"
    return None


@register
class ScatterND(OpKernel):
    """Copy of ``data`` with slices at index tuples replaced (or combined by ``reduction``)."""

    op_type = "ScatterND"

    @classmethod
    def unsupported_reason(cls, node: Node, opset: int) -> str | None:
        return _reduction_reason(node)

    def _run(self, data: np.ndarray, indices: np.ndarray, updates: np.ndarray) -> np.ndarray:
        idx = np.asarray(indices, dtype=np.int64)
        k = idx.shape[-1]
        dims = np.asarray(data.shape[:k], dtype=np.int64)
        idx = np.where(idx < 0, idx + dims, idx)
        if idx.size and ((idx < 0).any() or (idx >= dims).any()):
            raise IndexError("ScatterND index out of range")
        index = tuple(idx[..., j] for j in range(k))
        return _scatter(data.copy(), index, updates, self.attr("reduction", "none"))


@register
class ScatterElements(OpKernel):
    """Copy of ``data`` with out[..idx[i,j]..] = updates[i, j] along ``axis`` (or combined by ``reduction``)."""

    op_type = "ScatterElements"

    @classmethod
    def unsupported_reason(cls, node: Node, opset: int) -> str | None:
        return _reduction_reason(node)

    def _run(self, data: np.ndarray, indices: np.ndarray, updates: np.ndarray) -> np.ndarray:
        axis = _axis(self.attr("axis", 0), data.ndim)
        index = _elements_index(indices, axis, data.shape[axis])
        return _scatter(data.copy(), index, updates, self.attr("reduction", "none"))


@register
class Scatter(ScatterElements):
    """Deprecated (opset 9-10) name of ScatterElements without reduction."""

    op_type = "Scatter"


# ----------------------------------------------------------------------------- padding


PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "edge", "wrap": "wrap"}


@register
class Pad(OpKernel):
    """Pad (or crop, for negative pads) with mode constant/reflect/edge/wrap.

    pads are [x1_begin, x2_begin, ..., x1_end, x2_end, ...]: an attribute (with ``value``)
    before opset 11, an int64 input after (with optional constant_value and, from opset 18, axes).
    """

    op_type = "Pad"

    @classmethod
    def unsupported_reason(cls, node: Node, opset: int) -> str | None:
        mode = node.attrs.get("mode", "constant")
        if mode not in PAD_MODES:
            return f"mode {mode!r} is not one of {', '.join(PAD_MODES)}"
        return None

    def _run(
        self,
        x: np.ndarray,
        pads: np.ndarray | None = None,
        constant_value: np.ndarray | None = None,
        axes: np.ndarray | None = None,
    ) -> np.ndarray:
        if self.opset < 11:
            pad_list = _int_list(self.attr("pads", self.attr("paddings", [])))
            value: Any = self.attr("value", 0.0)
            axis_list = list(range(x.ndim))
        else:
            pad_list = _int_list(pads)
            value = 0 if constant_value is None or np.asarray(constant_value).size == 0 else _scalar(constant_value)
            axis_list = list(range(x.ndim)) if axes is None else [_axis(a, x.ndim) for a in _int_list(axes)]
        if len(pad_list) != 2 * len(axis_list):
            raise ValueError(f"{len(pad_list)} pads for {len(axis_list)} axes")
        n = len(axis_list)
        begins = [0] * x.ndim
        ends = [0] * x.ndim
        for i, a in enumerate(axis_list):
            begins[a], ends[a] = pad_list[i], pad_list[n + i]
        # negative pads crop first
        crop = tuple(slice(max(0, -b), x.shape[i] - max(0, -e)) for i, (b, e) in enumerate(zip(begins, ends)))
        x = x[crop]
        widths = [(max(0, b), max(0, e)) for b, e in zip(begins, ends)]
        if not any(b or e for b, e in widths):
            return x.copy()
        mode = PAD_MODES[self.attr("mode", "constant")]
        if mode == "constant":
            return np.pad(x, widths, mode="constant", constant_values=np.asarray(value).astype(x.dtype))
        return np.pad(x, widths, mode=mode)

