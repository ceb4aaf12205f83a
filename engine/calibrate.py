"""Calibration: data sources, streaming per-tensor observers, sharded workers, and the plan.

Data (``open_data``)
--------------------
- an ``.npz`` file with one array per model input (keyed by input name; a single ``.npy``
  file for a one-input model); extra keys such as ``labels`` are ignored here;
- a folder of ``.npy`` / ``.npz`` files (name order), each as above;
- a folder of images (PNG, JPEG, BMP, PGM/PPM) with an :class:`ImagePreprocess`, read
  with Pillow (a dependency; should it be missing, the error says so in one line);
- seeded synthetic data (``DataSpec(kind="synthetic")``), flagged ``synthetic`` in results.

Sample axis: an array with the model input's rank has the samples along axis 0 (the
batch axis; a model with a fixed batch ``k`` takes ``k`` samples per run); an array of
rank + 1 holds one complete model input per entry of axis 0. Shapes and dtypes of every
file are checked against the model before anything runs (float inputs take float data,
integer inputs integer data); a mismatch is a one-line ModelError naming the input and
both shapes. Arrays are read in batches straight from the files (``.npy`` memory-mapped,
``.npz`` members streamed from the zip), so memory does not grow with the sample count.

Statistics (``calibrate``)
--------------------------
Every float activation (graph inputs and node outputs) gets a :class:`HistogramObserver`
(min/max plus an exactly mergeable histogram, from which MinMax/Percentile/Entropy/MSE
ranges are computed) and a :class:`PerChannelMinMaxObserver` along its channel axis
(axis 1 for NCHW tensors around Conv/BatchNorm/pooling, the last axis otherwise), used to
find outlier channels. ``workers > 1`` splits the samples, at batch boundaries, across
spawned processes that each load the model and data themselves; their statistics merge
exactly, so the plan equals the single-process one.

Plan (``build_plan``)
---------------------
Activation QParams from the chosen range method and scheme; weights of MatMul/Gemm/Conv/
ConvTranspose symmetric per output channel (or per tensor); per-node paths for float,
int16 and integer-vs-float-fallback choices.
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from dataclasses import dataclass, field, replace
from typing import Any, Callable, Iterable, Iterator, Literal, Sequence

import numpy as np

from engine.errors import Cancelled, ModelError
from engine.executor import executor_for, executor_with_weights
from engine.graph import Model, Node, TensorInfo
from engine.int8.plan import NodePath, QuantPlan, Rounding, permutation_input, propagate_passthrough
from engine.memory import check_allocation
from engine.quant.observers import MIN_EXPONENT, HistogramObserver, PerChannelMinMaxObserver, fit_exponent
from engine.quant.qparams import QParams, QuantScheme, qparams_for_weight, qparams_from_range
from engine.quant.ranges import compute_range

ProgressFn = Callable[[int, int], None]
CancelFn = Callable[[], bool]

FLOAT32_INTEGERS = 2**24
"""Integers of smaller magnitude are exact in float32."""

DEFAULT_BATCH = 16
"""Samples per executor run when the model's batch dimension is free."""

DEFAULT_SYNTHETIC_SAMPLES = 32
"""Synthetic samples generated when no count is given."""

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".pgm", ".ppm", ".pnm", ".tif", ".tiff")
ARRAY_EXTENSIONS = (".npy", ".npz")

CONV_LIKE_OPS = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "BatchNormalization",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
        "InstanceNormalization",
        "LpPool",
        "LRN",
    }
)
"""Ops whose activations are NCHW: their tensors' channel axis is 1."""

NONLINEAR_OPS: dict[str, frozenset[str]] = {
    "softmax": frozenset({"Softmax", "LogSoftmax"}),
    "gelu": frozenset({"Gelu", "Erf"}),
    "layernorm": frozenset({"LayerNormalization"}),
    "sigmoid": frozenset({"Sigmoid", "HardSigmoid"}),
}
"""Ops with an I-BERT integer mode or a float fallback, by the name used in ``integer_ops``
(a decomposed GELU is the Erf node of Div-Erf-Add-Mul-Mul)."""


# ----------------------------------------------------------------------------- arrays


