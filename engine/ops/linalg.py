"""Linear-algebra kernels: MatMul, Gemm, Einsum.

Float32 stays float32 (BLAS through numpy); float16 is multiplied in float32 and rounded
back once, which is both faster (numpy has no float16 BLAS) and closer to what
accelerators do (float32 accumulation).
"""

from __future__ import annotations

import numpy as np

from engine.errors import ModelError
from engine.graph import Node
from engine.ops import OpKernel, register
from engine.ops.elementwise import as_array


def _compute_dtype(dtype: np.dtype) -> np.dtype:
    return np.dtype(np.float32) if dtype == np.float16 else dtype


@register
class MatMul(OpKernel):
    """numpy.matmul semantics: batched, broadcasting leading axes, 1-D operands promoted and squeezed."""

    op_type = "MatMul"

    def _run(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        dtype = np.asarray(a).dtype
        work = _compute_dtype(dtype)
        result = np.matmul(np.asarray(a).astype(work, copy=False), np.asarray(b).astype(work, copy=False))
        return as_array(result, dtype)


@register
class Gemm(OpKernel):
    """Y = alpha * A' @ B' + beta * C, A' = A.T if transA, B' = B.T if transB; C (optional)
    broadcasts to (M, N). alpha and beta default to 1."""

    op_type = "Gemm"

    def _run(self, a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None) -> np.ndarray:
        dtype = np.asarray(a).dtype
        work = _compute_dtype(dtype)
        a = np.asarray(a).astype(work, copy=False)
        b = np.asarray(b).astype(work, copy=False)
        if a.ndim != 2 or b.ndim != 2:
            raise ModelError(f"node {self.node.name} (Gemm): A and B must be 2-D, got {a.shape} and {b.shape}")
        if int(self.attr("transA", 0)):
            a = a.T
        if int(self.attr("transB", 0)):
            b = b.T
        alpha = float(self.attr("alpha", 1.0))
        beta = float(self.attr("beta", 1.0))
        y = a @ b
        if alpha != 1.0:
            y = y * work.type(alpha)
        if c is not None and beta != 0.0:
            c = np.asarray(c).astype(work, copy=False)
            y = y + (c if beta == 1.0 else c * work.type(beta))
        return as_array(y, dtype)


@register
class Einsum(OpKernel):
    """numpy.einsum on the ``equation`` attribute (spaces ignored), contraction order optimized."""

    op_type = "Einsum"

    @classmethod
    def unsupported_reason(cls, node: Node, opset: int) -> str | None:
        equation = node.attrs.get("equation")
        if not isinstance(equation, str) or not equation.strip():
            return "Einsum without an equation"
        return None

    def __init__(self, node: Node, opset: int) -> None:
        super().__init__(node, opset)
        self.equation = "".join(str(self.attr("equation", "")).split())

    def _run(self, *operands: np.ndarray) -> np.ndarray:
        arrays = [np.asarray(x) for x in operands]
        dtype = arrays[0].dtype
        work = _compute_dtype(dtype)
        result = np.einsum(self.equation, *(x.astype(work, copy=False) for x in arrays), optimize=True)
        return as_array(result, dtype)
