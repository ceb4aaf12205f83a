"""The inspector command line: subcommands, exit codes, one-line errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.builders import matmul_relu, save
from tests.inspector.cli_helpers import assert_one_line_error, run_cli


def test_info_json_keys(tmp_path, capsys) -> None:
    path = save(matmul_relu(k=16, n=8), tmp_path / "m.onnx")
    code, out, _ = run_cli(capsys, "info", path, "--json", "--dim", "batch=4")
    assert code == 0
    info = json.loads(out)
    for key in ("nodes", "op_types", "opset", "inputs", "outputs", "params", "macs", "unsupported_ops"):
        assert key in info
    assert info["nodes"] == 3
    assert info["op_types"] == {"Add": 1, "MatMul": 1, "Relu": 1}
    assert info["params"] == 16 * 8 + 8
    assert info["macs"] == 4 * 16 * 8
    assert info["inputs"][0]["shape"] == [4, 16]
    assert info["unsupported_ops"] == []


def test_info_text(tmp_path, capsys) -> None:
    path = save(matmul_relu(), tmp_path / "m.onnx")
    code, out, _ = run_cli(capsys, "info", path)
    assert code == 0
    assert "MatMul" in out and "opset      17" in out and "symbolic: batch" in out


def test_info_lists_unsupported_ops(tmp_path, capsys) -> None:
    from onnx import TensorProto, helper

    g = helper.make_graph(
        [helper.make_node("FancyOp", ["x"], ["y"], domain="com.vendor")],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.vendor", 1)])
    code, out, _ = run_cli(capsys, "info", save(m, tmp_path / "v.onnx"), "--json")
    assert code == 0
    assert json.loads(out)["unsupported_ops"] == ["com.vendor::FancyOp"]


def test_run_with_inputs_and_random(tmp_path, capsys) -> None:
    path = save(matmul_relu(k=16, n=8), tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((3, 16)).astype(np.float32)
    np.savez(tmp_path / "in.npz", x=x)
    code, out, _ = run_cli(capsys, "run", path, "--inputs", str(tmp_path / "in.npz"), "-o", str(tmp_path / "out.npz"))
    assert code == 0, out
    y = np.load(tmp_path / "out.npz")["y"]
    import onnxruntime as ort

    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    code, _, _ = run_cli(capsys, "run", path, "--dim", "batch=2", "--seed", "3", "-o", str(tmp_path / "r1.npz"))
    assert code == 0
    run_cli(capsys, "run", path, "--dim", "batch=2", "--seed", "3", "-o", str(tmp_path / "r2.npz"))
    np.testing.assert_array_equal(np.load(tmp_path / "r1.npz")["y"], np.load(tmp_path / "r2.npz")["y"])
    assert np.load(tmp_path / "r1.npz")["y"].shape == (2, 8)


def test_run_rejects_wrong_input_shape(tmp_path, capsys) -> None:
    path = save(matmul_relu(k=16, n=8), tmp_path / "m.onnx")
    np.savez(tmp_path / "in.npz", x=np.zeros((3, 5), np.float32))
    code, _, err = run_cli(capsys, "run", path, "--inputs", str(tmp_path / "in.npz"), "-o", str(tmp_path / "o.npz"))
    assert code == 2
    assert_one_line_error(err, "'x'", "(batch, 16)", "(3, 5)")
    assert not (tmp_path / "o.npz").exists()


def test_run_rejects_pickled_inputs(tmp_path, capsys) -> None:
    path = save(matmul_relu(), tmp_path / "m.onnx")
    np.savez(tmp_path / "in.npz", x=np.array([{"a": 1}], dtype=object))
    code, _, err = run_cli(capsys, "run", path, "--inputs", str(tmp_path / "in.npz"), "-o", str(tmp_path / "o.npz"))
    assert code == 2
    assert_one_line_error(err, "in.npz", "pickled")


def test_unwritable_output_leaves_nothing(tmp_path, capsys) -> None:
    path = save(matmul_relu(), tmp_path / "m.onnx")
    out = tmp_path / "missing-dir" / "o.npz"
    code, _, err = run_cli(capsys, "run", path, "--dim", "batch=1", "-o", str(out))
    assert code == 2
    assert_one_line_error(err, str(out))
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        code, _, err = run_cli(capsys, "run", path, "--dim", "batch=1", "-o", str(ro / "o.npz"))
        assert code == 2 and os.listdir(ro) == []
    finally:
        os.chmod(ro, 0o700)


@pytest.mark.parametrize(
    "content, needle",
    [(b"", "empty"), (b"not a model at all", "not"), (None, "no such file")],
)
def test_bad_model_files_exit_2(tmp_path, capsys, content, needle) -> None:
    path = tmp_path / "bad.onnx"
    if content is not None:
        path.write_bytes(content)
    code, _, err = run_cli(capsys, "info", str(path))
    assert code == 2
    assert_one_line_error(err, str(path), needle)


def test_usage_errors_exit_2(capsys) -> None:
    code, _, err = run_cli(capsys, "info")
    assert code == 2
    assert_one_line_error(err, "no model given")
    code, _, err = run_cli(capsys, "info", "--sample", "nope")
    assert code == 2
    assert_one_line_error(err, "no bundled sample named 'nope'")
    code, _, err = run_cli(capsys, "run", "x.onnx")
    assert code == 2
    assert_one_line_error(err, "-o")
    code, _, err = run_cli(capsys, "info", "x.onnx", "--dim", "seq")
    assert code == 2
    assert_one_line_error(err, "NAME=VALUE")
    code, _, err = run_cli(capsys, "frobnicate")
    assert code == 2


def test_console_entry_point_and_module(tmp_path) -> None:
    """`python -m inspector` works as a process: exit code 2 and one stderr line on a bad file."""
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage")
    proc = subprocess.run([sys.executable, "-m", "inspector", "info", str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert_one_line_error(proc.stderr, str(bad))