def _is_pickle(path: str) -> bool:
    """True when the file starts like a Python pickle (protocol 2+)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
    except OSError:
        return False
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


def _read_header(fp: Any, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the ``.npy`` stream at ``fp`` (positioned at its start)."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fp)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(fp)
        elif version == (3, 0):  # utf-8 field names; numpy 2 keeps the reader in _format_impl
            impl = getattr(np.lib, "_format_impl", fmt)
            reader = getattr(impl, "_read_array_header", None) or getattr(fmt, "_read_array_header", None)
            if reader is None:
                raise ModelError(".npy format version 3.0 is not readable with this numpy", where)
            shape, fortran, dtype = reader(fp, version)
        else:
            raise ModelError(f"not a readable numpy array (unknown .npy format version {version[0]}.{version[1]})", where)
    except (ValueError, OSError, EOFError, SyntaxError) as e:
        raise ModelError(f"not a readable numpy array ({' '.join(str(e).split())[:160]})", where) from None
    dtype = np.dtype(dtype)
    if dtype.hasobject:
        raise ModelError("holds Python objects (pickled); only plain numeric arrays are accepted", where)
    if dtype.kind not in "biuf":
        raise ModelError(f"holds {dtype} data; only numeric (bool, integer, float) arrays are accepted", where)
    return tuple(int(d) for d in shape), bool(fortran), dtype


_READ_ERRORS = (zipfile.BadZipFile, zlib.error, OSError, EOFError, ValueError, NotImplementedError, KeyError)
"""What reading a damaged .npy/.npz raises (bad CRC, bad deflate stream, seek past the end, ...)."""


def _error_text(e: BaseException) -> str:
    return f"{type(e).__name__}: {' '.join(str(e).split())[:120]}"


class _Array:
    """One array in a ``.npy`` file or an ``.npz`` member, read by rows of axis 0.

    ``.npy`` files are memory-mapped; ``.npz`` members are streamed (the zip member is
    read forward; a backward jump reopens it). A Fortran-ordered array is read whole.
    """

    def __init__(self, path: str, member: str | None, where: str) -> None:
        self.path, self.member, self.where = path, member, where
        self._zip: zipfile.ZipFile | None = None
        self._fp: Any = None
        self._pos = 0
        self._whole: np.ndarray | None = None
        if member is None:
            with open(path, "rb") as f:
                self.shape, self.fortran, self.dtype = _read_header(f, where)
        else:
            try:
                with zipfile.ZipFile(path) as z, z.open(member) as f:
                    self.shape, self.fortran, self.dtype = _read_header(f, where)
            except _READ_ERRORS as e:
                raise ModelError(f"not a readable .npz member ({_error_text(e)})", where) from None

    @property
    def rows(self) -> int:
        return self.shape[0] if self.shape else 0

    def _row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize

    def _load_whole(self) -> np.ndarray:
        if self._whole is None:
            check_allocation(self.shape, self.dtype, "array", self.where)  # numpy allocates the header's shape
            if self.member is None:
                self._whole = np.load(self.path, allow_pickle=False)
            else:
                with np.load(self.path, allow_pickle=False) as data:
                    self._whole = data[self.member[: -len(".npy")] if self.member.endswith(".npy") else self.member]
        return self._whole

    def read(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of axis 0 (a fresh array); a damaged file is a ModelError."""
        try:
            return self._read(start, stop)
        except ModelError:
            raise
        except _READ_ERRORS as e:
            self.close()
            raise ModelError(f"array data cannot be read ({_error_text(e)})", self.where) from None

    def _read(self, start: int, stop: int) -> np.ndarray:
        if self.fortran and len(self.shape) > 1:
            return np.array(self._load_whole()[start:stop])
        if self.member is None:
            mm = np.load(self.path, mmap_mode="r", allow_pickle=False)
            return np.array(mm[start:stop])
        if self._fp is None or start < self._pos:
            self.close()
            self._zip = zipfile.ZipFile(self.path)
            self._fp = self._zip.open(self.member)
            _read_header(self._fp, self.where)
            self._pos = 0
        row = self._row_bytes()
        if start > self._pos:
            skip = (start - self._pos) * row
            while skip > 0:
                got = len(self._fp.read(min(skip, 1 << 24)))
                if got == 0:
                    raise ModelError("array data is truncated", self.where)
                skip -= got
            self._pos = start
        want = (stop - start) * row
        buf = self._fp.read(want)
        if len(buf) != want:
            raise ModelError("array data is truncated", self.where)
        self._pos = stop
        return np.frombuffer(buf, dtype=self.dtype).reshape((stop - start,) + self.shape[1:]).copy()

    def close(self) -> None:
        if self._fp is not None:
            self._fp.close()
            self._fp = None
        if self._zip is not None:
            self._zip.close()
            self._zip = None


def _open_arrays(path: str) -> dict[str, _Array]:
    """Arrays of an ``.npz`` (by key) or ``.npy`` (keyed by file stem), headers only."""
    if not os.path.exists(path):
        raise ModelError("no such file", path)
    if os.path.isdir(path):
        raise ModelError("is a folder, not an array file", path)
    if _is_pickle(path):
        raise ModelError("is a Python pickle, not numpy data (pickled data is refused)", path)
    if path.endswith(".npy"):
        stem = os.path.splitext(os.path.basename(path))[0]
        return {stem: _Array(path, None, path)}
    try:
        with zipfile.ZipFile(path) as z:
            members = [n for n in z.namelist() if n.endswith(".npy")]
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelError(f"not a readable .npz file ({type(e).__name__}: {' '.join(str(e).split())[:120]})", path) from None
    return {m[: -len(".npy")]: _Array(path, m, f"{path}[{m[:-4]}]") for m in members}


# ------------------------------------------------------------------------------ specs


@dataclass(frozen=True)
class ImagePreprocess:
    """How images become a model input: resize, scale, mean/std, channel order, layout.

    ``x = (pixels * scale - mean) / std`` per channel (``mean``/``std`` of length 1 or C),
    pixels in ``channel_order`` (``"RGB"`` or ``"BGR"``; one channel = greyscale), resized
    to ``size = (height, width)`` (None: the model input's static H and W), laid out
    ``"NCHW"`` or ``"NHWC"``.
    """

    size: tuple[int, int] | None = None
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    scale: float = 1.0 / 255.0
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channel_order: Literal["RGB", "BGR"] = "RGB"


@dataclass(frozen=True)
class DataSpec:
    """Where calibration samples come from; picklable, so a worker process can reopen it.

    ``kind``: ``"arrays"`` (an .npz/.npy file or a folder of them), ``"images"`` (a
    folder of images, with ``preprocess``) or ``"synthetic"`` (``samples`` seeded
    standard-normal / small-integer samples). ``limit`` caps the samples used.
    """

    kind: Literal["arrays", "images", "synthetic"]
    path: str | None = None
    samples: int = DEFAULT_SYNTHETIC_SAMPLES
    seed: int = 0
    limit: int | None = None
    preprocess: ImagePreprocess | None = None

    @property
    def synthetic(self) -> bool:
        return self.kind == "synthetic"


def data_spec(path: str | None, limit: int | None = None, preprocess: ImagePreprocess | None = None, seed: int = 0) -> DataSpec:
    """The spec for a path (file or folder; a folder of images when it holds image files),
    or synthetic samples when ``path`` is None (``limit`` of them, default 32)."""
    if limit is not None and limit < 1:
        raise ModelError(f"the number of samples must be at least 1, got {limit}")
    if path is None:
        return DataSpec("synthetic", samples=limit or DEFAULT_SYNTHETIC_SAMPLES, seed=seed)
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelError("no such file or folder", path)
    if os.path.isdir(path):
        names = os.listdir(path)
        has_images = any(n.lower().endswith(IMAGE_EXTENSIONS) for n in names)
        has_arrays = any(n.lower().endswith(ARRAY_EXTENSIONS) for n in names)
        if has_images and not has_arrays:
            return DataSpec("images", path, limit=limit, preprocess=preprocess or ImagePreprocess())
    return DataSpec("arrays", path, limit=limit)


# ---------------------------------------------------------------------- bound data


def _fmt_shape(shape: Sequence[Any] | None) -> str:
    if shape is None:
        return "?"
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _dtype_ok(data: np.dtype, want: np.dtype | None) -> bool:
    if want is None:
        return True
    if want.kind == "f":
        return data.kind == "f"
    if want.kind in "iu":
        return data.kind in "iu"
    if want.kind == "b":
        return data.kind in "biu"
    return data == want


