"""Fuzz test of the command line: broken models never crash it.

A seeded generator mutates valid models (the bundled samples and small onnx.helper models):
truncations, flipped bytes, wrong dims (declared shapes that mismatch initializers), dangling
inputs, cycles, absurd shapes (2^40 elements in an input dim, a ConstantOfShape, an Expand or
a Tile target), NaN/Inf weights and constant zero-range tensors. ``inspector info``, ``run``,
``analyze --samples 2`` and ``check`` run on each, in-process (and a few as processes); every
run must exit 0, 1 or 2, print no traceback, and on exit 2 print exactly one stderr line
starting ``inspector:`` that is not an ``internal error`` (an exception that escaped the
engine's ModelError handling).
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.samples import get_sample
from inspector.cli import main
from tests.builders import IR_VERSION, matmul_relu

SEED = 20240611
BIG = 1 << 40  # elements: 4 TiB of float32


@dataclass(frozen=True)
class Case:
    """One broken model: an id for the report, the file bytes, and the commands to try."""

    id: str
    data: bytes
    commands: tuple[str, ...] = ("info", "run", "analyze", "check")


# ---------------------------------------------------------------------- base models


def _model(nodes, inputs, outputs, inits, opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "fuzz", inputs, outputs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=IR_VERSION)


def _conv_model(seed: int = 0) -> onnx.ModelProto:
    """x(1,3,8,8) -> Conv 3x3 (4 ch) -> Relu -> GlobalAveragePool -> Flatten -> Gemm -> y(1,5)."""
    rng = np.random.default_rng(seed)
    inits = [
        numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.standard_normal(4).astype(np.float32), "B"),
        numpy_helper.from_array(rng.standard_normal((4, 5)).astype(np.float32), "G"),
        numpy_helper.from_array(rng.standard_normal(5).astype(np.float32), "C"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv"),
        helper.make_node("Relu", ["c"], ["r"], name="relu"),
        helper.make_node("GlobalAveragePool", ["r"], ["p"], name="gap"),
        helper.make_node("Flatten", ["p"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "G", "C"], ["y"], name="gemm"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 5])],
        inits,
    )


def _mlp() -> onnx.ModelProto:
    return matmul_relu(batch=2, k=16, n=8)


def _bases() -> dict[str, onnx.ModelProto]:
    return {
        "mlp": _mlp(),
        "conv": _conv_model(),
        "cnn": onnx.load(str(get_sample("cnn-digits").model)),
        "vit": onnx.load(str(get_sample("vit-digits").model)),
    }


# ---------------------------------------------------------------------- mutations


def _copy(m: onnx.ModelProto) -> onnx.ModelProto:
    c = onnx.ModelProto()
    c.CopyFrom(m)
    return c


def _truncations(name: str, data: bytes, rng: np.random.Generator, count: int) -> list[Case]:
    cuts = sorted({int(k) for k in rng.integers(1, len(data), size=count)})
    return [Case(f"{name}-truncate-{k}", data[:k]) for k in cuts]


def _flips(name: str, data: bytes, rng: np.random.Generator, count: int, commands=("info", "run", "analyze", "check")) -> list[Case]:
    cases = []
    for i in range(count):
        buf = bytearray(data)
        n = int(rng.integers(1, 9))
        pos = rng.integers(0, len(buf), size=n)
        for p in pos:
            buf[int(p)] ^= int(rng.integers(1, 256))
        cases.append(Case(f"{name}-flip{i}-{n}bytes", bytes(buf), tuple(commands)))
    return cases


def _float_inits(m: onnx.ModelProto) -> list[TensorProto]:
    return [t for t in m.graph.initializer if t.data_type == TensorProto.FLOAT and len(t.dims) >= 1]


def _with_weights(m: onnx.ModelProto, fill: Callable[[np.ndarray, np.random.Generator], np.ndarray], rng, which: str) -> onnx.ModelProto:
    """Replace one (``first``) or every (``all``) float initializer with ``fill(array)``."""
    m = _copy(m)
    inits = _float_inits(m)
    for t in inits if which == "all" else inits[:1]:
        arr = numpy_helper.to_array(t).copy()
        t.CopyFrom(numpy_helper.from_array(fill(arr, rng).astype(np.float32), t.name))
    return m


def _nan_some(a: np.ndarray, rng) -> np.ndarray:
    flat = a.reshape(-1)
    flat[rng.integers(0, flat.size, size=max(1, flat.size // 10))] = np.nan
    return a


def _inf_some(a: np.ndarray, rng) -> np.ndarray:
    flat = a.reshape(-1)
    idx = rng.integers(0, flat.size, size=max(1, flat.size // 10))
    flat[idx] = np.where(rng.random(idx.size) < 0.5, np.inf, -np.inf)
    return a


def _wrong_init_dims(m: onnx.ModelProto) -> onnx.ModelProto:
    """The first weight declares dims its stored data does not have (one more row)."""
    m = _copy(m)
    t = _float_inits(m)[0]
    t.dims[0] += 1
    return m


def _transposed_init(m: onnx.ModelProto) -> onnx.ModelProto:
    """The first 2-d+ weight's dims reversed: the bytes fit, the matmul/conv does not."""
    m = _copy(m)
    t = next(t for t in _float_inits(m) if len(t.dims) >= 2 and t.dims[0] != t.dims[-1])
    dims = list(t.dims)[::-1]
    del t.dims[:]
    t.dims.extend(dims)
    return m


