"""``inspector analyze`` and ``inspector run --int8``: JSON keys, summaries, one-line errors."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from tests.builders import matmul_relu, save
from tests.inspector.cli_helpers import assert_one_line_error, run_cli

LAYER_KEYS = ("name", "op_type", "cosine", "sqnr_db", "mse", "max_abs_err", "clip_fraction", "cosine_isolated", "sqnr_db_isolated")
OUTPUT_KEYS = ("name", "cosine", "sqnr_db", "max_abs_err", "top1_agreement")


@pytest.mark.parametrize("sample, nodes, min_int8_accuracy", [("cnn-digits", 13, 0.95), ("vit-digits", 85, 0.90)])
def test_analyze_samples_write_the_json_keys(tmp_path, capsys, sample, nodes, min_int8_accuracy) -> None:
    out_json = tmp_path / "a.json"
    code, out, err = run_cli(capsys, "analyze", "--sample", sample, "--method", "percentile", "--json", str(out_json))
    assert code == 0, err
    doc = json.loads(out_json.read_text())
    assert len(doc["layers"]) == nodes
    for layer in doc["layers"]:
        for key in LAYER_KEYS:
            assert key in layer, key
    rated = [l for l in doc["layers"] if l["sqnr_db_isolated"] is not None]
    assert len(rated) >= nodes // 2
    (o,) = doc["outputs"]
    for key in OUTPUT_KEYS:
        assert key in o
    assert o["name"] == "logits" and 0.9 <= o["top1_agreement"] <= 1.0
    assert o["labelled_samples"] == 360  # the sample's validation split is the default evaluation set
    assert o["accuracy_int8"] >= min_int8_accuracy and o["accuracy_float"] >= min_int8_accuracy
    cal = doc["calibration"]
    assert cal["method"] == "percentile" and cal["samples"] == 64 and cal["synthetic"] is False
    assert isinstance(doc["findings"], list)
    # the summary: worst layers by isolated SQNR, with the direction of the metric stated
    assert "higher is better" in out and "worst 10 layers by isolated SQNR" in out
    worst = min(rated, key=lambda l: l["sqnr_db_isolated"])
    assert worst["name"][-40:] in out
    assert "accuracy float" in out


def test_synthetic_calibration_is_said_plainly(tmp_path, capsys) -> None:
    model = save(matmul_relu(k=16, n=8), tmp_path / "m.onnx")
    out_json = tmp_path / "a.json"
    code, out, err = run_cli(capsys, "analyze", model, "--samples", "8", "--json", str(out_json))
    assert code == 0, err
    assert "SYNTHETIC" in out
    doc = json.loads(out_json.read_text())
    assert doc["calibration"]["synthetic"] is True and doc["evaluation"]["synthetic"] is True
    assert doc["calibration"]["samples"] == 8


@pytest.mark.parametrize(
    "arrays, needles",
    [
        ({"x": np.zeros((4, 15), np.float32)}, ["input 'x'", "(4, 15)"]),
        ({"x": np.zeros((4, 16), np.int32)}, ["input 'x'", "float32", "int32"]),
        ({"image": np.zeros((4, 16), np.float32)}, ["no array for input 'x'"]),
        ({"x": np.zeros((0, 16), np.float32)}, ["no samples"]),
        ({"x": np.array([None, 1], dtype=object)}, ["pickled"]),
    ],
    ids=["wrong-shape", "wrong-dtype", "missing-key", "empty", "object-array"],
)
def test_broken_calibration_data_exit_2(tmp_path, capsys, arrays, needles) -> None:
    model = save(matmul_relu(k=16, n=8), tmp_path / "m.onnx")
    calib = tmp_path / "calib.npz"
    np.savez(calib, **arrays)
    code, out, err = run_cli(capsys, "analyze", model, "--calib", str(calib))
    assert code == 2
    assert_one_line_error(err, "calib.npz", *needles)


def test_pickle_file_and_missing_file_exit_2(tmp_path, capsys) -> None:
    model = save(matmul_relu(k=16, n=8), tmp_path / "m.onnx")
    bad = tmp_path / "calib.npz"
    bad.write_bytes(pickle.dumps({"x": np.zeros((2, 16), np.float32)}))
    code, _, err = run_cli(capsys, "analyze", model, "--calib", str(bad))
    assert code == 2
    assert_one_line_error(err, "pickle")
    code, _, err = run_cli(capsys, "analyze", model, "--calib", str(tmp_path / "none.npz"))
    assert code == 2
    assert_one_line_error(err, "none.npz", "no such file")


def test_usage_errors_exit_2(tmp_path, capsys) -> None:
    model = save(matmul_relu(k=16, n=8), tmp_path / "m.onnx")
    code, _, err = run_cli(capsys, "analyze", model, "--scheme", "int4")
    assert code == 2
    assert_one_line_error(err, "--scheme", "int4")
    code, _, err = run_cli(capsys, "analyze", model, "--float-ops", "Conv")
    assert code == 2
    assert_one_line_error(err, "Conv")


def test_labels_file_with_labels_only(tmp_path, capsys) -> None:
    model = save(matmul_relu(k=16, n=8), tmp_path / "m.onnx")
    x = np.random.default_rng(0).standard_normal((20, 16)).astype(np.float32)
    np.savez(tmp_path / "c.npz", x=x)
    np.savez(tmp_path / "l.npz", labels=np.arange(20) % 8)
    out_json = tmp_path / "a.json"
    code, out, err = run_cli(capsys, "analyze", model, "--calib", str(tmp_path / "c.npz"), "--labels", str(tmp_path / "l.npz"), "--json", str(out_json))
    assert code == 0, err
    o = json.loads(out_json.read_text())["outputs"][0]
    assert o["labelled_samples"] == 20 and o["accuracy_float"] is not None
    np.savez(tmp_path / "short.npz", labels=np.arange(5))
    code, _, err = run_cli(capsys, "analyze", model, "--calib", str(tmp_path / "c.npz"), "--labels", str(tmp_path / "short.npz"))
    assert code == 2
    assert_one_line_error(err, "short.npz", "5 labels for 20")
    np.savez(tmp_path / "nolabels.npz", y=np.arange(20))
    code, _, err = run_cli(capsys, "analyze", model, "--calib", str(tmp_path / "c.npz"), "--labels", str(tmp_path / "nolabels.npz"))
    assert code == 2
    assert_one_line_error(err, "no 'labels' array")


def test_workers_give_the_same_report(tmp_path, capsys) -> None:
    docs = []
    for workers in ("1", "2"):
        out_json = tmp_path / f"w{workers}.json"
        code, _, err = run_cli(capsys, "analyze", "--sample", "cnn-digits", "--samples", "48", "--workers", workers,
                            "--method", "entropy", "--json", str(out_json))
        assert code == 0, err
        docs.append(json.loads(out_json.read_text()))
    assert docs[0]["plan"] == docs[1]["plan"]
    assert docs[0]["layers"] == docs[1]["layers"]


def test_no_quant_lists_layers(tmp_path, capsys) -> None:
    model = save(matmul_relu(k=16, n=8), tmp_path / "m.onnx")
    out_json = tmp_path / "a.json"
    code, out, _ = run_cli(capsys, "analyze", model, "--no-quant", "--json", str(out_json))
    assert code == 0
    doc = json.loads(out_json.read_text())
    assert [l["name"] for l in doc["layers"]] == ["matmul", "bias", "relu"] and doc["quantization"] is None


def test_run_int8(tmp_path, capsys) -> None:
    from engine.samples import get_sample

    calib = str(get_sample("cnn-digits").calib)
    code, out, err = run_cli(capsys, "run", "--sample", "cnn-digits", "--int8", "--inputs", calib, "-o", str(tmp_path / "q.npz"))
    assert code == 0, err
    assert "calibrated with minmax on 64 samples" in out
    code, _, err = run_cli(capsys, "run", "--sample", "cnn-digits", "--inputs", calib, "-o", str(tmp_path / "f.npz"))
    assert code == 0, err
    q = np.load(tmp_path / "q.npz")["logits"]
    f = np.load(tmp_path / "f.npz")["logits"]
    assert q.shape == f.shape == (64, 10) and not np.array_equal(q, f)
    # dequantized int8 logits: within a few output steps of the float ones, same decisions
    assert np.abs(q - f).max() < 0.1 * np.abs(f).max()
    assert np.mean(q.argmax(1) == f.argmax(1)) >= 0.95
    model = save(matmul_relu(k=16, n=8), tmp_path / "m.onnx")
    code, _, err = run_cli(capsys, "run", model, "--int8", "-o", str(tmp_path / "x.npz"))
    assert code == 2
    assert_one_line_error(err, "--calib")


def _qdq_model(tmp_path) -> tuple[str, np.ndarray]:
    """A float MatMul-Add-MatMul model quantized by onnxruntime's quantize_static (QDQ)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from tests.builders import IR_VERSION

    rng = np.random.default_rng(4)
    inits = [
        numpy_helper.from_array((rng.standard_normal((16, 24)) / 4).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.standard_normal(24).astype(np.float32) / 10, "b1"),
        numpy_helper.from_array((rng.standard_normal((24, 10)) / 5).astype(np.float32), "W2"),
    ]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"),
        helper.make_node("Add", ["h", "b1"], ["hb"], name="bias"),
        helper.make_node("MatMul", ["hb", "W2"], ["y"], name="fc2"),
    ]
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    float_path = save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION), tmp_path / "f.onnx")
    x = rng.standard_normal((32, 16)).astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.i = 0

        def get_next(self):
            if self.i >= len(x):
                return None
            self.i += 1
            return {"x": x[self.i - 1 : self.i]}

    qdq_path = str(tmp_path / "q.onnx")
    quantize_static(float_path, qdq_path, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    onnx.checker.check_model(qdq_path)
    return qdq_path, x


def test_qdq_model_uses_its_own_scales(tmp_path, capsys) -> None:
    import onnxruntime as ort

    path, x = _qdq_model(tmp_path)
    labels = np.arange(32) % 10
    np.savez(tmp_path / "val.npz", x=x, labels=labels)
    out_json = tmp_path / "a.json"
    code, out, err = run_cli(capsys, "analyze", path, "--labels", str(tmp_path / "val.npz"), "--json", str(out_json))
    assert code == 0, err
    assert "scales from the model's QuantizeLinear/DequantizeLinear nodes" in out
    doc = json.loads(out_json.read_text())
    assert doc["calibration"]["method"] == "qdq" and doc["plan"]["source"] == "qdq"
    assert [l["name"] for l in doc["layers"]] == ["fc1", "bias", "fc2"]
    assert all(l["sqnr_db_isolated"] is not None and l["sqnr_db_isolated"] > 20 for l in doc["layers"])
    assert doc["outputs"][0]["labelled_samples"] == 32
    # run --int8 needs no calibration data on a QDQ model, and matches onnxruntime's QDQ run
    np.savez(tmp_path / "in.npz", x=x)
    code, _, err = run_cli(capsys, "run", path, "--int8", "--inputs", str(tmp_path / "in.npz"), "-o", str(tmp_path / "o.npz"))
    assert code == 0, err
    ours = np.load(tmp_path / "o.npz")["y"]
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    step = doc["plan"]["activations"]["y"]["scale"]
    assert np.abs(ours - ref).max() <= 1.0001 * step  # at most one output code apart


def test_free_batch_is_bound_to_one_for_the_npu_estimate_and_said(tmp_path, capsys) -> None:
    """As the window does: the NPU estimate binds a free batch dimension to 1 (the fusions
    need known shapes: MatMul + bias is a gemm_bias_act fusion then), says so on the terminal
    and in the JSON; --dim batch=1 gives the same estimate without the note."""
    model = save(matmul_relu(k=16, n=8), tmp_path / "m.onnx")
    free, bound = tmp_path / "free.json", tmp_path / "bound.json"
    code, out, err = run_cli(capsys, "analyze", model, "--samples", "8", "--json", str(free))
    assert code == 0, err
    assert "(batch=1 assumed; --dim NAME=VALUE binds it)" in out
    doc = json.loads(free.read_text())
    assert doc["assumed_dims"] == {"batch": 1}
    assert any(f["pattern"] == "gemm_bias_act" for f in doc["fusions"])
    code, out, err = run_cli(capsys, "analyze", model, "--samples", "8", "--dim", "batch=1", "--json", str(bound))
    assert code == 0, err
    assert "assumed" not in out.split("NPU estimate")[1].splitlines()[0]
    other = json.loads(bound.read_text())
    assert "assumed_dims" not in other and other["timeline"]["total_ns"] == doc["timeline"]["total_ns"]


def test_unwritable_json_fails_before_the_analysis(tmp_path, capsys) -> None:
    model = save(matmul_relu(k=16, n=8), tmp_path / "m.onnx")
    code, out, err = run_cli(capsys, "analyze", model, "--samples", "8", "--json", str(tmp_path / "missing" / "a.json"))
    assert code == 2
    assert_one_line_error(err, "missing", "the folder does not exist")
    assert "SQNR" not in out  # nothing was analysed


def test_run_takes_a_data_file_with_labels_and_checks_the_output_first(tmp_path, capsys) -> None:
    model = save(matmul_relu(k=16, n=8), tmp_path / "m.onnx")
    data = tmp_path / "val.npz"
    x = np.random.default_rng(2).standard_normal((5, 16)).astype(np.float32)
    np.savez(data, x=x, labels=np.arange(5))
    out = tmp_path / "o.npz"
    code, stdout, err = run_cli(capsys, "run", model, "--inputs", str(data), "-o", str(out))
    assert code == 0, err
    assert "ignoring the array 'labels'" in stdout
    with np.load(out) as got:
        assert got["y"].shape == (5, 8)
    code, stdout, err = run_cli(capsys, "run", model, "--int8", "--calib", str(data), "-o", str(tmp_path / "no" / "o.npz"))
    assert code == 2
    assert_one_line_error(err, "the folder does not exist")
    assert "calibrated" not in stdout  # refused before calibrating
