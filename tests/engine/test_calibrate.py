"""Calibration: data checks, streaming reads, mergeable statistics, workers, plans."""

from __future__ import annotations

import pickle

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine import load_model
from engine.calibrate import (
    DataSpec,
    build_plan,
    calibrate,
    calibrate_plan,
    data_spec,
    open_data,
)
from engine.errors import Cancelled, ModelError
from engine.quant.qparams import QuantScheme
from engine.samples import get_sample
from tests.builders import IR_VERSION, matmul_relu, save


@pytest.fixture()
def mlp(tmp_path):
    return load_model(save(matmul_relu(k=16, n=8), tmp_path / "m.onnx"))


def _x(n: int, k: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, k)).astype(np.float32)


def _one_line(err: ModelError, *needles: str) -> None:
    text = str(err)
    assert "\n" not in text
    for n in needles:
        assert n in text, (n, text)


# ------------------------------------------------------------------ data checks


def test_npz_batches_equal_the_file_in_any_batching(tmp_path, mlp) -> None:
    x = _x(37)
    for name, saver in (("plain.npz", np.savez), ("zipped.npz", np.savez_compressed)):
        path = tmp_path / name
        saver(path, x=x, labels=np.arange(37))
        data = open_data(data_spec(str(path)), mlp)
        assert data.num_samples == 37 and data.has_labels
        for batch in (1, 5, 16, 64):
            got = list(data.batches(batch, with_labels=True))
            assert [n for n, _, _ in got] == [min(batch, 37 - i) for i in range(0, 37, batch)]
            np.testing.assert_array_equal(np.concatenate([f["x"] for _, f, _ in got]), x)
            np.testing.assert_array_equal(np.concatenate([lab for _, _, lab in got]), np.arange(37))
        # a window in the middle, as a worker reads it
        (n, feeds, _), *_ = list(data.batches(8, start=16, stop=24))
        np.testing.assert_array_equal(feeds["x"], x[16:24])


def test_folder_of_files_and_items_layout(tmp_path, mlp) -> None:
    x = _x(10)
    folder = tmp_path / "calib"
    folder.mkdir()
    np.savez(folder / "a.npz", x=x[:4])
    np.save(folder / "b.npy", x[4:7][:, None, :])  # (samples, batch=1, 16): one model input per entry
    np.savez(folder / "c.npz", x=x[7:])
    data = open_data(data_spec(str(folder)), mlp)
    assert data.num_samples == 10
    got = np.concatenate([f["x"] for _, f, _ in data.batches(3)])
    np.testing.assert_array_equal(got, x)


def test_fixed_batch_model_takes_its_batch_per_run(tmp_path) -> None:
    model = load_model(save(matmul_relu(batch=2, k=16, n=8), tmp_path / "m.onnx"))
    np.savez(tmp_path / "c.npz", x=_x(7))
    data = open_data(data_spec(str(tmp_path / "c.npz")), model)
    assert data.per_run == 2 and data.num_samples == 6  # the odd sample out cannot fill a run
    assert [f["x"].shape for _, f, _ in data.batches(16)] == [(2, 16)] * 3


@pytest.mark.parametrize(
    "arrays, needles",
    [
        ({"x": np.zeros((4, 15), np.float32)}, ["input 'x'", "(batch, 16)", "(4, 15)"]),
        ({"x": np.zeros((4, 16), np.int64)}, ["input 'x'", "float32", "int64"]),
        ({"y": np.zeros((4, 16), np.float32)}, ["no array for input 'x'", "keys: y"]),
        ({"x": np.zeros((0, 16), np.float32)}, ["no samples"]),
        ({"x": np.zeros(16, np.float32)}, ["input 'x'", "(16,)"]),
    ],
)
def test_broken_data_is_one_line_error(tmp_path, mlp, arrays, needles) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    with pytest.raises(ModelError) as info:
        open_data(data_spec(str(path)), mlp)
    _one_line(info.value, str(path), *needles)


def test_pickled_data_is_refused(tmp_path, mlp) -> None:
    obj = tmp_path / "obj.npz"
    np.savez(obj, x=np.array([{"a": 1}, None], dtype=object))
    with pytest.raises(ModelError) as info:
        open_data(data_spec(str(obj)), mlp)
    _one_line(info.value, "pickled")
    raw = tmp_path / "raw.npz"
    raw.write_bytes(pickle.dumps({"x": _x(3)}))
    with pytest.raises(ModelError) as info:
        open_data(data_spec(str(raw)), mlp)
    _one_line(info.value, "pickle")