def _wrong_input_dims(m: onnx.ModelProto, value: int) -> onnx.ModelProto:
    """The first graph input's last dimension declared as ``value``."""
    m = _copy(m)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[len(dims) - 1].Clear()
    dims[len(dims) - 1].dim_value = value
    return m


def _dangling(m: onnx.ModelProto) -> onnx.ModelProto:
    m = _copy(m)
    node = m.graph.node[len(m.graph.node) // 2]
    node.input[0] = "no_such_tensor"
    return m


def _dangling_output(m: onnx.ModelProto) -> onnx.ModelProto:
    m = _copy(m)
    m.graph.output[0].name = "never_written"
    return m


def _cycle(m: onnx.ModelProto) -> onnx.ModelProto:
    """The first node reads the last node's output, which depends on it."""
    m = _copy(m)
    first, last = m.graph.node[0], m.graph.node[len(m.graph.node) - 1]
    first.input[0] = last.output[0]
    return m


def _two_node_cycle() -> onnx.ModelProto:
    nodes = [
        helper.make_node("Add", ["x", "b"], ["a"], name="add_a"),
        helper.make_node("Add", ["a", "x"], ["b"], name="add_b"),
        helper.make_node("Relu", ["b"], ["y"], name="relu"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 4])],
        [],
    )


def _huge_input_dim(m: onnx.ModelProto) -> onnx.ModelProto:
    m = _copy(m)
    dims = m.graph.input[0].type.tensor_type.shape.dim
    dims[0].Clear()
    dims[0].dim_value = BIG
    return m


def _shape_op_model(op: str, runtime: bool = False) -> onnx.ModelProto:
    """x(2, 4) + (an op whose output shape is a 2^40-element constant target) -> y.

    ``runtime``: the target passes through an Abs node first, so shape inference cannot
    see it and only the kernel learns the size (the executor's static check cannot refuse it).
    """
    big = np.array([1 << 20, 1 << 20], np.int64)
    if op == "ConstantOfShape":
        nodes = [
            helper.make_node("ConstantOfShape", ["shape"], ["z"], name="cos",
                             value=numpy_helper.from_array(np.array([1.0], np.float32), "v")),
            helper.make_node("ReduceSum", ["z"], ["s"], keepdims=0, name="sum"),
            helper.make_node("Add", ["x", "s"], ["y"], name="add"),
        ]
        inits = [numpy_helper.from_array(big, "shape")]
    elif op == "Expand":
        nodes = [
            helper.make_node("Expand", ["x", "shape"], ["e"], name="expand"),
            helper.make_node("ReduceMean", ["e"], ["y"], keepdims=0, name="mean"),
        ]
        inits = [numpy_helper.from_array(np.array([1 << 20, 1 << 20, 1, 1], np.int64), "shape")]
    elif op == "Tile":
        nodes = [
            helper.make_node("Tile", ["x", "reps"], ["e"], name="tile"),
            helper.make_node("ReduceMean", ["e"], ["y"], keepdims=0, name="mean"),
        ]
        inits = [numpy_helper.from_array(big, "reps")]
    elif op == "Range":
        nodes = [
            helper.make_node("Range", ["start", "limit", "delta"], ["r"], name="range"),
            helper.make_node("ReduceSum", ["r"], ["s"], keepdims=0, name="sum"),
            helper.make_node("Add", ["x", "s"], ["y"], name="add"),
        ]
        inits = [
            numpy_helper.from_array(np.array(0.0, np.float32), "start"),
            numpy_helper.from_array(np.array(float(BIG), np.float32), "limit"),
            numpy_helper.from_array(np.array(1.0, np.float32), "delta"),
        ]
    else:
        raise ValueError(op)
    if runtime:
        target = next(n for n in nodes if n.op_type == op)
        hidden = target.input[len(target.input) - 1]
        nodes.insert(0, helper.make_node("Abs", [hidden + "_src"], [hidden], name="hide_target"))
        for t in inits:
            if t.name == hidden:
                t.name = hidden + "_src"
    out_shape = [] if op in ("Expand", "Tile") else [2, 4]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        inits,
    )