@dataclass
class _Layout:
    """How one input's array maps to samples: ``"rows"`` (axis 0 is the model's batch axis)
    or ``"items"`` (each entry of axis 0 is a full model input)."""

    mode: Literal["rows", "items"]
    per_run: int | None  # samples per executor run when the model fixes it, else None


def _layout_for(info: TensorInfo, shape: tuple[int, ...], dtype: np.dtype, where: str) -> _Layout:
    """Check one array against a model input; ModelError naming input and shapes."""
    if not _dtype_ok(dtype, info.dtype):
        raise ModelError(f"input {info.name!r}: expected {info.dtype} values, got {dtype}", where)
    if info.shape is None:
        return _Layout("rows", None)
    rank = len(info.shape)
    if rank == 0:
        raise ModelError(f"input {info.name!r} is a scalar; calibration data needs a sample axis", where)

    def matches(data_dims: Sequence[int], model_dims: Sequence[Any]) -> bool:
        return len(data_dims) == len(model_dims) and all(
            not isinstance(m, int) or m == d for m, d in zip(model_dims, data_dims)
        )

    if len(shape) == rank and matches(shape[1:], info.shape[1:]):
        lead = info.shape[0]
        return _Layout("rows", lead if isinstance(lead, int) else None)
    if len(shape) == rank + 1 and matches(shape[1:], info.shape):
        lead = info.shape[0]
        return _Layout("items", 1 if isinstance(lead, int) else None)
    raise ModelError(
        f"input {info.name!r}: expected shape {_fmt_shape(info.shape)} (samples along axis 0) "
        f"or {_fmt_shape(('samples',) + tuple(info.shape))}, got {_fmt_shape(shape)}",
        where,
    )


@dataclass
class _Segment:
    """One file's arrays: samples ``[first, first + count)`` of the data set."""

    arrays: dict[str, _Array]
    layouts: dict[str, _Layout]
    first: int
    count: int
    labels: _Array | None = None