def test_missing_and_empty_folder(tmp_path, mlp) -> None:
    with pytest.raises(ModelError, match="no such file"):
        data_spec(str(tmp_path / "nope.npz"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError, match="no .npy or .npz"):
        open_data(data_spec(str(tmp_path / "empty")), mlp)


def test_images_without_pillow_name_the_package(tmp_path, mlp) -> None:
    pytest.importorskip("numpy")
    try:
        import PIL  # noqa: F401

        pytest.skip("Pillow is installed here")
    except ImportError:
        pass
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    spec = data_spec(str(folder))
    assert spec.kind == "images"
    with pytest.raises(ModelError) as info:
        open_data(spec, mlp)
    _one_line(info.value, "Pillow")


def test_synthetic_is_seeded_and_batch_independent(mlp) -> None:
    data = open_data(DataSpec("synthetic", samples=9, seed=4), mlp)
    assert data.synthetic and data.num_samples == 9
    a = np.concatenate([f["x"] for _, f, _ in data.batches(2)])
    b = np.concatenate([f["x"] for _, f, _ in open_data(DataSpec("synthetic", samples=9, seed=4), mlp).batches(9)])
    np.testing.assert_array_equal(a, b)
    c = np.concatenate([f["x"] for _, f, _ in open_data(DataSpec("synthetic", samples=9, seed=5), mlp).batches(9)])
    assert not np.array_equal(a, c)
    stats = calibrate(mlp, open_data(DataSpec("synthetic", samples=9), mlp))
    assert stats.synthetic and stats.samples == 9


# -------------------------------------------------------------------- statistics


def test_stats_merge_equals_one_pass(tmp_path, mlp) -> None:
    np.savez(tmp_path / "c.npz", x=_x(40, seed=1))
    data = open_data(data_spec(str(tmp_path / "c.npz")), mlp)
    whole = calibrate(mlp, data, batch=8)
    first = calibrate(mlp, open_data(data_spec(str(tmp_path / "c.npz"), limit=24), mlp), batch=8)
    from engine.calibrate import _collect

    second = _collect(mlp, data, 24, 40, 8, None, None)
    merged = first.merge(second)
    assert merged.samples == whole.samples == 40
    assert set(merged.tensors) == set(whole.tensors) == {"x", "xw", "xwb", "y"}
    for name, obs in whole.tensors.items():
        assert obs.equals(merged.tensors[name]), name
    for name, ch in whole.channels.items():
        np.testing.assert_array_equal(ch.min, merged.channels[name].min)
        np.testing.assert_array_equal(ch.max, merged.channels[name].max)
    # the data really was split: each half alone differs from the whole
    assert not first.tensors["y"].equals(whole.tensors["y"])


@pytest.mark.parametrize("start", ["fork", "spawn"])
def test_two_workers_give_the_same_plan_as_one(start, monkeypatch) -> None:
    """Forked workers (used when forking is safe) and spawned ones (else) merge exactly."""
    import engine.shards

    if start == "spawn":
        monkeypatch.setattr(engine.shards, "fork_is_safe", lambda: False)
    elif not engine.shards.fork_is_safe():
        pytest.skip("fork is not safe in this process (another Python thread runs)")
    sample = get_sample("cnn-digits")
    model = load_model(sample.model)
    spec = data_spec(str(sample.calib))
    for method in ("percentile", "entropy"):
        scheme = QuantScheme(method=method, percentile=99.9)
        one, stats_one = calibrate_plan(model, spec, scheme, batch=8, workers=1)
        two, stats_two = calibrate_plan(model, spec, scheme, batch=8, workers=2)
        assert stats_one.samples == stats_two.samples == 64
        assert one.to_dict() == two.to_dict()


def test_cancel_raises(mlp) -> None:
    data = open_data(DataSpec("synthetic", samples=8), mlp)
    with pytest.raises(Cancelled):
        calibrate(mlp, data, batch=2, cancel=lambda: True)


# ------------------------------------------------------------------------- plans


def _two_layer(tmp_path):
    """x -> MatMul -> Softmax -> Gemm(transB) -> y, to exercise weight axes and paths."""
    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.standard_normal((8, 6)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.standard_normal((4, 6)).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="mm"),
        helper.make_node("Softmax", ["h"], ["s"], name="sm", axis=-1),
        helper.make_node("Gemm", ["s", "w2"], ["y"], name="gemm", transB=1),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
        [w1, w2],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    onnx.checker.check_model(m)
    return load_model(save(m, tmp_path / "two.onnx"))


def test_build_plan_scheme_options(tmp_path) -> None:
    model = _two_layer(tmp_path)
    stats = calibrate(model, open_data(DataSpec("synthetic", samples=16), model))
    plan = build_plan(model, stats, QuantScheme())
    assert set(plan.activations) == {"x", "h", "s", "y"}
    assert plan.weights["w1"].axis == 1 and np.asarray(plan.weights["w1"].scale).shape == (6,)
    assert plan.weights["w2"].axis == 0 and np.asarray(plan.weights["w2"].scale).shape == (4,)
    assert plan.paths == {}
    # the MinMax range covers the observed values exactly: amax / 127
    amax = max(-stats.tensors["h"].min, stats.tensors["h"].max)
    assert plan.activations["h"].scale == pytest.approx(amax / 127, rel=1e-6)
    assert plan.calibration["synthetic"] is True and plan.calibration["samples"] == 16

    plan = build_plan(
        model,
        stats,
        QuantScheme(activation_dtype="uint8", symmetric=False, weight_per_channel=False, power_of_two=True),
        float_ops=["gemm"],
        int16_ops=["MatMul"],
        integer_ops=[],
    )
    assert plan.paths == {"gemm": "float", "sm": "float_fallback"}
    assert "w2" not in plan.weights and "y" not in plan.activations  # kept in float, read by nobody
    assert plan.activations["h"].dtype == "int16" and plan.activations["s"].dtype == "uint8"
    assert plan.weights["w1"].axis is None
    scale = float(plan.activations["s"].scale)
    assert scale == 2.0 ** round(np.log2(scale))
    assert build_plan(model, stats, QuantScheme(), integer_ops=["softmax"]).paths == {"sm": "integer"}
    with pytest.raises(ModelError, match="no node or op type named 'Conv'"):
        build_plan(model, stats, QuantScheme(), float_ops=["Conv"])
    with pytest.raises(ModelError, match="--integer-ops"):
        build_plan(model, stats, QuantScheme(), integer_ops=["MatMul"])


def test_percentile_range_is_narrower_than_minmax(tmp_path, mlp) -> None:
    x = _x(64, seed=3)
    x[0, 0] = 40.0  # one outlier value
    np.savez(tmp_path / "c.npz", x=x)
    stats = calibrate(mlp, open_data(data_spec(str(tmp_path / "c.npz")), mlp))
    mm = build_plan(mlp, stats, QuantScheme(method="minmax"))
    pc = build_plan(mlp, stats, QuantScheme(method="percentile", percentile=99.9))
    assert mm.activations["x"].scale == pytest.approx(40.0 / 127, rel=1e-6)
    assert pc.activations["x"].scale < mm.activations["x"].scale / 5


def test_interrupted_workers_are_stopped() -> None:
    import multiprocessing

    sample = get_sample("cnn-digits")
    model = load_model(sample.model)
    data = open_data(data_spec(str(sample.calib)), model)

    def interrupt() -> bool:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        calibrate(model, data, batch=8, workers=2, cancel=interrupt)
    assert multiprocessing.active_children() == []
    with pytest.raises(Cancelled):
        calibrate(model, data, batch=8, workers=2, cancel=lambda: True)
    assert multiprocessing.active_children() == []


class _FakeImage:
    """Stand-in for a PIL image (Pillow is optional and not installed here): HxWx3 uint8."""

    def __init__(self, pixels: np.ndarray) -> None:
        self.pixels = pixels

    def __enter__(self) -> "_FakeImage":
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def convert(self, mode: str) -> "_FakeImage":
        if mode == "L":
            return _FakeImage(self.pixels.mean(axis=2).astype(np.uint8))
        return self

    def resize(self, size: tuple[int, int]) -> "_FakeImage":
        w, h = size
        rows = np.arange(h) * self.pixels.shape[0] // h
        cols = np.arange(w) * self.pixels.shape[1] // w
        return _FakeImage(self.pixels[rows][:, cols])

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self.pixels.astype(dtype or self.pixels.dtype)


def test_image_folder_preprocessing(tmp_path, monkeypatch) -> None:
    import sys
    import types

    from engine.calibrate import ImagePreprocess

    image_mod = types.ModuleType("PIL.Image")
    image_mod.open = lambda path: _FakeImage(np.load(path))  # the "images" hold .npy bytes
    pil = types.ModuleType("PIL")
    pil.Image = image_mod
    monkeypatch.setitem(sys.modules, "PIL", pil)
    monkeypatch.setitem(sys.modules, "PIL.Image", image_mod)
    rng = np.random.default_rng(0)
    folder = tmp_path / "imgs"
    folder.mkdir()
    pixels = [rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8) for _ in range(3)]
    for i, p in enumerate(pixels):
        with open(folder / f"{i}.png", "wb") as f:
            np.save(f, p)
    conv = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"], name="id")],
        "img",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 4, 4])],
    )
    model = load_model(save(helper.make_model(conv, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION), tmp_path / "i.onnx"))
    prep = ImagePreprocess(mean=(0.5, 0.4, 0.3), std=(0.2, 0.25, 0.5), channel_order="BGR")
    data = open_data(data_spec(str(folder), preprocess=prep), model)
    assert data.num_samples == 3
    (n, feeds, _), = list(data.batches(8))
    x = feeds["x"]
    assert n == 3 and x.shape == (3, 3, 4, 4) and x.dtype == np.float32
    want = pixels[1][::2, ::2, ::-1].astype(np.float32) / 255.0  # nearest 8->4, BGR
    want = (want - np.array([0.5, 0.4, 0.3], np.float32)) / np.array([0.2, 0.25, 0.5], np.float32)
    # float32 rounding only: the loader multiplies by float32(1/255) where this divides by 255
    np.testing.assert_allclose(x[1], want.transpose(2, 0, 1), rtol=1e-6, atol=1e-6)