def _constant_input_model() -> onnx.ModelProto:
    """Every activation is constant: the input is multiplied by zero weights (zero range)."""
    inits = [
        numpy_helper.from_array(np.zeros((4, 3), np.float32), "W"),
        numpy_helper.from_array(np.full(3, 2.5, np.float32), "b"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["m"], name="matmul"),
        helper.make_node("Add", ["m", "b"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["y"], name="relu"),
    ]
    return _model(
        nodes,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        inits,
    )


def _set_attr(m: onnx.ModelProto, op: str, name: str, value) -> onnx.ModelProto:
    """The first ``op`` node with attribute ``name`` set to ``value``."""
    m = _copy(m)
    node = next(n for n in m.graph.node if n.op_type == op)
    for a in [a for a in node.attribute if a.name == name]:
        node.attribute.remove(a)
    node.attribute.append(helper.make_attribute(name, value))
    return m


def _scalar_input(m: onnx.ModelProto) -> onnx.ModelProto:
    """The first input declared rank 0."""
    m = _copy(m)
    m.graph.input[0].type.tensor_type.shape.Clear()
    return m


def broken_models(seed: int = SEED) -> list[Case]:
    """The fuzz corpus: deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    bases = _bases()
    raw = {name: m.SerializeToString() for name, m in bases.items()}
    cases: list[Case] = []
    for name in ("mlp", "conv", "cnn", "vit"):
        cases += _truncations(name, raw[name], rng, 4)
    cases += _flips("mlp", raw["mlp"], rng, 12)
    cases += _flips("conv", raw["conv"], rng, 12)
    cases += _flips("cnn", raw["cnn"], rng, 10)
    cases += _flips("vit", raw["vit"], rng, 6, commands=("info", "run", "check"))
    small = ("mlp", "conv", "cnn")
    for name in small:
        m = bases[name]
        cases.append(Case(f"{name}-init-dims", _wrong_init_dims(m).SerializeToString()))
        cases.append(Case(f"{name}-transposed-weight", _transposed_init(m).SerializeToString()))
        cases.append(Case(f"{name}-input-dims", _wrong_input_dims(m, 7).SerializeToString()))
        cases.append(Case(f"{name}-dangling", _dangling(m).SerializeToString()))
        cases.append(Case(f"{name}-dangling-output", _dangling_output(m).SerializeToString()))
        cases.append(Case(f"{name}-cycle", _cycle(m).SerializeToString()))
        cases.append(Case(f"{name}-huge-input", _huge_input_dim(m).SerializeToString()))
        cases.append(Case(f"{name}-nan-weights", _with_weights(m, _nan_some, rng, "first").SerializeToString()))
        cases.append(Case(f"{name}-inf-weights", _with_weights(m, _inf_some, rng, "first").SerializeToString()))
        cases.append(Case(f"{name}-zero-weights", _with_weights(m, lambda a, r: np.zeros_like(a), rng, "all").SerializeToString()))
        cases.append(Case(f"{name}-const-weights", _with_weights(m, lambda a, r: np.full_like(a, 0.75), rng, "first").SerializeToString()))
    vit = bases["vit"]
    cases.append(Case("vit-nan-weights", _with_weights(vit, _nan_some, rng, "first").SerializeToString(), ("run", "check")))
    cases.append(Case("vit-zero-weights", _with_weights(vit, lambda a, r: np.zeros_like(a), rng, "all").SerializeToString(), ("run", "check")))
    cases.append(Case("vit-huge-input", _huge_input_dim(vit).SerializeToString()))
    cases.append(Case("vit-cycle", _cycle(vit).SerializeToString(), ("info",)))
    cases.append(Case("two-node-cycle", _two_node_cycle().SerializeToString()))
    for op in ("ConstantOfShape", "Expand", "Tile", "Range"):
        cases.append(Case(f"huge-{op}", _shape_op_model(op).SerializeToString()))
    for op in ("ConstantOfShape", "Expand", "Tile"):
        cases.append(Case(f"huge-runtime-{op}", _shape_op_model(op, runtime=True).SerializeToString()))
    cases.append(Case("constant-activations", _constant_input_model().SerializeToString()))
    # attributes and declarations that contradict the data
    conv = bases["conv"]
    cases.append(Case("conv-stride-0", _set_attr(conv, "Conv", "strides", [0, 0]).SerializeToString()))
    cases.append(Case("conv-pads-huge", _set_attr(conv, "Conv", "pads", [100000] * 4).SerializeToString()))
    cases.append(Case("conv-group-5", _set_attr(conv, "Conv", "group", 5).SerializeToString()))
    cases.append(Case("gemm-alpha-nan", _set_attr(conv, "Gemm", "alpha", float("nan")).SerializeToString()))
    cases.append(Case("vit-softmax-axis-5", _set_attr(vit, "Softmax", "axis", 5).SerializeToString(), ("info", "run")))
    cases.append(Case("mlp-scalar-input", _scalar_input(bases["mlp"]).SerializeToString()))
    cases.append(Case("cnn-all-inf-weights", _with_weights(bases["cnn"], lambda a, r: np.full_like(a, np.inf), rng, "all").SerializeToString()))
    # a name that is not UTF-8 (protobuf hands it over as bytes)
    cases.append(Case("mlp-non-utf8-name", raw["mlp"].replace(b"matmul", b"\xf5atmul", 1)))
    return cases


# ---------------------------------------------------------------------- running


def _argv(command: str, model: str, tmp: Path) -> list[str]:
    if command == "info":
        return ["info", model]
    if command == "run":
        return ["run", model, "-o", str(tmp / "out.npz")]
    if command == "analyze":
        return ["analyze", model, "--samples", "2", "--batch", "2", "--json", str(tmp / "a.json")]
    return ["check", model, "--samples", "2", "--batch", "2", "--min-cosine", "0.5", "--max-float-ops", "1000",
            "--junit", str(tmp / "c.xml")]


def _assert_clean(case: str, argv: list[str], code: int, err: str) -> None:
    where = f"{case}: inspector {' '.join(argv[:1])}"
    assert code in (0, 1, 2), f"{where}: exit {code}\n{err}"
    assert "Traceback" not in err, f"{where}\n{err}"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if code == 2:
        assert len(lines) == 1, f"{where}: stderr is not one line:\n{err}"
        assert lines[0].startswith("inspector:"), f"{where}: {lines[0]}"
        assert "internal error" not in lines[0], f"{where}: {lines[0]}"
    else:
        assert not lines, f"{where}: exit {code} with stderr:\n{err}"


def _run_in_process(argv: list[str]) -> tuple[int, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, err.getvalue()


CASES = broken_models()


def test_corpus_is_deterministic_and_covers_every_family() -> None:
    again = broken_models()
    assert [(c.id, c.data) for c in again] == [(c.id, c.data) for c in CASES]
    ids = " ".join(c.id for c in CASES)
    for family in ("truncate", "flip", "init-dims", "input-dims", "dangling", "cycle", "huge-input",
                   "huge-ConstantOfShape", "huge-Expand", "nan-weights", "inf-weights", "zero-weights",
                   "constant-activations", "huge-runtime-Tile", "non-utf8"):
        assert family in ids, family
    assert len({c.id for c in CASES}) == len(CASES)


def test_fuzzed_models_never_crash_the_command_line(tmp_path) -> None:
    failures: list[str] = []
    codes: dict[int, int] = {}
    for case in CASES:
        folder = tmp_path / case.id
        folder.mkdir()
        model = folder / "model.onnx"
        model.write_bytes(case.data)
        for command in case.commands:
            argv = _argv(command, str(model), folder)
            code, err = _run_in_process(argv)
            codes[code] = codes.get(code, 0) + 1
            try:
                _assert_clean(case.id, argv, code, err)
            except AssertionError as e:
                failures.append(str(e))
        leftovers = [n for n in os.listdir(folder) if n.startswith(".tmp-")]
        if leftovers:
            failures.append(f"{case.id}: temporary files left behind: {leftovers}")
    assert not failures, f"{len(failures)} failing runs:\n" + "\n".join(failures)
    # the corpus exercises both sides: broken files refused, and damaged-but-loadable models run
    assert codes.get(2, 0) > 20 and codes.get(0, 0) + codes.get(1, 0) > 10, codes


def _data_files(seed: int = SEED) -> dict[str, bytes]:
    """Broken calibration/label files derived from the cnn-digits calibration set."""
    rng = np.random.default_rng(seed)
    raw = get_sample("cnn-digits").calib.read_bytes()
    with np.load(get_sample("cnn-digits").calib, allow_pickle=False) as data:
        image = data["image"]

    def npz(**arrays: np.ndarray) -> bytes:
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        return buf.getvalue()

    def flipped() -> bytes:
        buf = bytearray(raw)
        for p in rng.integers(0, len(raw), size=int(rng.integers(1, 7))):
            buf[int(p)] ^= int(rng.integers(1, 256))
        return bytes(buf)

    def claims(shape: tuple[int, ...]) -> bytes:
        """A member whose header declares ``shape`` but holds 64 bytes of data."""
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": shape})
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            z.writestr("image.npy", header.getvalue() + bytes(64))
        return buf.getvalue()

    return {
        "truncated": raw[: len(raw) // 2],
        "claims-4TiB": claims((BIG, 1, 8, 8)),
        "claims-64GiB": claims((1 << 28, 1, 8, 8)),
        **{f"flipped{i}": flipped() for i in range(8)},
        "unknown-npy-version": raw.replace(b"\x93NUMPY\x01\x00", b"\x93NUMPY\x51\x00", 1),
        "nan": npz(image=np.full_like(image, np.nan)),
        "inf": npz(image=np.where(rng.random(image.shape) < 0.1, np.inf, image).astype(np.float32)),
        "constant": npz(image=np.full_like(image, 0.5)),
        "huge": npz(image=(image * 1e38).astype(np.float32)),
        "object": npz(image=np.array([None, 1], dtype=object)),
        "empty": npz(image=image[:0]),
        "labels-short": npz(image=image, labels=np.zeros(3, np.int64)),
        "labels-absurd": npz(image=image, labels=np.full(len(image), 10**12, np.int64)),
    }


def test_fuzzed_data_files_never_crash_the_command_line(tmp_path) -> None:
    model = str(get_sample("cnn-digits").model)
    failures: list[str] = []
    for name, data in _data_files().items():
        path = tmp_path / f"{name}.npz"
        path.write_bytes(data)
        for argv in (
            ["analyze", model, "--calib", str(path), "--samples", "4"],
            ["check", model, "--labels", str(path), "--samples", "4", "--max-accuracy-drop", "5"],
            ["run", model, "--inputs", str(path), "-o", str(tmp_path / "out.npz")],
        ):
            code, err = _run_in_process(argv)
            try:
                _assert_clean(f"data-{name}", argv, code, err)
            except AssertionError as e:
                failures.append(str(e))
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("case_id", ["cnn-truncate", "huge-Expand", "mlp-nan-weights", "two-node-cycle"])
def test_fuzzed_models_as_processes(tmp_path, case_id) -> None:
    """The console entry point as a real process: exit code, no traceback, one stderr line."""
    case = next(c for c in CASES if c.id.startswith(case_id))
    model = tmp_path / "model.onnx"
    model.write_bytes(case.data)
    command = "check" if "nan" in case_id else "run"
    argv = _argv(command, str(model), tmp_path)
    env = {k: v for k, v in os.environ.items() if k != "INSPECTOR_DEBUG"}
    proc = subprocess.run([sys.executable, "-m", "inspector", *argv], check=False, capture_output=True, text=True, env=env, timeout=120)
    _assert_clean(case.id, argv, proc.returncode, proc.stderr)
