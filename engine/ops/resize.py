"""Resize (opset 10-19+) and the deprecated Upsample, separable along each resized axis.

Every resized axis maps output index y to a source coordinate x (per
``coordinate_transformation_mode``), then combines a few input samples:

* nearest: one sample, x rounded per ``nearest_mode``;
* linear / cubic: taps idx_k = ceil(x) - 1 + start + k with weights f((idx_k - x) * s'),
  f the triangle (support 1) or Keys cubic kernel (support 2, coefficient A);
  s' = min(scale, 1) when ``antialias`` (a widened, renormalised filter when downscaling),
  else 1. Taps outside the input read the edge sample, or get weight 0 with
  ``exclude_outside`` (the rest renormalised).

Coordinates are float64; samples are combined in float32 (float64 for float64 input) and
rounded/saturated back to integer dtypes. Output size from scales is floor(scale * size).

Known difference from onnxruntime (ONNX's own test values are followed): align_corners and
tf_crop_and_resize divide by (scale * size - 1), the un-truncated resized length, where
onnxruntime uses the integer output length; the two agree whenever scale * size is whole
(always with ``sizes``). Opset 10 / Upsample nearest uses onnxruntime's rule (floor when
upscaling an axis, ceil when downscaling), which the opset-10 spec leaves open.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from engine.graph import Node
from engine.ops import OpKernel, register

COORD_MODES = (
    "half_pixel",
    "half_pixel_symmetric",
    "pytorch_half_pixel",
    "align_corners",
    "asymmetric",
    "tf_crop_and_resize",
)
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil")
MODES = ("nearest", "linear", "cubic")
ASPECT_POLICIES = ("stretch", "not_larger", "not_smaller")


def _triangle(t: np.ndarray, a: float) -> np.ndarray:
    return np.clip(1.0 - np.abs(t), 0.0, 1.0)


def _keys_cubic(t: np.ndarray, a: float) -> np.ndarray:
    t = np.abs(t)
    t2, t3 = t * t, t * t * t
    near = (a + 2) * t3 - (a + 3) * t2 + 1
    far = a * t3 - 5 * a * t2 + 8 * a * t - 4 * a
    return np.where(t <= 1, near, np.where(t < 2, far, 0.0))


FILTERS: dict[str, tuple[Callable[[np.ndarray, float], np.ndarray], int]] = {
    "linear": (_triangle, 1),
    "cubic": (_keys_cubic, 2),
}


def source_coords(
    mode: str, out_size: int, in_size: int, scale: float, roi: tuple[float, float] | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Source coordinate (input index units, float64) of every output index along one axis,
    and for tf_crop_and_resize the mask of outputs that fall outside the input."""
    y = np.arange(out_size, dtype=np.float64)
    resized = scale * in_size  # the un-truncated output length the ONNX formulas use
    outside = None
    if mode == "align_corners":
        x = np.zeros(out_size) if resized == 1 else y * (in_size - 1) / (resized - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "pytorch_half_pixel":
        x = np.full(out_size, -0.5) if out_size == 1 else (y + 0.5) / scale - 0.5
    elif mode == "half_pixel_symmetric":
        offset = in_size / 2 * (1 - out_size / resized)
        x = offset + (y + 0.5) / scale - 0.5
    elif mode == "tf_crop_and_resize":
        start, end = roi if roi is not None else (0.0, 1.0)
        if resized == 1:
            x = np.full(out_size, (end - start) * (in_size - 1) / 2)
        else:
            x = y * (end - start) * (in_size - 1) / (resized - 1)
        x = x + start * (in_size - 1)
        outside = (x < 0) | (x > in_size - 1)
    else:  # half_pixel
        x = (y + 0.5) / scale - 0.5
    return x, outside


def nearest_index(x: np.ndarray, mode: str, scale: float) -> np.ndarray:
    """Rounded source index; ``simple`` is the opset-10/Upsample rule (floor, ceil when downscaling)."""
    if mode == "round_prefer_ceil":
        idx = np.floor(x + 0.5)
    elif mode == "floor":
        idx = np.floor(x)
    elif mode == "ceil":
        idx = np.ceil(x)
    elif mode == "simple":
        idx = np.ceil(x) if scale < 1 else np.floor(x)
    else:  # round_prefer_floor
        idx = np.ceil(x - 0.5)
    return idx.astype(np.int64)


def filter_taps(
    x: np.ndarray, in_size: int, kind: str, scale: float, antialias: bool, cubic_a: float, exclude_outside: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Input indices (O, n) clamped to the input, and their weights (O, n), for linear/cubic."""
    f, support = FILTERS[kind]
    s = min(scale, 1.0) if antialias else 1.0
    start = int(np.floor(-support / s)) + 1
    n = 2 - 2 * start
    idx = (np.ceil(x) - 1 + start).astype(np.int64)[:, None] + np.arange(n)[None, :]
    w = f((idx - x[:, None]) * s, cubic_a)
    if antialias:
        w = w / w.sum(axis=1, keepdims=True)
    if exclude_outside:
        w = np.where((idx < 0) | (idx >= in_size), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    return np.clip(idx, 0, in_size - 1), w


def resize_axis(
    data: np.ndarray,
    axis: int,
    out_size: int,
    scale: float,
    mode: str,
    coord_mode: str,
    nearest_mode: str,
    roi: tuple[float, float] | None,
    antialias: bool,
    cubic_a: float,
    exclude_outside: bool,
    extrapolation: float,
) -> np.ndarray:
    """Resize one axis of ``data`` (already in the compute dtype)."""
    in_size = data.shape[axis]
    x, outside = source_coords(coord_mode, out_size, in_size, scale, roi)
    bshape = [1] * data.ndim
    bshape[axis] = out_size
    if mode == "nearest":
        idx = np.clip(nearest_index(x, nearest_mode, scale), 0, in_size - 1)
        out = np.take(data, idx, axis=axis)
    else:
        idx, w = filter_taps(x, in_size, mode, scale, antialias, cubic_a, exclude_outside)
        w = w.astype(data.dtype)
        out = np.zeros(data.shape[:axis] + (out_size,) + data.shape[axis + 1 :], dtype=data.dtype)
        for k in range(idx.shape[1]):
            out += np.take(data, idx[:, k], axis=axis) * w[:, k].reshape(bshape)
    if outside is not None and outside.any():
        out = np.where(outside.reshape(bshape), np.asarray(extrapolation, dtype=data.dtype), out)
    return out


def _finish(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Back to the input dtype; integers are rounded and saturated."""
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return np.clip(np.rint(y), info.min, info.max).astype(dtype)
    return y.astype(dtype, copy=False)


def _compute_dtype(dtype: np.dtype) -> type:
    return np.float64 if dtype == np.float64 else np.float32


@register
class Resize(OpKernel):
    """Resize X by ``scales`` or to ``sizes`` (inputs X, roi, scales, sizes; opset 10: X, scales)."""

    op_type = "Resize"

    @classmethod
    def unsupported_reason(cls, node: Node, opset: int) -> str | None:
        a = node.attrs
        checks = (
            ("mode", "nearest", MODES),
            ("coordinate_transformation_mode", "half_pixel", COORD_MODES),
            ("nearest_mode", "round_prefer_floor", NEAREST_MODES),
            ("keep_aspect_ratio_policy", "stretch", ASPECT_POLICIES),
        )
        for name, default, allowed in checks:
            value = a.get(name, default)
            if value not in allowed:
                return f"{name} {value!r} is not one of {', '.join(allowed)}"
        if opset < 11 and a.get("mode", "nearest") == "cubic":
            return "cubic mode needs opset 11"
        return None

    def _run(
        self,
        x: np.ndarray,
        roi: np.ndarray | None = None,
        scales: np.ndarray | None = None,
        sizes: np.ndarray | None = None,
    ) -> np.ndarray:
        if self.opset < 11:  # Resize-10: (X, scales), asymmetric coordinates
            scales, roi, sizes = roi, None, None
            coord_mode, nearest_mode = "asymmetric", "simple"
        else:
            coord_mode = self.attr("coordinate_transformation_mode", "half_pixel")
            nearest_mode = self.attr("nearest_mode", "round_prefer_floor")
        rank = x.ndim
        axes_attr = self.attr("axes")
        axes = list(range(rank)) if axes_attr is None else [int(a) + rank if int(a) < 0 else int(a) for a in axes_attr]
        if scales is not None and np.asarray(scales).size == 0:
            scales = None
        if sizes is not None and np.asarray(sizes).size == 0:
            sizes = None
        if (scales is None) == (sizes is None):
            raise ValueError("exactly one of scales and sizes must be given")

        in_shape = [x.shape[a] for a in axes]
        if scales is not None:
            scale = [float(s) for s in np.asarray(scales, dtype=np.float64).reshape(-1)]
            if len(scale) != len(axes) or any(s <= 0 for s in scale):
                raise ValueError(f"scales {scale} do not fit {len(axes)} axes")
            out = [int(np.floor(s * d)) for s, d in zip(scale, in_shape)]
        else:
            out = [int(v) for v in np.asarray(sizes).reshape(-1)]
            if len(out) != len(axes):
                raise ValueError(f"sizes {out} do not fit {len(axes)} axes")
            scale = [o / d for o, d in zip(out, in_shape)]
            policy = self.attr("keep_aspect_ratio_policy", "stretch")
            if policy != "stretch":
                common = min(scale) if policy == "not_larger" else max(scale)
                scale = [common] * len(axes)
                out = [int(common * d + 0.5) for d in in_shape]

        roi_pairs: list[tuple[float, float] | None] = [None] * len(axes)
        if coord_mode == "tf_crop_and_resize":
            if roi is None or np.asarray(roi).size != 2 * len(axes):
                raise ValueError(f"tf_crop_and_resize needs a roi of {2 * len(axes)} values")
            r = np.asarray(roi, dtype=np.float64).reshape(-1)
            roi_pairs = [(float(r[i]), float(r[i + len(axes)])) for i in range(len(axes))]

        mode = self.attr("mode", "nearest")
        antialias = bool(self.attr("antialias", 0)) and mode != "nearest"
        cubic_a = float(self.attr("cubic_coeff_a", -0.75))
        exclude_outside = bool(self.attr("exclude_outside", 0))
        extrapolation = float(self.attr("extrapolation_value", 0.0))

        y = x if mode == "nearest" else x.astype(_compute_dtype(x.dtype), copy=False)
        for axis, size, o, s, pair in zip(axes, in_shape, out, scale, roi_pairs):
            identity = s == 1.0 and o == size and (pair is None or pair == (0.0, 1.0))
            if identity:
                continue
            if mode == "nearest" and pair is not None:
                y = y.astype(_compute_dtype(x.dtype), copy=False)  # extrapolation value may be fractional
            y = resize_axis(
                y, axis, o, s, mode, coord_mode, nearest_mode, pair, antialias, cubic_a, exclude_outside, extrapolation
            )
        return _finish(y, x.dtype) if y is not x else x.copy()


@register
class Upsample(OpKernel):
    """Deprecated (opset 7-9) upsampling: nearest (floor of y / scale) or n-linear, asymmetric coordinates."""

    op_type = "Upsample"

    @classmethod
    def unsupported_reason(cls, node: Node, opset: int) -> str | None:
        mode = node.attrs.get("mode", "nearest")
        if mode not in ("nearest", "linear", "bilinear"):
            return f"mode {mode!r} is not one of nearest, linear, bilinear"
        return None

    def _run(self, x: np.ndarray, scales: np.ndarray | None = None) -> np.ndarray:
        scale_list = [float(s) for s in np.asarray(self.attr("scales") if scales is None else scales).reshape(-1)]
        if len(scale_list) != x.ndim:
            raise ValueError(f"{len(scale_list)} scales for rank {x.ndim}")
        mode = "nearest" if self.attr("mode", "nearest") == "nearest" else "linear"
        y = x if mode == "nearest" else x.astype(_compute_dtype(x.dtype), copy=False)
        for axis, s in enumerate(scale_list):
            if s == 1.0:
                continue
            out = int(np.floor(s * x.shape[axis]))
            y = resize_axis(y, axis, out, s, mode, "asymmetric", "simple", None, False, -0.75, False, 0.0)
        return _finish(y, x.dtype) if y is not x else x.copy()
