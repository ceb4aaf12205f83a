"""The bundled sample models and data in resources/samples (made by scripts/train_samples.py).

Accuracy is computed from the shipped files with onnxruntime (the reference, never the
app's executor). Thresholds sit ~2 points below the accuracy measured when the files were
made (resources/samples/README.md): ViT 94.44% -> >= 92%, CNN 98.06% -> >= 96%.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "resources" / "samples"
MAX_BYTES = 2 * 1024 * 1024

# file -> minimum validation accuracy (fraction) computed from the file
MODELS = {"vit-digits.onnx": 0.92, "cnn-digits.onnx": 0.96}

# the ops the project's float executor supports; the samples must use only these
ALLOWED_OPS = frozenset(
    "MatMul Gemm Conv BatchNormalization LayerNormalization Softmax Erf Relu Add Sub Mul Div Pow "
    "Sqrt ReduceMean Reshape Transpose Flatten Squeeze Unsqueeze Concat Split Slice Gather Expand "
    "Shape Constant Cast MaxPool GlobalAveragePool Identity Where Equal ConstantOfShape Range".split()
)


def _val() -> tuple[np.ndarray, np.ndarray]:
    with np.load(SAMPLES / "digits-val.npz") as data:
        return data["image"], data["labels"]


def _session(filename: str):  # -> onnxruntime.InferenceSession
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(SAMPLES / filename), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("filename", sorted(MODELS))
def test_model_file_is_small_valid_and_uses_supported_ops(filename: str) -> None:
    path = SAMPLES / filename
    assert path.stat().st_size < MAX_BYTES
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert {n.op_type for n in proto.graph.node} <= ALLOWED_OPS
    assert [i.name for i in proto.graph.input] == ["image"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    in_dims = proto.graph.input[0].type.tensor_type.shape.dim
    out_dims = proto.graph.output[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in in_dims] == ["batch", 1, 8, 8]
    assert [d.dim_param or d.dim_value for d in out_dims] == ["batch", 10]


def test_cnn_keeps_batchnorm_after_each_conv() -> None:
    proto = onnx.load(str(SAMPLES / "cnn-digits.onnx"))
    producer = {out: node.op_type for node in proto.graph.node for out in node.output}
    bns = [n for n in proto.graph.node if n.op_type == "BatchNormalization"]
    assert len(bns) == 3
    assert all(producer[bn.input[0]] == "Conv" for bn in bns)


def test_vit_has_unfused_attention_and_erf_gelu() -> None:
    proto = onnx.load(str(SAMPLES / "vit-digits.onnx"))
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("Softmax") == 2  # one per encoder block
    assert ops.count("Erf") == 2  # exact GELU, one per MLP
    assert ops.count("LayerNormalization") == 5  # 2 per block + final


def test_calibration_npz_keys_shapes_dtypes() -> None:
    with np.load(SAMPLES / "digits-calib.npz") as data:
        assert sorted(data.files) == ["image"]
        image = data["image"]
    assert image.dtype == np.float32
    assert image.shape == (64, 1, 8, 8)
    assert np.isfinite(image).all()


def test_validation_npz_keys_shapes_dtypes() -> None:
    with np.load(SAMPLES / "digits-val.npz") as data:
        assert sorted(data.files) == ["image", "labels"]
    image, labels = _val()
    assert image.dtype == np.float32
    assert image.shape == (360, 1, 8, 8)
    assert labels.dtype == np.int64
    assert labels.shape == (360,)
    assert set(np.unique(labels)) == set(range(10))


@pytest.mark.parametrize("filename", sorted(MODELS))
def test_preprocessing_metadata_inverts_to_digit_pixels(filename: str) -> None:
    """(image * std + mean) * 16 gives back the integer pixels 0..16 (tolerance 1e-3)."""
    meta = {p.key: p.value for p in onnx.load(str(SAMPLES / filename)).metadata_props}
    mean, std = float(meta["preprocess_mean"]), float(meta["preprocess_std"])
    image, _ = _val()
    pixels = (image.astype(np.float64) * std + mean) * 16.0
    np.testing.assert_allclose(pixels, np.round(pixels), rtol=0, atol=1e-3)
    assert pixels.min() > -1e-3 and pixels.max() < 16 + 1e-3


@pytest.mark.parametrize("filename", sorted(MODELS))
def test_validation_accuracy_from_file(filename: str) -> None:
    sess = _session(filename)
    image, labels = _val()
    logits = sess.run(["logits"], {"image": image})[0]
    assert logits.shape == (len(labels), 10)
    accuracy = float((logits.argmax(axis=1) == labels).mean())
    assert accuracy >= MODELS[filename], f"{filename}: accuracy {accuracy:.4f}"


@pytest.mark.parametrize("filename", sorted(MODELS))
def test_batch_dimension_is_symbolic(filename: str) -> None:
    """Batch 1 and batch 7 give the same logits as the full batch (atol 1e-4)."""
    sess = _session(filename)
    image, _ = _val()
    full = sess.run(["logits"], {"image": image})[0]  # batch 360
    for n in (1, 7):
        part = sess.run(["logits"], {"image": image[:n]})[0]
        assert part.shape == (n, 10)
        np.testing.assert_allclose(part, full[:n], rtol=0, atol=1e-4)
