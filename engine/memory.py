"""Memory bound checked BEFORE allocating a tensor whose shape comes from the data.

A model can declare, or compute at run time, a tensor of 2^40 elements (a ConstantOfShape,
Expand or Tile target, a declared input shape). numpy would then either raise a bare
MemoryError deep inside a kernel or, worse, succeed lazily and let the kernel thrash the
machine. :func:`check_allocation` refuses such a tensor up front with a ModelError that
names it and the sizes involved.

Available memory is ``MemAvailable`` of ``/proc/meminfo`` (Linux), else physical pages
times page size (``os.sysconf``), read fresh on every call (it is one small file read).
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import numpy as np

from engine.errors import ModelError

GIB = 1 << 30

FALLBACK_AVAILABLE_BYTES = 4 * GIB
"""Assumed available memory when the system tells nothing (no /proc, no sysconf), bytes."""


def available_bytes() -> int:
    """Memory the process can still allocate without swapping, bytes (best estimate)."""
    try:
        with open("/proc/meminfo", "rb") as f:
            for line in f:
                if line.startswith(b"MemAvailable:"):
                    parts = line.split()
                    return int(parts[1]) * (1024 if parts[2:3] == [b"kB"] else 1)
    except (OSError, ValueError, IndexError):
        pass
    try:
        pages = os.sysconf("SC_AVPHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and size > 0:
            return int(pages) * int(size)
    except (ValueError, OSError, AttributeError):
        pass
    return FALLBACK_AVAILABLE_BYTES


def allocation_bytes(shape: Iterable[int], dtype: np.dtype | type | str) -> int:
    """Bytes a C-contiguous array of ``shape`` and ``dtype`` needs (exact Python integers, so
    2^40 x 2^40 does not overflow); negative dimensions count as 0."""
    count = 1
    for d in shape:
        count *= max(int(d), 0)
    return count * int(np.dtype(dtype).itemsize)


def check_allocation(shape: Iterable[int], dtype: np.dtype | type | str, what: str, path: str | None = None) -> None:
    """Raise ModelError when an array of ``shape`` and ``dtype`` would not fit in memory.

    ``what`` names the tensor in the message (e.g. ``"tensor /Expand_output_0"``),
    ``path`` the model file. Message: ``tensor X would need N GiB, more than the M GiB
    available``.
    """
    dims = tuple(int(d) for d in shape)
    need = allocation_bytes(dims, dtype)
    if need <= GIB // 16:  # 64 MiB and less: never worth a /proc read
        return
    have = available_bytes()
    if need > have:
        raise ModelError(
            f"{what} of shape {dims} would need {need / GIB:.3g} GiB, more than the {have / GIB:.3g} GiB available",
            path,
        )


def check_declared(tensors: Iterable[object], path: str | None = None) -> None:
    """:func:`check_allocation` for every tensor whose declared (or inferred) shape is fully
    known (``engine.graph.TensorInfo`` objects; dtype float32 when unknown)."""
    for info in tensors:
        shape = getattr(info, "shape", None)
        if shape is None or not all(isinstance(d, int) for d in shape):
            continue
        dtype = getattr(info, "dtype", None) or np.dtype(np.float32)
        check_allocation(shape, dtype, f"tensor {getattr(info, 'name', '?')!r}", path)