class CalibrationData:
    """Samples bound to a model, validated; iterate with :meth:`batches`."""

    def __init__(self, spec: DataSpec, model: Model) -> None:
        self.spec = spec
        self.model = model
        self.synthetic = spec.synthetic
        self.per_run: int | None = None  # samples per run fixed by the model (None: free)
        self._segments: list[_Segment] = []
        self._images: list[str] = []
        inputs = model.graph.inputs
        if not inputs:
            raise ModelError("the model has no inputs to calibrate with", model.path)
        if spec.kind == "synthetic":
            self._init_synthetic()
        elif spec.kind == "images":
            self._init_images()
        else:
            self._init_arrays()
        total = self._total()
        if spec.limit is not None:
            total = min(total, spec.limit)
        if self.per_run and total % self.per_run:
            total -= total % self.per_run
        if total <= 0:
            raise ModelError("holds no samples", spec.path or "synthetic data")
        self.num_samples = total

    # -- construction ----------------------------------------------------------

    @property
    def description(self) -> str:
        if self.spec.kind == "synthetic":
            return f"synthetic (seed {self.spec.seed})"
        return str(self.spec.path)

    def _total(self) -> int:
        if self.spec.kind == "synthetic":
            return self.spec.samples
        if self.spec.kind == "images":
            return len(self._images)
        return sum(s.count for s in self._segments)

    def _set_per_run(self, value: int | None, where: str) -> None:
        if value is None:
            return
        if self.per_run is not None and self.per_run != value:
            raise ModelError(f"inputs disagree on samples per run ({self.per_run} vs {value})", where)
        self.per_run = value

    def _init_synthetic(self) -> None:
        if self.spec.samples < 1:
            raise ModelError(f"the number of synthetic samples must be at least 1, got {self.spec.samples}")
        for info in self.model.graph.inputs:
            if info.shape is None:
                raise ModelError(f"input {info.name!r} has no declared shape; synthetic data needs one", self.model.path)
            if len(info.shape) == 0:
                raise ModelError(f"input {info.name!r} is a scalar (rank 0); synthetic data needs a sample axis", self.model.path)
            for axis, d in enumerate(info.shape):
                if not isinstance(d, int) and axis > 0:
                    raise ModelError(
                        f"input {info.name!r} has symbolic dimension {d!r}; bind it with --dim {d}=N", self.model.path
                    )
            if isinstance(info.shape[0], int):
                self._set_per_run(1, self.model.path)

    def _init_arrays(self) -> None:
        path = str(self.spec.path)
        if os.path.isdir(path):
            files = sorted(
                os.path.join(path, n) for n in os.listdir(path) if n.lower().endswith(ARRAY_EXTENSIONS)
            )
            if not files:
                raise ModelError("the folder holds no .npy or .npz files", path)
        else:
            files = [path]
        first = 0
        for f in files:
            seg = self._segment(f, first)
            self._segments.append(seg)
            first += seg.count

    def _segment(self, path: str, first: int) -> _Segment:
        arrays = _open_arrays(path)
        graph = self.model.graph
        names = graph.input_names
        if path.endswith(".npy"):
            if len(names) != 1:
                raise ModelError(f"a .npy file feeds one input, the model has {len(names)}: use an .npz", path)
            arrays = {names[0]: next(iter(arrays.values()))}
        missing = [n for n in names if n not in arrays]
        if missing:
            keys = ", ".join(sorted(arrays)) or "none"
            raise ModelError(f"no array for input {missing[0]!r} (keys: {keys})", path)
        layouts: dict[str, _Layout] = {}
        count: int | None = None
        for info in graph.inputs:
            arr = arrays[info.name]
            layout = _layout_for(info, arr.shape, arr.dtype, path)
            layouts[info.name] = layout
            self._set_per_run(layout.per_run, path)
            n = arr.rows
            if count is not None and n != count:
                raise ModelError(f"inputs hold different sample counts ({count} vs {n} for {info.name!r})", path)
            count = n
        labels = arrays.get("labels")
        if labels is not None and labels.rows != count:
            labels = None
        return _Segment({n: arrays[n] for n in names}, layouts, first, int(count or 0), labels)

    def _init_images(self) -> None:
        path = str(self.spec.path)
        try:
            import PIL.Image  # noqa: F401
        except ImportError:
            raise ModelError("reading images needs the Pillow package, which is not installed (pip install Pillow)", path) from None
        self._images = sorted(os.path.join(path, n) for n in os.listdir(path) if n.lower().endswith(IMAGE_EXTENSIONS))
        inputs = self.model.graph.inputs
        if len(inputs) != 1:
            raise ModelError(f"images feed a one-input model; the model has {len(inputs)} inputs", path)
        info = inputs[0]
        if info.shape is None or len(info.shape) != 4:
            raise ModelError(f"input {info.name!r}: images need a rank-4 input, got {_fmt_shape(info.shape)}", path)
        if info.dtype is not None and info.dtype.kind != "f":
            raise ModelError(f"input {info.name!r}: images need a float input, got {info.dtype}", path)
        prep = self.spec.preprocess or ImagePreprocess()
        c_axis = 1 if prep.layout == "NCHW" else 3
        channels = info.shape[c_axis]
        if channels not in (1, 3):
            raise ModelError(f"input {info.name!r}: images need 1 or 3 channels on axis {c_axis}, got {channels}", path)
        if prep.size is None:
            hw = [info.shape[a] for a in ((2, 3) if prep.layout == "NCHW" else (1, 2))]
            if not all(isinstance(d, int) for d in hw):
                raise ModelError(f"input {info.name!r} has no static height/width; give the resize size", path)
        if isinstance(info.shape[0], int):
            self._set_per_run(info.shape[0], path)

    # -- reading ---------------------------------------------------------------

    def _image(self, path: str) -> np.ndarray:
        """One preprocessed image as (C, H, W) or (H, W, C) float32."""
        import PIL.Image

        info = self.model.graph.inputs[0]
        prep = self.spec.preprocess or ImagePreprocess()
        nchw = prep.layout == "NCHW"
        channels = info.shape[1 if nchw else 3]  # type: ignore[index]
        size = prep.size or tuple(info.shape[2:4] if nchw else info.shape[1:3])  # type: ignore[index]
        try:
            with PIL.Image.open(path) as im:
                im = im.convert("L" if channels == 1 else "RGB").resize((int(size[1]), int(size[0])))
                pixels = np.asarray(im, dtype=np.float32)
        except (OSError, ValueError) as e:
            raise ModelError(f"not a readable image ({' '.join(str(e).split())[:120]})", path) from None
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        if channels == 3 and prep.channel_order == "BGR":
            pixels = pixels[:, :, ::-1]
        mean = np.asarray(prep.mean, dtype=np.float32)
        std = np.asarray(prep.std, dtype=np.float32)
        x = (pixels * np.float32(prep.scale) - mean) / std
        return np.ascontiguousarray(x.transpose(2, 0, 1) if nchw else x, dtype=np.float32)

    def _synthetic(self, start: int, stop: int) -> dict[str, np.ndarray]:
        """Samples ``start:stop``; sample ``i`` depends only on (seed, i), whatever the batching."""
        feeds: dict[str, list[np.ndarray]] = {}
        for i in range(start, stop):
            rng = np.random.default_rng([self.spec.seed, i])
            for info in self.model.graph.inputs:
                shape = tuple(d if isinstance(d, int) else 1 for d in info.shape)  # type: ignore[union-attr]
                dtype = info.dtype or np.dtype(np.float32)
                check_allocation(shape, np.float64, f"input {info.name!r}", self.model.path)  # drawn in float64
                if dtype.kind == "f":
                    value = rng.standard_normal(shape).astype(dtype)
                elif dtype.kind == "b":
                    value = rng.integers(0, 2, size=shape).astype(bool)
                else:
                    value = rng.integers(0, 8, size=shape).astype(dtype)
                feeds.setdefault(info.name, []).append(value)
        return {k: np.concatenate(v, axis=0) for k, v in feeds.items()}

    def _read_arrays(self, start: int, stop: int, with_labels: bool) -> tuple[dict[str, np.ndarray], np.ndarray | None]:
        parts: dict[str, list[np.ndarray]] = {}
        label_parts: list[np.ndarray] = []
        labels_ok = with_labels
        for seg in self._segments:
            lo, hi = max(start, seg.first), min(stop, seg.first + seg.count)
            if lo >= hi:
                continue
            for name, arr in seg.arrays.items():
                block = arr.read(lo - seg.first, hi - seg.first)
                if seg.layouts[name].mode == "items":
                    block = block.reshape((-1,) + block.shape[2:])
                parts.setdefault(name, []).append(block)
            if with_labels:
                if seg.labels is None:
                    labels_ok = False
                else:
                    label_parts.append(seg.labels.read(lo - seg.first, hi - seg.first))
        feeds = {k: v[0] if len(v) == 1 else np.concatenate(v, axis=0) for k, v in parts.items()}
        labels = np.concatenate(label_parts, axis=0) if labels_ok and label_parts else None
        return feeds, labels

    def _cast(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for info in self.model.graph.inputs:
            value = feeds[info.name]
            if info.dtype is not None and value.dtype != info.dtype:
                value = value.astype(info.dtype)
            out[info.name] = value
        return out

    @property
    def has_labels(self) -> bool:
        """True when every file holds a ``labels`` array with one label per sample."""
        return bool(self._segments) and all(s.labels is not None for s in self._segments)

    def run_size(self, batch: int = DEFAULT_BATCH) -> int:
        """Samples per executor run: the model's fixed count, or ``batch``."""
        return self.per_run or max(1, batch)

    def batches(
        self, batch: int = DEFAULT_BATCH, start: int = 0, stop: int | None = None, with_labels: bool = False
    ) -> Iterator[tuple[int, dict[str, np.ndarray], np.ndarray | None]]:
        """``(samples, feeds, labels or None)`` for samples ``start:stop`` in runs of :meth:`run_size`.

        Runs end at multiples of the run size counted from sample 0 and, when the model's
        batch is free, at file boundaries (files may differ in symbolic dimensions); so any
        split of the samples at a multiple of the run size sees exactly the same runs.
        """
        stop = self.num_samples if stop is None else min(stop, self.num_samples)
        size = self.run_size(batch)
        try:
            pos = start
            while pos < stop:
                end = min(stop, (pos // size + 1) * size)
                if self.per_run is None:  # a free batch never spans two files (their shapes may differ)
                    for seg in self._segments:
                        if pos < seg.first + seg.count < end:
                            end = seg.first + seg.count
                            break
                if self.spec.kind == "synthetic":
                    feeds, labels = self._synthetic(pos, end), None
                elif self.spec.kind == "images":
                    x = np.stack([self._image(p) for p in self._images[pos:end]])
                    feeds, labels = {self.model.graph.inputs[0].name: x}, None
                else:
                    feeds, labels = self._read_arrays(pos, end, with_labels)
                yield end - pos, self._cast(feeds), labels
                pos = end
        finally:
            self.close()

    def close(self) -> None:
        for seg in self._segments:
            for arr in seg.arrays.values():
                arr.close()
            if seg.labels is not None:
                seg.labels.close()


def open_data(spec: DataSpec, model: Model) -> CalibrationData:
    """Bind a data spec to a model, checking every file's shapes and dtypes (ModelError)."""
    return CalibrationData(spec, model)


def evaluation_source(path: str, model: Model, limit: int | None = None) -> tuple[DataSpec | None, np.ndarray | None]:
    """A labels file: ``(spec, None)`` when it also holds every model input (evaluate on it,
    labels read along), else ``(None, labels)`` with its ``labels`` array (int, one per sample)."""
    path = os.fspath(path)
    arrays = _open_arrays(path)
    if "labels" not in arrays:
        raise ModelError(f"no 'labels' array (keys: {', '.join(sorted(arrays)) or 'none'})", path)
    lab = arrays["labels"]
    if lab.dtype.kind not in "iub" or len(lab.shape) == 0:
        raise ModelError(f"'labels' must be integers with a sample axis, got {lab.dtype} {_fmt_shape(lab.shape)}", path)
    if all(n in arrays for n in model.graph.input_names):
        return data_spec(path, limit=limit), None
    try:
        return None, lab.read(0, lab.rows).astype(np.int64)
    finally:
        lab.close()


# -------------------------------------------------------------------- statistics


def channel_axis(model: Model, name: str, ndim: int) -> int | None:
    """The channel axis of an activation: 1 for NCHW tensors next to Conv/BN/pooling ops,
    else the last axis; None for tensors of rank < 2."""
    if ndim < 2:
        return None
    if ndim >= 3:
        graph = model.graph
        cache = getattr(model, "_nchw_tensors", None)
        if cache is None:
            cache = set()
            for node in graph.nodes:
                if node.op_type in CONV_LIKE_OPS:
                    cache.update(t for t in (node.inputs[:1] + node.outputs) if t)
            model._nchw_tensors = cache  # type: ignore[attr-defined]
        if name in cache:
            return 1
    return ndim - 1


@dataclass
class CalibrationStats:
    """Mergeable statistics of a model's float activations over some samples.

    ``tensors``: name -> HistogramObserver of all values; ``channels``: name ->
    per-channel min/max along ``channel_axes[name]`` (absent for scalars/vectors and for
    tensors whose channel count changed between runs).
    """

    tensors: dict[str, HistogramObserver] = field(default_factory=dict)
    channels: dict[str, PerChannelMinMaxObserver] = field(default_factory=dict)
    channel_axes: dict[str, int] = field(default_factory=dict)
    samples: int = 0
    runs: int = 0
    synthetic: bool = False
    source: str = ""
    order: list[str] = field(default_factory=list)
    # collection bookkeeping for observe_same: tensor -> the run it was last fed in, and
    # mirror -> (source, run) of its last copy
    _fed_run: dict[str, int] = field(default_factory=dict, repr=False, compare=False)
    _copied: dict[str, tuple[str, int]] = field(default_factory=dict, repr=False, compare=False)

    def observe(self, model: Model, name: str, value: np.ndarray) -> None:
        """Feed one float tensor (see :func:`observe_tensor`)."""
        self._fed_run[name] = self.runs
        obs = self.tensors.get(name)
        if obs is None:
            obs = self.tensors[name] = HistogramObserver()
            self.order.append(name)
        ch = self._channel_observer(model, name, value.ndim)
        try:
            observe_tensor(obs, ch, value)
        except ModelError:  # channel count changed between runs: no per-channel view
            del self.channels[name]
            observe_tensor(obs, None, value)

    def _channel_observer(self, model: Model, name: str, ndim: int) -> PerChannelMinMaxObserver | None:
        """The per-channel observer of ``name`` (made on its first observation when the
        tensor has a channel axis), or None."""
        if name not in self.channel_axes:
            axis = channel_axis(model, name, ndim)
            if axis is not None:
                self.channel_axes[name] = axis
                self.channels[name] = PerChannelMinMaxObserver(axis)
        return self.channels.get(name)

    def observe_output(self, model: Model, node: Node, name: str, value: np.ndarray) -> None:
        """Feed output ``name`` of ``node``: :meth:`observe_same` for a permutation of an
        activation (:func:`engine.int8.plan.permutation_input`), else :meth:`observe`."""
        source = permutation_input(node) if name == node.outputs[0] else None
        if source is not None and source not in model.graph.weights:
            self.observe_same(model, name, source, value)
        else:
            self.observe(model, name, value)

    def observe_same(self, model: Model, name: str, source: str, value: np.ndarray) -> None:
        """Feed ``value``, which holds exactly the values of ``source`` rearranged (the
        output of a :data:`engine.int8.plan.PERMUTATION_OPS` node), ``source`` having been
        fed in this run. The histogram observer of such a tensor always equals its source's
        (the same values in every run), so it is copied instead of computed again (a bin
        index and a count per value); the per-channel min/max, along this tensor's own
        channel axis, is computed. Any other history (a first run that fed only one of the
        two, a changed source) takes :meth:`observe`."""
        src = self.tensors.get(source)
        obs = self.tensors.get(name)
        runs = self.runs
        fresh = obs is None and runs == 0
        in_step = obs is not None and self._copied.get(name) == (source, runs - 1)
        if src is None or self._fed_run.get(source) != runs or not (fresh or in_step):
            self.observe(model, name, value)
            return
        if obs is None:
            self.order.append(name)
        self.tensors[name] = replace(src, counts=src.counts.copy())
        self._fed_run[name] = runs
        self._copied[name] = (source, runs)
        ch = self._channel_observer(model, name, value.ndim)
        if ch is not None:
            try:
                observe_channels(ch, value)
            except ModelError:  # channel count changed between runs: no per-channel view
                del self.channels[name]

    def merge(self, other: "CalibrationStats") -> "CalibrationStats":
        """Statistics equal to one collection over both sample sets."""
        out = CalibrationStats(
            samples=self.samples + other.samples,
            runs=self.runs + other.runs,
            synthetic=self.synthetic or other.synthetic,
            source=self.source or other.source,
        )
        out.order = list(dict.fromkeys(self.order + other.order))
        for name in out.order:
            a, b = self.tensors.get(name), other.tensors.get(name)
            out.tensors[name] = a.merge(b) if a is not None and b is not None else (a or b)  # type: ignore[assignment]
        out.channel_axes = {**other.channel_axes, **self.channel_axes}
        for name in set(self.channels) | set(other.channels):
            a_ch, b_ch = self.channels.get(name), other.channels.get(name)
            in_a, in_b = name in self.tensors, name in other.tensors
            if a_ch is not None and b_ch is not None:
                try:
                    out.channels[name] = a_ch.merge(b_ch)
                except ModelError:
                    pass
            elif (a_ch is not None and not in_b) or (b_ch is not None and not in_a):
                out.channels[name] = a_ch or b_ch  # type: ignore[assignment]
        return out


def observe_channels(ch: PerChannelMinMaxObserver, value: np.ndarray) -> tuple[float, float] | None:
    """``ch.update(value)``, for a non-empty float32 tensor in float32 reductions (exact);
    returns the tensor's (min, max) when both are finite (else None, after ``ch.update``)."""
    arr = np.asarray(value)
    if not (arr.dtype == np.float32 and arr.size > 0 and arr.ndim > 0):
        ch.update(arr)
        return None
    axis = ch.axis % arr.ndim if -arr.ndim <= ch.axis < arr.ndim else None
    if axis is None:
        raise ModelError(f"channel axis {ch.axis} out of range for a rank-{arr.ndim} tensor")
    if arr.ndim == 1:
        ch_min, ch_max = arr.astype(np.float64), arr.astype(np.float64)
    elif axis == arr.ndim - 1:
        flat = arr.reshape(-1, arr.shape[-1])
        ch_min, ch_max = flat.min(axis=0).astype(np.float64), flat.max(axis=0).astype(np.float64)
    else:
        others = tuple(i for i in range(arr.ndim) if i != axis)
        ch_min, ch_max = arr.min(axis=others).astype(np.float64), arr.max(axis=others).astype(np.float64)
    if ch.min is not None and ch.min.shape != ch_min.shape:
        raise ModelError(f"channel count changed from {ch.min.size} to {ch_min.size}")
    lo, hi = float(ch_min.min()), float(ch_max.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        ch.update(arr)
        return None
    ch.min = ch_min if ch.min is None else np.minimum(ch.min, ch_min)
    ch.max = ch_max if ch.max is None else np.maximum(ch.max, ch_max)
    ch.count += int(arr.size)
    return lo, hi


def observe_tensor(obs: HistogramObserver, ch: PerChannelMinMaxObserver | None, value: np.ndarray) -> None:
    """Feed ``value`` to a histogram observer and (optionally) a per-channel observer.

    The states are exactly those of ``obs.update(value)`` and ``ch.update(value)``; for
    all-finite float32 tensors (the usual case) they are computed without float64 copies:
    per-channel min/max are float32 reductions (exact), the global min/max come from them,
    and bin indices ``floor(x * 2**-exponent)`` are exact in float32 (a power-of-two scaling
    that cannot underflow for exponents <= 0 nor overflow within the observer's index bound).
    Anything else (NaN/Inf, other dtypes, very fine or coarse grids) takes the observers' own
    ``update``.
    """
    arr = np.asarray(value)
    fast = arr.dtype == np.float32 and arr.size > 0 and arr.ndim > 0
    if fast and ch is not None:
        extremes = observe_channels(ch, arr)
        if extremes is None:
            fast = False
        else:
            lo, hi = extremes
    elif fast:
        lo, hi = float(arr.min()), float(arr.max())
    elif ch is not None:
        ch.update(arr)
    if not fast or not (math.isfinite(lo) and math.isfinite(hi)):
        obs.update(arr)
        return
    new_min, new_max = min(obs.min, lo), max(obs.max, hi)
    floor_exp = MIN_EXPONENT if obs.exponent is None else obs.exponent
    exponent = fit_exponent(new_min, new_max, floor_exp, obs.num_bins)
    if not -126 <= exponent <= 0:
        obs.update(arr)
        return
    obs.count += int(arr.size)
    obs.min, obs.max = new_min, new_max
    offset = math.floor(math.ldexp(new_min, -exponent))
    if exponent != obs.exponent or offset != obs.offset:
        obs.counts = obs._rebinned(exponent, offset)
        obs.exponent, obs.offset = exponent, offset
    scaled = arr.reshape(-1) * np.float32(math.ldexp(1.0, -exponent))
    np.floor(scaled, out=scaled)
    if offset and abs(offset) < FLOAT32_INTEGERS:
        # integers in float32 minus an integer, the difference a bin index: exact, and a
        # 4-byte pass instead of an 8-byte one after the cast
        scaled -= np.float32(offset)
        index = scaled.astype(np.intp)
    else:
        index = scaled.astype(np.int64)
        if offset:
            index -= offset
    obs.counts += np.bincount(index, minlength=obs.num_bins)


def _float_tensor(value: Any) -> bool:
    return isinstance(value, np.ndarray) and value.dtype.kind == "f"


def _collect(
    model: Model,
    data: CalibrationData,
    start: int,
    stop: int,
    batch: int,
    progress: ProgressFn | None,
    cancel: CancelFn | None,
    stats: CalibrationStats | None = None,
) -> CalibrationStats:
    """Statistics over samples ``start:stop`` in this process (added to ``stats`` when given)."""
    if stats is None:
        stats = CalibrationStats(synthetic=data.synthetic, source=data.description)
    executor = executor_for(model)
    weights = model.graph.weights

    def hook(node: Node, inputs: Sequence[np.ndarray | None], outputs: tuple[np.ndarray, ...]) -> None:
        for name, value in zip(node.outputs, outputs):
            if name and name not in weights and _float_tensor(value):
                stats.observe_output(model, node, name, value)
        return None

    done = 0
    total = stop - start
    for n, feeds, _ in data.batches(batch, start, stop):
        if cancel is not None and cancel():
            raise Cancelled("calibration cancelled")
        for name, value in feeds.items():
            if _float_tensor(value):
                stats.observe(model, name, value)
        executor.run(feeds, hook=hook)
        stats.samples += n
        stats.runs += 1
        done += n
        if progress is not None:
            progress(done, total)
    return stats


def _shards(num_samples: int, run_size: int, workers: int) -> list[tuple[int, int]]:
    """Contiguous sample ranges, split at run boundaries, as even as the runs allow."""
    runs = -(-num_samples // run_size)
    workers = max(1, min(workers, runs))
    bounds = [round(i * runs / workers) for i in range(workers + 1)]
    return [(min(a * run_size, num_samples), min(b * run_size, num_samples)) for a, b in zip(bounds, bounds[1:]) if b > a]


def _worker_main(
    messages: Any, index: int, model_path: str, dims: dict[str, int], spec: DataSpec, start: int, stop: int, batch: int
) -> None:
    """Entry point of a calibration worker process (spawned): load, collect, send back."""
    try:
        from engine.loader import load_model

        model = load_model(model_path, dims=dims or None)
        data = open_data(spec, model)
        last = [0]

        def progress(done: int, total: int) -> None:
            messages.put(("progress", index, done - last[0]))
            last[0] = done

        stats = _collect(model, data, start, stop, batch, progress, None)
        messages.put(("result", index, stats))
    except ModelError as e:
        messages.put(("error", index, str(e)))
    except BaseException as e:  # report, never hang the parent
        messages.put(("error", index, f"calibration worker failed: {type(e).__name__}: {' '.join(str(e).split())[:200]}"))


def _thread_env(workers: int) -> dict[str, str]:
    """BLAS/OpenMP thread counts for workers (so N workers do not oversubscribe the cores)."""
    threads = str(max(1, (os.cpu_count() or 1) // workers))
    return {k: threads for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS") if k not in os.environ}


def _collect_parallel(
    model: Model,
    data: CalibrationData,
    shards: list[tuple[int, int]],
    batch: int,
    progress: ProgressFn | None,
    cancel: CancelFn | None,
) -> CalibrationStats:
    import multiprocessing as mp

    if not os.path.isfile(model.path):
        raise ModelError("calibration workers load the model from its file; this model has none", model.path)
    ctx = mp.get_context("spawn")
    messages = ctx.Queue()
    env = _thread_env(len(shards))
    saved = {k: os.environ.get(k) for k in env}
    procs = []
    import signal
    import threading

    in_main = threading.current_thread() is threading.main_thread()
    old_sigint = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main else None
    try:
        # inherited by the spawned interpreters at start: BLAS threads per worker, and an
        # ignored SIGINT (Ctrl-C stops the parent, which terminates its workers)
        os.environ.update(env)
        for i, (a, b) in enumerate(shards):
            p = ctx.Process(
                target=_worker_main,
                args=(messages, i, model.path, dict(model.dims), data.spec, a, b, batch),
                daemon=True,
            )
            p.start()
            procs.append(p)
    finally:
        if in_main:
            signal.signal(signal.SIGINT, old_sigint)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    from engine.shards import gather

    results = gather(procs, messages, sum(b - a for a, b in shards), progress, cancel, "calibration")
    merged = results[0]
    for i in range(1, len(procs)):
        merged = merged.merge(results[i])
    return merged


def calibrate(
    model: Model,
    data: CalibrationData,
    batch: int = DEFAULT_BATCH,
    workers: int = 1,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> CalibrationStats:
    """Observe every float activation over all samples of ``data``.

    ``workers > 1`` shards the samples (at run boundaries) over worker processes: forked
    ones when forking is safe (:func:`engine.shards.fork_is_safe`), else spawned ones that
    load the model from ``model.path`` themselves; statistics merge exactly. ``progress``
    gets (samples done, samples total); ``cancel()`` returning True raises Cancelled.
    """
    if workers < 1:
        raise ModelError(f"workers must be at least 1, got {workers}")
    shards = _shards(data.num_samples, data.run_size(batch), workers)
    if len(shards) <= 1:
        return _collect(model, data, 0, data.num_samples, batch, progress, cancel)
    from engine.shards import fork_is_safe, run_forked

    if fork_is_safe():  # forked workers start at once with the model and data already open
        executor_with_weights(model)  # built and read once, shared by the workers
        # one shard per run: a free worker takes the next (balance), continuing its own
        # statistics (whose merge is exact in any order), so only its total comes back
        runs = _shards(data.num_samples, data.run_size(batch), data.num_samples)

        def work(start: int, stop: int, prog: ProgressFn, previous: CalibrationStats | None) -> CalibrationStats:
            return _collect(model, data, start, stop, batch, prog, None, previous)

        # file handles are shared with the parent: each worker reopens its own
        parts = run_forked(work, runs, progress, cancel, "calibration", len(shards), running=True, on_start=data.close)
        merged = parts[0]
        for part in parts[1:]:
            merged = merged.merge(part)
        return merged
    return _collect_parallel(model, data, shards, batch, progress, cancel)


# ------------------------------------------------------------------------- plans


def _select(model: Model, items: Iterable[str] | None, what: str) -> set[str]:
    """Node names matched by op types (case-insensitive) or node names; unknown items are an error."""
    if not items:
        return set()
    nodes = model.graph.nodes
    by_op: dict[str, list[str]] = {}
    for n in nodes:
        by_op.setdefault(n.op_type.lower(), []).append(n.name)
    names = {n.name for n in nodes}
    chosen: set[str] = set()
    for item in items:
        item = item.strip()
        if not item:
            continue
        if item in names:
            chosen.add(item)
        elif item.lower() in by_op:
            chosen.update(by_op[item.lower()])
        else:
            raise ModelError(f"{what}: no node or op type named {item!r} in the model", model.path)
    return chosen


def _nonlinear_kind(op_type: str) -> str | None:
    for kind, ops in NONLINEAR_OPS.items():
        if op_type in ops:
            return kind
    return None


def weight_axis(node: Node, index: int, ndim: int) -> int | None:
    """Output-channel axis of the weight at input ``index`` of ``node``, or None when the
    input is not a quantized weight (MatMul B ``[.., K, N]``: last axis; MatMul A as the
    weight: rows; Gemm B: 0 with transB else 1; Conv: 0; ConvTranspose: 1)."""
    op = node.op_type
    if op == "MatMul" and ndim >= 2:
        return ndim - 1 if index == 1 else (ndim - 2 if index == 0 else None)
    if op == "Gemm" and index == 1 and ndim == 2:
        return 0 if int(node.attrs.get("transB", 0) or 0) else 1
    if op == "Conv" and index == 1 and ndim >= 3:
        return 0
    if op == "ConvTranspose" and index == 1 and ndim >= 3 and int(node.attrs.get("group", 1) or 1) == 1:
        return 1
    return None


def quantized_weights(model: Model) -> dict[str, tuple[Node, int]]:
    """Float initializer name -> (the node that uses it as a weight, its channel axis)."""
    graph = model.graph
    result: dict[str, tuple[Node, int]] = {}
    for node in graph.nodes:
        if node.op_type not in ("MatMul", "Gemm", "Conv", "ConvTranspose"):
            continue
        for index, name in enumerate(node.inputs[:2]):
            if not name or name not in graph.weights or name in result:
                continue
            info = graph.weights.info[name]
            if info.dtype is None or np.dtype(info.dtype).kind != "f" or info.shape is None:
                continue
            if node.op_type == "MatMul" and index == 0 and node.inputs[1] in graph.weights:
                continue  # both constant: treat B as the weight
            axis = weight_axis(node, index, len(info.shape))
            if axis is not None:
                result[name] = (node, axis)
    return result


def activation_qparams(obs: HistogramObserver, scheme: QuantScheme, dtype: str | None = None) -> tuple[QParams, tuple[float, float]]:
    """QParams of one activation from its observer (the scheme's method), and the range used."""
    dtype = dtype or scheme.activation_dtype
    qp0 = qparams_from_range(0.0, 0.0, dtype, scheme.symmetric)
    lo, hi = compute_range(obs, scheme.method, scheme.symmetric, qp0.qmin, qp0.qmax, scheme.percentile)
    return qparams_from_range(lo, hi, dtype, scheme.symmetric, scheme.power_of_two), (float(lo), float(hi))


def build_plan(
    model: Model,
    observers: CalibrationStats,
    scheme: QuantScheme,
    float_ops: Iterable[str] | None = None,
    int16_ops: Iterable[str] | None = None,
    integer_ops: Iterable[str] | None = None,
    rounding: Rounding = "half_even_float",
) -> QuantPlan:
    """A QuantPlan from calibration statistics.

    - Activations: every observed float tensor with finite values gets QParams of the
      scheme's dtype from the scheme's range method (int16, symmetric or not per the
      scheme, for outputs of nodes selected by ``int16_ops``: A16W8, weights stay int8).
      Outputs of nodes kept in float get QParams only when a non-float node reads them
      (that node quantizes them on entry).
    - Weights: float initializers used as MatMul/Gemm/Conv/ConvTranspose weights by nodes
      not kept in float: symmetric, per output channel when ``scheme.weight_per_channel``.
    - Pass-through ops (Reshape, Transpose, MaxPool, ...) then give their outputs their
      input's QParams (:func:`engine.int8.plan.propagate_passthrough`).
    - Paths: ``float_ops`` (op types or node names) -> ``"float"``. ``integer_ops`` (None:
      the executor's defaults) names which of ``softmax``, ``gelu``, ``layernorm``,
      ``sigmoid`` (or their op types) run the I-BERT integer kernels; nodes of the other
      kinds get ``"float_fallback"``.
    """
    graph = model.graph
    float_nodes = _select(model, float_ops, "--float-ops")
    int16_nodes = _select(model, int16_ops, "--int16-ops")
    paths: dict[str, NodePath] = {n: "float" for n in float_nodes}
    if integer_ops is not None:
        kinds: set[str] = set()
        for item in integer_ops:
            item = item.strip()
            if not item:
                continue
            kind = item.lower() if item.lower() in NONLINEAR_OPS else _nonlinear_kind(item)
            if kind is None:
                raise ModelError(
                    f"--integer-ops: {item!r} is not one of {', '.join(NONLINEAR_OPS)} (or their op types)", model.path
                )
            kinds.add(kind)
        for node in graph.nodes:
            kind = _nonlinear_kind(node.op_type)
            if kind is not None and node.name not in paths:
                paths[node.name] = "integer" if kind in kinds else "float_fallback"

    producers = graph.producers()
    consumers = graph.consumers()
    activations: dict[str, QParams] = {}
    ranges: dict[str, list[float]] = {}
    skipped: list[str] = []
    for name in observers.order:
        obs = observers.tensors[name]
        producer = producers.get(name)
        if producer is not None and producer.name in float_nodes:
            if all(c.name in float_nodes for c in consumers.get(name, [])):
                continue
        if obs.count == 0:
            skipped.append(name)
            continue
        dtype = "int16" if producer is not None and producer.name in int16_nodes else None
        qp, rng = activation_qparams(obs, scheme, dtype)
        activations[name] = qp
        ranges[name] = [rng[0], rng[1]]

    weights: dict[str, QParams] = {}
    for name, (node, axis) in quantized_weights(model).items():
        if node.name in float_nodes:
            continue
        weights[name] = qparams_for_weight(np.asarray(graph.weights[name]), scheme, axis)

    plan = QuantPlan(
        scheme=scheme,
        activations=activations,
        weights=weights,
        paths=paths,
        rounding=rounding,
        source="calibration",
        calibration={
            "method": scheme.method,
            "percentile": scheme.percentile if scheme.method == "percentile" else None,
            "samples": observers.samples,
            "synthetic": observers.synthetic,
            "data": observers.source,
            "ranges": ranges,
            "unobserved": skipped,
        },
    )
    plan = propagate_passthrough(model, plan)
    for name in list(ranges):  # pass-through outputs now carry their input's parameters
        if plan.activations.get(name) is not activations[name]:
            del ranges[name]
    return plan


def calibrate_plan(
    model: Model,
    spec: DataSpec,
    scheme: QuantScheme,
    float_ops: Iterable[str] | None = None,
    int16_ops: Iterable[str] | None = None,
    integer_ops: Iterable[str] | None = None,
    rounding: Rounding = "half_even_float",
    batch: int = DEFAULT_BATCH,
    workers: int = 1,
    progress: ProgressFn | None = None,
    cancel: CancelFn | None = None,
) -> tuple[QuantPlan, CalibrationStats]:
    """Open the data, calibrate, build the plan: the whole calibration in one call."""
    data = open_data(spec, model)
    stats = calibrate(model, data, batch=batch, workers=workers, progress=progress, cancel=cancel)
    plan = build_plan(model, stats, scheme, float_ops, int16_ops, integer_ops, rounding)
    return plan, stats