def test_files_with_different_symbolic_dims(tmp_path) -> None:
    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="relu")],
        "seq",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "seq"])],
    )
    model = load_model(save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION), tmp_path / "s.onnx"))
    folder = tmp_path / "d"
    folder.mkdir()
    np.savez(folder / "a.npz", x=np.ones((2, 5), np.float32))
    np.savez(folder / "b.npz", x=-np.ones((3, 7), np.float32))
    data = open_data(data_spec(str(folder)), model)
    assert [f["x"].shape for _, f, _ in data.batches(16)] == [(2, 5), (3, 7)]
    stats = calibrate(model, data)
    assert stats.samples == 5 and stats.tensors["x"].count == 2 * 5 + 3 * 7


def test_real_png_folder_reproduces_the_sample_preprocessing(tmp_path) -> None:
    """Digits written as greyscale PNGs (value = pixel x 15) and read back with the stated
    preprocessing give the same model inputs as the bundled .npz (float32 rounding only)."""
    from PIL import Image

    from engine.calibrate import ImagePreprocess
    from engine.fileio import read_npz
    from engine.samples import get_sample

    sample = get_sample("cnn-digits")
    images = read_npz(sample.val)["image"][:12]
    mean, std = 0.30538612604141235, 0.375507116317749
    pixels = np.rint((images[:, 0] * std + mean) * 16).astype(np.uint8)  # back to 0..16
    folder = tmp_path / "digits"
    folder.mkdir()
    for i, p in enumerate(pixels):
        Image.fromarray((p * 15).astype(np.uint8), mode="L").save(folder / f"{i:03d}.png")
    model = load_model(sample.model, dims={"batch": 1})
    prep = ImagePreprocess(mean=(mean,), std=(std,), scale=1.0 / 240.0)
    data = open_data(data_spec(str(folder), preprocess=prep), model)
    got = np.concatenate([f["image"] for _, f, _ in data.batches(4)])
    assert got.shape == (12, 1, 8, 8) and got.dtype == np.float32
    np.testing.assert_allclose(got, images, rtol=0, atol=1e-5)


