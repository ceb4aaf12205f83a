"""The benchmark/test model builders: valid ONNX that onnxruntime runs with the stated shapes."""

from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from benchmarks.models import bert_encoder, bert_feeds, cnn, cnn_feeds, mlp_feeds, single_op, tiny_mlp


def _run(proto: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    onnx.checker.check_model(proto, full_check=True)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


@pytest.mark.parametrize("batch, seq, hidden, heads, layers", [(1, 128, 256, 4, 2), (2, 16, 48, 3, 1)])
def test_bert_encoder_runs_with_stated_shape(batch: int, seq: int, hidden: int, heads: int, layers: int) -> None:
    proto = bert_encoder(layers=layers, hidden=hidden, heads=heads, ffn=4 * hidden, seq=seq, batch=batch, vocab=100)
    assert [i.name for i in proto.graph.input] == ["input_ids", "attention_mask"]
    assert proto.opset_import[0].version == 17
    (out,) = _run(proto, bert_feeds(batch=batch, seq=seq, vocab=100, masked=3))
    assert out.shape == (batch, seq, hidden) and out.dtype == np.float32
    assert np.isfinite(out).all()
    # the final LayerNorm leaves every position with mean ~beta, std ~gamma: not a constant output
    assert out.std() > 0.5


def test_bert_encoder_structure_is_the_exported_pattern() -> None:
    layers = 3
    ops = Counter(n.op_type for n in bert_encoder(layers=layers, hidden=32, heads=2, ffn=64, seq=8).graph.node)
    assert ops["Gather"] == 2  # word and position embeddings
    assert ops["LayerNormalization"] == 1 + 2 * layers
    assert ops["MatMul"] == 8 * layers  # Q, K, V, QK^T, PV, output, two FFN
    assert ops["Softmax"] == ops["Erf"] == layers
    assert ops["Transpose"] == 4 * layers and ops["Reshape"] == 4 * layers
    # GELU decomposed: Div (scale) + Div (x / sqrt 2) per layer; 6 bias Adds + mask + 2 residual + Erf's Add
    assert ops["Div"] == 2 * layers
    assert ops["Mul"] == 2 * layers
    assert ops["Add"] == 1 + 10 * layers


def test_bert_attention_mask_masks() -> None:
    """A masked key position must not change the other positions' outputs."""
    proto = bert_encoder(layers=1, hidden=32, heads=2, ffn=64, seq=8, vocab=20)
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = bert_feeds(seq=8, vocab=20, masked=2, seed=1)
    (a,) = session.run(None, feeds)
    feeds["input_ids"][0, -1] = (feeds["input_ids"][0, -1] + 1) % 20  # change a masked token
    (b,) = session.run(None, feeds)
    np.testing.assert_allclose(a[0, :6], b[0, :6], rtol=1e-5, atol=1e-5)
    assert not np.allclose(a[0, -1], b[0, -1])


def test_builders_are_seeded() -> None:
    assert bert_encoder(layers=1, hidden=32, heads=2, ffn=64, seq=8).SerializeToString() == bert_encoder(
        layers=1, hidden=32, heads=2, ffn=64, seq=8
    ).SerializeToString()
    assert cnn(seed=1).SerializeToString() != cnn(seed=2).SerializeToString()


@pytest.mark.parametrize("blocks, width, image, batch, classes", [(4, 32, 64, 1, 10), (3, 8, 32, 2, 5)])
def test_cnn_runs_with_stated_shape(blocks: int, width: int, image: int, batch: int, classes: int) -> None:
    proto = cnn(blocks=blocks, width=width, image=image, batch=batch, classes=classes)
    (out,) = _run(proto, cnn_feeds(batch=batch, image=image))
    assert out.shape == (batch, classes) and out.dtype == np.float32
    assert np.isfinite(out).all() and out.std() > 0
    ops = Counter(n.op_type for n in proto.graph.node)
    assert ops["Add"] == blocks  # one residual Add per block
    assert ops["MaxPool"] >= 1
    assert any(a.name == "strides" and list(a.ints) == [2, 2] for n in proto.graph.node for a in n.attribute)
    assert ops["GlobalAveragePool"] == ops["Flatten"] == ops["Gemm"] == 1
    assert ops["Conv"] == ops["BatchNormalization"]


def test_tiny_mlp_runs_with_symbolic_batch() -> None:
    proto = tiny_mlp(inputs=16, hidden=32, outputs=4, batch="batch")
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    (out,) = _run(proto, mlp_feeds(batch=5, inputs=16))
    assert out.shape == (5, 4)


def test_single_op_model_runs() -> None:
    w = np.ones((4, 3, 3, 3), dtype=np.float32)
    proto = single_op("Conv", [("x", (1, 3, 8, 8))], None, {"w": w}, pads=[1, 1, 1, 1])
    (out,) = _run(proto, {"x": np.ones((1, 3, 8, 8), dtype=np.float32)})
    assert out.shape == (1, 4, 8, 8)
    assert out[0, 0, 4, 4] == 27.0  # interior: 3 channels x 3x3 ones
