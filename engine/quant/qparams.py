"""Quantization schemes and parameters: range -> (scale, zero_point), quantize, dequantize.

Convention (ONNX QuantizeLinear/DequantizeLinear): ``q = saturate(round(x / scale) + zero_point)``
with round half to even, and ``x ~ (q - zero_point) * scale``. Scales are float32 values
(stored as Python floats / float64 arrays holding float32-representable numbers) and the
arithmetic of :func:`quantize` / :func:`dequantize` is float32, as onnxruntime does it.

Integer code ranges: symmetric signed schemes use the restricted range (int8 ``[-127, 127]``,
int16 ``[-32767, 32767]``) so that ``-amax`` and ``amax`` are both representable and the
product of two codes never reaches ``-128 * -128``; asymmetric schemes and uint8 use the full
range. Symmetric uint8 puts the zero point at 128.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from engine.errors import ModelError
from engine.quant.observers import PerChannelMinMaxObserver
from engine.quant.ranges import METHODS

DTYPES: dict[str, type[np.integer]] = {"int8": np.int8, "uint8": np.uint8, "int16": np.int16}

MIN_SCALE = float(np.finfo(np.float32).tiny)
"""Smallest scale used as is. A range whose scale would be smaller (an all-zero tensor, or
values below ~1e-36) gets ``scale = 1.0``: every value then quantizes to the zero point,
which represents 0 exactly, and the error is at most the (negligible) range itself."""


def qrange(dtype: str, symmetric: bool) -> tuple[int, int]:
    """(qmin, qmax) of the integer codes of ``dtype`` for a (a)symmetric scheme."""
    if dtype not in DTYPES:
        raise ModelError(f"unsupported quantized dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    info = np.iinfo(DTYPES[dtype])
    qmin, qmax = int(info.min), int(info.max)
    if symmetric and qmin < 0:
        qmin = -qmax
    return qmin, qmax


@dataclass(frozen=True)
class QuantScheme:
    """How a model is quantized: activation dtype/symmetry, weight granularity, calibration.

    ``method`` is one of ``METHODS`` (see :mod:`engine.quant.ranges`); ``percentile`` (in
    percent, e.g. 99.99) is used by the percentile method. Weights are ``weight_dtype``
    (int8), symmetric, per output channel when ``weight_per_channel``.
    """

    activation_dtype: str = "int8"
    symmetric: bool = True
    weight_per_channel: bool = True
    power_of_two: bool = False
    method: str = "minmax"
    percentile: float = 99.99
    weight_dtype: str = "int8"

    def __post_init__(self) -> None:
        for name in (self.activation_dtype, self.weight_dtype):
            if name not in DTYPES:
                raise ModelError(f"unsupported quantized dtype {name!r}; expected one of {', '.join(DTYPES)}")
        if self.method not in METHODS:
            raise ModelError(f"unknown calibration method {self.method!r}; expected one of {', '.join(METHODS)}")
        if not 50.0 < self.percentile <= 100.0:
            raise ModelError(f"percentile must be in (50, 100], got {self.percentile}")

    @property
    def activation_qrange(self) -> tuple[int, int]:
        """(qmin, qmax) of activation codes."""
        return qrange(self.activation_dtype, self.symmetric)

    @property
    def weight_qrange(self) -> tuple[int, int]:
        """(qmin, qmax) of weight codes (weights are symmetric)."""
        return qrange(self.weight_dtype, True)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of the fields."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "QuantScheme":
        """Inverse of :meth:`to_dict` (unknown keys are an error)."""
        names = set(cls.__dataclass_fields__)
        unknown = set(data) - names
        if unknown:
            raise ModelError(f"unknown quantization scheme field(s): {', '.join(sorted(unknown))}")
        return cls(**data)


@dataclass(frozen=True)
class QParams:
    """Quantization parameters of one tensor.

    Per-tensor: ``scale`` is a float and ``zero_point`` a 0-d int64 array. Per-channel:
    both are 1-d arrays with one entry per channel along ``axis`` of the tensor.
    """

    scale: float | np.ndarray
    zero_point: np.ndarray
    dtype: str
    axis: int | None
    qmin: int
    qmax: int

    @property
    def per_channel(self) -> bool:
        return self.axis is not None

    def broadcast(self, ndim: int) -> tuple[np.ndarray, np.ndarray]:
        """(scale as float32, zero_point as int64) shaped to broadcast against a rank-``ndim`` tensor."""
        scale = np.asarray(self.scale, dtype=np.float32)
        zero_point = np.asarray(self.zero_point, dtype=np.int64)
        if self.axis is None:
            return scale, zero_point
        if not -ndim <= self.axis < ndim:
            raise ModelError(f"quantization axis {self.axis} out of range for a rank-{ndim} tensor")
        shape = [1] * ndim
        shape[self.axis % ndim] = scale.size
        return scale.reshape(shape), zero_point.reshape(shape)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (scale and zero_point as numbers or lists)."""
        return {
            "scale": np.asarray(self.scale, dtype=np.float64).tolist(),
            "zero_point": np.asarray(self.zero_point).tolist(),
            "dtype": self.dtype,
            "axis": self.axis,
            "qmin": self.qmin,
            "qmax": self.qmax,
        }


def _pow2_ceil(scale: np.ndarray) -> np.ndarray:
    """Smallest power of two >= scale (elementwise, scale > 0)."""
    mantissa, exponent = np.frexp(scale)
    return np.ldexp(1.0, np.where(mantissa == 0.5, exponent - 1, exponent))