@pytest.mark.parametrize("center, spread", [(0.0, 1.0), (50.0, 0.01), (-3e4, 7.0), (1e-3, 1e-5), (0.0, 3e5)])
def test_fast_float32_observation_equals_the_observers_own_update(center: float, spread: float) -> None:
    """observe_tensor's float32 path (bin indices in float32, offset subtracted before the
    cast) leaves exactly the state HistogramObserver.update and PerChannelMinMaxObserver.update
    leave, batch after batch, grids rebinned on the way included."""
    from engine.calibrate import observe_tensor
    from engine.quant.observers import HistogramObserver, PerChannelMinMaxObserver

    rng = np.random.default_rng(int(abs(center)) + 7)
    fast, ref = HistogramObserver(), HistogramObserver()
    fast_ch, ref_ch = PerChannelMinMaxObserver(1), PerChannelMinMaxObserver(1)
    for step in range(4):  # the range widens: the grid coarsens between batches
        x = (center + spread * (1 + step) * rng.standard_normal((3, 16, 5))).astype(np.float32)
        observe_tensor(fast, fast_ch, x)
        ref.update(x)
        ref_ch.update(x)
        assert (fast.exponent, fast.offset, fast.count, fast.min, fast.max) == (ref.exponent, ref.offset, ref.count, ref.min, ref.max)
        assert np.array_equal(fast.counts, ref.counts)
        assert np.array_equal(fast_ch.min, ref_ch.min) and np.array_equal(fast_ch.max, ref_ch.max)