def qparams_from_range(
    lo: float | np.ndarray,
    hi: float | np.ndarray,
    dtype: str = "int8",
    symmetric: bool = True,
    power_of_two: bool = False,
    axis: int | None = None,
) -> QParams:
    """Scale and zero point that represent ``[lo, hi]`` (extended to contain 0).

    Symmetric: ``scale = amax / qmax`` (``amax = max(-lo, hi)``; for uint8 ``amax / 127``
    around zero point 128), zero point 0. Asymmetric: ``scale = (hi - lo) / (qmax - qmin)``,
    ``zero_point = round(qmin - lo / scale)`` (0 is then exactly representable).
    ``power_of_two`` rounds the scale UP to a power of two (the range stays covered) and
    re-derives the zero point inside the interval that still covers ``[lo, hi]``.
    Scales are rounded to float32; see ``MIN_SCALE`` for zero ranges. Array ``lo``/``hi``
    give per-channel parameters along ``axis``.
    """
    lo_a = np.minimum(np.asarray(lo, dtype=np.float64), 0.0)
    hi_a = np.maximum(np.asarray(hi, dtype=np.float64), 0.0)
    if not (np.all(np.isfinite(lo_a)) and np.all(np.isfinite(hi_a))):
        raise ModelError("quantization range is not finite")
    if lo_a.ndim > 1 or hi_a.ndim > 1 or (max(lo_a.ndim, hi_a.ndim) == 1) != (axis is not None):
        raise ModelError("per-channel ranges are 1-d arrays given with an axis; per-tensor ranges are scalars")
    lo_a, hi_a = np.broadcast_arrays(lo_a, hi_a)
    qmin, qmax = qrange(dtype, symmetric)
    if symmetric:
        amax = np.maximum(-lo_a, hi_a)
        half = (qmax - qmin) // 2
        scale = amax / half
    else:
        scale = (hi_a - lo_a) / (qmax - qmin)
    with np.errstate(over="ignore"):
        scale = np.asarray(scale, dtype=np.float32).astype(np.float64)
    if not np.all(np.isfinite(scale)):
        raise ModelError("quantization range too large for a float32 scale")
    degenerate = ~(scale >= MIN_SCALE)
    scale = np.where(degenerate, 1.0, scale)
    if power_of_two:
        scale = _pow2_ceil(scale)
    if symmetric:
        zero_point = np.full(scale.shape, (qmin + qmax + 1) // 2 if qmin == 0 else 0, dtype=np.int64)
    else:
        ideal = qmin - lo_a / scale
        zero_point = np.rint(ideal)
        if power_of_two:
            low, high = np.ceil(ideal), np.floor(qmax - hi_a / scale)
            zero_point = np.where(low <= high, np.clip(zero_point, low, high), zero_point)
        zero_point = np.asarray(np.clip(zero_point, qmin, qmax), dtype=np.int64)
    scale_out: float | np.ndarray = float(scale) if scale.ndim == 0 else scale
    return QParams(scale_out, zero_point, dtype, axis, qmin, qmax)


def qparams_for_weight(weight: np.ndarray, scheme: QuantScheme, axis: int = 0) -> QParams:
    """Symmetric weight parameters: per channel along ``axis`` (ONNX Conv/Gemm weight
    ``[M, ...]``: axis 0; MatMul ``B [K, N]``: axis 1) or per tensor, from the exact min/max."""
    obs = PerChannelMinMaxObserver(axis)
    obs.update(weight)
    if obs.min is None or obs.max is None:
        raise ModelError("weight has no values to quantize")
    lo = np.where(np.isfinite(obs.min), obs.min, 0.0)
    hi = np.where(np.isfinite(obs.max), obs.max, 0.0)
    if scheme.weight_per_channel:
        return qparams_from_range(lo, hi, scheme.weight_dtype, True, scheme.power_of_two, axis)
    return qparams_from_range(float(lo.min()), float(hi.max()), scheme.weight_dtype, True, scheme.power_of_two)


def quantize(x: np.ndarray, qp: QParams) -> tuple[np.ndarray, int]:
    """(codes in ``qp.dtype``, number of values saturated to qmin/qmax).

    ``round_half_even(x / scale) + zero_point`` in float32, saturated to ``[qmin, qmax]``.
    NaN maps to the zero point and counts as saturated; +-Inf saturate.
    """
    arr = np.asarray(x)
    scale, zero_point = qp.broadcast(arr.ndim)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        scaled = np.rint(arr.astype(np.float32, copy=False) / scale).astype(np.float64) + zero_point
    nan = np.isnan(scaled)
    low, high = scaled < qp.qmin, scaled > qp.qmax
    clipped = int(np.count_nonzero(low | high | nan))
    codes = np.clip(np.where(nan, np.broadcast_to(zero_point, scaled.shape), scaled), qp.qmin, qp.qmax)
    return codes.astype(DTYPES[qp.dtype]), clipped


def dequantize(q: np.ndarray, qp: QParams) -> np.ndarray:
    """``(q - zero_point) * scale`` as float32."""
    arr = np.asarray(q)
    scale, zero_point = qp.broadcast(arr.ndim)
    return ((arr.astype(np.int64) - zero_point).astype(np.float32) * scale).astype(np.float32)