def _permutation_model(tmp_path):
    """x[n,4,6] -> MatMul -> Reshape[n,2,12] -> Transpose -> Relu, plus a Transpose of x."""
    w = numpy_helper.from_array(np.random.default_rng(3).standard_normal((6, 6)).astype(np.float32), "w")
    shape = numpy_helper.from_array(np.array([0, 2, 12], dtype=np.int64), "shape")
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"], name="mm"),
        helper.make_node("Reshape", ["h", "shape"], ["r"], name="reshape"),
        helper.make_node("Transpose", ["r"], ["t"], name="transpose", perm=[0, 2, 1]),
        helper.make_node("Relu", ["t"], ["y"], name="relu"),
        helper.make_node("Transpose", ["x"], ["xt"], name="xt", perm=[0, 2, 1]),
    ]
    g = helper.make_graph(
        nodes,
        "perm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 12, 2]), helper.make_tensor_value_info("xt", TensorProto.FLOAT, ["n", 6, 4])],
        [w, shape],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    onnx.checker.check_model(m)
    return load_model(save(m, tmp_path / "perm.onnx"))


@pytest.mark.parametrize("workers", [1, 2])
def test_permuted_tensors_copy_their_sources_histogram_exactly(tmp_path, monkeypatch, workers) -> None:
    """The outputs of Reshape/Transpose take a copy of their input's histogram observer
    (observe_same); the statistics equal observing every tensor itself, run after run
    (the range widens between runs: grids rebin), sharded or not; per-channel views are
    each tensor's own. A Transpose of a graph input mirrors the input."""
    import engine.calibrate as cal

    model = _permutation_model(tmp_path)
    rng = np.random.default_rng(5)
    x = np.concatenate([(rng.standard_normal((4, 4, 6)) * (1 + 3 * i)).astype(np.float32) for i in range(5)])
    x[7, 1, 2] = np.nan  # non-finite values are counted the same way
    np.savez(tmp_path / "c.npz", x=x)
    spec = data_spec(str(tmp_path / "c.npz"))
    copied: list[str] = []
    real_same = cal.CalibrationStats.observe_same

    def counting(self, model, name, source, value):
        copied.append(name)
        return real_same(self, model, name, source, value)

    monkeypatch.setattr(cal.CalibrationStats, "observe_same", counting)
    fast = calibrate(model, open_data(spec, model), batch=4, workers=workers)
    if workers == 1:  # (forked workers count in their own memory)
        assert {"r", "t", "xt"} <= set(copied)
    monkeypatch.setattr(cal, "permutation_input", lambda node: None)
    ref = calibrate(model, open_data(spec, model), batch=4, workers=workers)
    assert set(fast.tensors) == set(ref.tensors) == {"x", "h", "r", "t", "y", "xt"}
    for name, obs in ref.tensors.items():
        assert obs.equals(fast.tensors[name]), name
        assert obs.count == fast.tensors[name].count and obs.nan_count == fast.tensors[name].nan_count
    assert fast.tensors["r"].equals(fast.tensors["h"]) and fast.tensors["xt"].equals(fast.tensors["x"])
    assert fast.tensors["r"] is not fast.tensors["h"]  # copies: a merge never adds one twice
    assert set(fast.channels) == set(ref.channels)
    for name, ch in ref.channels.items():
        np.testing.assert_array_equal(ch.min, fast.channels[name].min)
        np.testing.assert_array_equal(ch.max, fast.channels[name].max)
