"""Test and benchmark models built in code with ``onnx.helper``.

Every builder returns an ``onnx.ModelProto`` at opset 17 with float32 weights drawn from
a seeded generator (same arguments, same model). Layouts are the ones exporters emit:
activations NCHW for the CNN, (batch, seq, hidden) for the encoder.

- :func:`bert_encoder`: a BERT-style encoder spelled out in primitive ops, the way
  ``torch.onnx.export`` writes it (GELU decomposed as Div-Erf-Add-Mul-Mul).
- :func:`cnn`: Conv+BatchNormalization+Relu residual blocks, downsampling between stages
  alternately with MaxPool and a stride-2 Conv, then GlobalAveragePool, Flatten, Gemm.
- :func:`tiny_mlp`: MatMul+Add+Relu+MatMul+Add, optionally with a symbolic batch dimension.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # the IR version that goes with opset 17; onnxruntime accepts it


class GraphBuilder:
    """Collects nodes and initializers under unique names; ``op`` returns the output name."""

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self._counts: dict[str, int] = {}

    def _unique(self, base: str) -> str:
        n = self._counts.get(base, 0)
        self._counts[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def const(self, name: str, value: np.ndarray) -> str:
        """Add an initializer; returns its (unique) name."""
        name = self._unique(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def normal(self, name: str, shape: tuple[int, ...], std: float, mean: float = 0.0) -> str:
        """A float32 initializer drawn from N(mean, std^2)."""
        value = self.rng.normal(mean, std, size=shape).astype(np.float32)
        return self.const(name, value)

    def uniform(self, name: str, shape: tuple[int, ...], low: float, high: float) -> str:
        """A float32 initializer drawn from U(low, high)."""
        return self.const(name, self.rng.uniform(low, high, size=shape).astype(np.float32))

    def op(self, op_type: str, inputs: list[str], name: str, output: str | None = None, **attrs: object) -> str:
        """Append one node with one output (named ``output`` or after the node)."""
        node_name = self._unique(name)
        out = output or node_name
        self.nodes.append(helper.make_node(op_type, inputs, [out], name=node_name, **attrs))
        return out

    def model(
        self,
        name: str,
        inputs: list[onnx.ValueInfoProto],
        outputs: list[onnx.ValueInfoProto],
    ) -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, name, inputs, outputs, initializer=self.initializers)
        model = helper.make_model(
            graph,
            opset_imports=[helper.make_opsetid("", OPSET)],
            producer_name="deployment-inspector-benchmarks",
        )
        model.ir_version = IR_VERSION
        return model


# ------------------------------------------------------------------------------- BERT


def _linear(b: GraphBuilder, x: str, fan_in: int, fan_out: int, name: str) -> str:
    """MatMul with a (fan_in, fan_out) weight, then Add of a bias: how exporters write nn.Linear."""
    w = b.normal(f"{name}.weight", (fan_in, fan_out), std=1.0 / math.sqrt(fan_in))
    bias = b.normal(f"{name}.bias", (fan_out,), std=0.02)
    y = b.op("MatMul", [x, w], f"{name}/MatMul")
    return b.op("Add", [y, bias], f"{name}/Add")


def _layer_norm(b: GraphBuilder, x: str, hidden: int, name: str, output: str | None = None) -> str:
    gamma = b.normal(f"{name}.weight", (hidden,), std=0.05, mean=1.0)
    beta = b.normal(f"{name}.bias", (hidden,), std=0.02)
    return b.op("LayerNormalization", [x, gamma, beta], f"{name}/LayerNormalization", output, axis=-1, epsilon=1e-12)


def _gelu_erf(b: GraphBuilder, x: str, name: str) -> str:
    """GELU(x) = 0.5 * x * (1 + erf(x / sqrt 2)), as Div-Erf-Add-Mul-Mul."""
    sqrt2 = b.const(f"{name}.sqrt2", np.array(math.sqrt(2.0), dtype=np.float32))
    one = b.const(f"{name}.one", np.array(1.0, dtype=np.float32))
    half = b.const(f"{name}.half", np.array(0.5, dtype=np.float32))
    d = b.op("Div", [x, sqrt2], f"{name}/Div")
    e = b.op("Erf", [d], f"{name}/Erf")
    a = b.op("Add", [e, one], f"{name}/Add")
    m = b.op("Mul", [x, a], f"{name}/Mul")
    return b.op("Mul", [m, half], f"{name}/Mul_1")


def bert_encoder(
    layers: int = 2,
    hidden: int = 256,
    heads: int = 4,
    ffn: int = 1024,
    seq: int = 128,
    batch: int = 1,
    vocab: int = 1000,
    seed: int = 0,
) -> onnx.ModelProto:
    """A BERT-style encoder as PyTorch exports it (post-LayerNorm, GELU decomposed).

    Inputs: ``input_ids`` int64 (batch, seq) in [0, vocab); ``attention_mask`` float32
    (batch, 1, 1, seq), additive (0 to attend, a large negative number to mask).
    Output: ``last_hidden`` float32 (batch, seq, hidden).
    """
    if hidden % heads:
        raise ValueError(f"hidden {hidden} is not a multiple of heads {heads}")
    head_dim = hidden // heads
    b = GraphBuilder(seed)

    word = b.normal("embeddings.word_embeddings.weight", (vocab, hidden), std=0.02)
    pos_table = b.normal("embeddings.position_embeddings.weight", (seq, hidden), std=0.02)
    position_ids = b.const("embeddings.position_ids", np.arange(seq, dtype=np.int64).reshape(1, seq))
    tok = b.op("Gather", [word, "input_ids"], "embeddings/word_embeddings/Gather", axis=0)
    pos = b.op("Gather", [pos_table, position_ids], "embeddings/position_embeddings/Gather", axis=0)
    emb = b.op("Add", [tok, pos], "embeddings/Add")
    x = _layer_norm(b, emb, hidden, "embeddings.LayerNorm")

    heads_shape = b.const("shape.heads", np.array([batch, seq, heads, head_dim], dtype=np.int64))
    merged_shape = b.const("shape.merged", np.array([batch, seq, hidden], dtype=np.int64))
    scale = b.const("attention.scale", np.array(math.sqrt(head_dim), dtype=np.float32))

    for i in range(layers):
        p = f"encoder.layer.{i}"
        q = _linear(b, x, hidden, hidden, f"{p}.attention.self.query")
        k = _linear(b, x, hidden, hidden, f"{p}.attention.self.key")
        v = _linear(b, x, hidden, hidden, f"{p}.attention.self.value")
        q = b.op("Reshape", [q, heads_shape], f"{p}/attention/query/Reshape")
        k = b.op("Reshape", [k, heads_shape], f"{p}/attention/key/Reshape")
        v = b.op("Reshape", [v, heads_shape], f"{p}/attention/value/Reshape")
        q = b.op("Transpose", [q], f"{p}/attention/query/Transpose", perm=[0, 2, 1, 3])  # (B, h, S, d)
        k_t = b.op("Transpose", [k], f"{p}/attention/key/Transpose", perm=[0, 2, 3, 1])  # (B, h, d, S)
        v = b.op("Transpose", [v], f"{p}/attention/value/Transpose", perm=[0, 2, 1, 3])  # (B, h, S, d)
        scores = b.op("MatMul", [q, k_t], f"{p}/attention/MatMul")  # (B, h, S, S)
        scores = b.op("Div", [scores, scale], f"{p}/attention/Div")
        scores = b.op("Add", [scores, "attention_mask"], f"{p}/attention/Add")
        probs = b.op("Softmax", [scores], f"{p}/attention/Softmax", axis=-1)
        ctx = b.op("MatMul", [probs, v], f"{p}/attention/MatMul_1")  # (B, h, S, d)
        ctx = b.op("Transpose", [ctx], f"{p}/attention/Transpose", perm=[0, 2, 1, 3])  # (B, S, h, d)
        ctx = b.op("Reshape", [ctx, merged_shape], f"{p}/attention/Reshape")
        attn = _linear(b, ctx, hidden, hidden, f"{p}.attention.output.dense")
        attn = b.op("Add", [attn, x], f"{p}/attention/output/Add")
        x = _layer_norm(b, attn, hidden, f"{p}.attention.output.LayerNorm")
        h = _linear(b, x, hidden, ffn, f"{p}.intermediate.dense")
        h = _gelu_erf(b, h, f"{p}/intermediate/gelu")
        out = _linear(b, h, ffn, hidden, f"{p}.output.dense")
        out = b.op("Add", [out, x], f"{p}/output/Add")
        last = i == layers - 1
        x = _layer_norm(b, out, hidden, f"{p}.output.LayerNorm", output="last_hidden" if last else None)
    if layers == 0:
        x = b.op("Identity", [x], "last_hidden/Identity", output="last_hidden")

    inputs = [
        helper.make_tensor_value_info("input_ids", TensorProto.INT64, [batch, seq]),
        helper.make_tensor_value_info("attention_mask", TensorProto.FLOAT, [batch, 1, 1, seq]),
    ]
    outputs = [helper.make_tensor_value_info("last_hidden", TensorProto.FLOAT, [batch, seq, hidden])]
    return b.model("bert_encoder", inputs, outputs)


def bert_feeds(
    batch: int = 1, seq: int = 128, vocab: int = 1000, masked: int = 0, seed: int = 0
) -> dict[str, np.ndarray]:
    """Inputs for :func:`bert_encoder`: random token ids; the last ``masked`` positions masked out."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, size=(batch, seq), dtype=np.int64)
    mask = np.zeros((batch, 1, 1, seq), dtype=np.float32)
    if masked:
        mask[..., seq - masked :] = -10000.0  # the additive mask value BERT exports use
    return {"input_ids": ids, "attention_mask": mask}


# -------------------------------------------------------------------------------- CNN


def _conv_bn(
    b: GraphBuilder, x: str, c_in: int, c_out: int, name: str, stride: int = 1, relu: bool = True, kernel: int = 3
) -> str:
    """Conv (He-initialised, no bias: BN follows) + BatchNormalization (+ Relu)."""
    fan_in = c_in * kernel * kernel
    w = b.normal(f"{name}.conv.weight", (c_out, c_in, kernel, kernel), std=math.sqrt(2.0 / fan_in))
    pad = kernel // 2
    y = b.op(
        "Conv", [x, w], f"{name}/Conv",
        kernel_shape=[kernel, kernel], pads=[pad, pad, pad, pad], strides=[stride, stride],
    )
    gamma = b.uniform(f"{name}.bn.weight", (c_out,), 0.5, 1.5)
    beta = b.normal(f"{name}.bn.bias", (c_out,), std=0.1)
    mean = b.normal(f"{name}.bn.running_mean", (c_out,), std=0.1)
    var = b.uniform(f"{name}.bn.running_var", (c_out,), 0.5, 1.5)
    y = b.op("BatchNormalization", [y, gamma, beta, mean, var], f"{name}/BatchNormalization", epsilon=1e-5)
    return b.op("Relu", [y], f"{name}/Relu") if relu else y


def cnn(
    blocks: int = 4, width: int = 32, image: int = 64, batch: int = 1, classes: int = 10, seed: int = 0
) -> onnx.ModelProto:
    """A small ResNet-style classifier, layout NCHW.

    Stem Conv3x3+BN+Relu (3 -> width), then ``blocks`` residual blocks
    (Conv+BN+Relu, Conv+BN, Add skip, Relu). Between blocks the feature map is halved,
    alternately by MaxPool 2x2/2 (channels kept) and by a stride-2 Conv+BN+Relu
    (channels doubled), while it is at least 4 pixels wide. Head: GlobalAveragePool,
    Flatten, Gemm. Input ``image`` float32 (batch, 3, image, image); output ``logits``
    float32 (batch, classes).
    """
    if blocks < 1:
        raise ValueError("cnn needs at least one block")
    b = GraphBuilder(seed)
    x = _conv_bn(b, "image", 3, width, "stem")
    channels, size = width, image
    for i in range(blocks):
        if i > 0 and size >= 4:
            if i % 2 == 1:
                x = b.op("MaxPool", [x], f"pool{i}/MaxPool", kernel_shape=[2, 2], strides=[2, 2])
            else:
                x = _conv_bn(b, x, channels, 2 * channels, f"down{i}", stride=2)
                channels *= 2
            size //= 2
        y = _conv_bn(b, x, channels, channels, f"block{i}.0")
        y = _conv_bn(b, y, channels, channels, f"block{i}.1", relu=False)
        y = b.op("Add", [y, x], f"block{i}/Add")
        x = b.op("Relu", [y], f"block{i}/Relu")
    x = b.op("GlobalAveragePool", [x], "head/GlobalAveragePool")
    x = b.op("Flatten", [x], "head/Flatten", axis=1)
    w = b.normal("head.fc.weight", (classes, channels), std=1.0 / math.sqrt(channels))
    bias = b.normal("head.fc.bias", (classes,), std=0.02)
    b.op("Gemm", [x, w, bias], "head/Gemm", output="logits", transB=1)

    inputs = [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 3, image, image])]
    outputs = [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, classes])]
    return b.model("cnn", inputs, outputs)


def cnn_feeds(batch: int = 1, image: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    """A standard-normal image batch for :func:`cnn`."""
    rng = np.random.default_rng(seed)
    return {"image": rng.standard_normal((batch, 3, image, image)).astype(np.float32)}


# -------------------------------------------------------------------------------- MLP


def tiny_mlp(
    inputs: int = 16, hidden: int = 32, outputs: int = 4, batch: int | str = 1, seed: int = 0
) -> onnx.ModelProto:
    """MatMul+Add+Relu+MatMul+Add. Input ``x`` float32 (batch, inputs); output ``y`` (batch, outputs).

    ``batch`` may be a string to make it a symbolic dimension (e.g. ``"batch"``).
    """
    b = GraphBuilder(seed)
    h = _linear(b, "x", inputs, hidden, "fc1")
    h = b.op("Relu", [h], "fc1/Relu")
    w = b.normal("fc2.weight", (hidden, outputs), std=1.0 / math.sqrt(hidden))
    bias = b.normal("fc2.bias", (outputs,), std=0.02)
    y = b.op("MatMul", [h, w], "fc2/MatMul")
    b.op("Add", [y, bias], "fc2/Add", output="y")
    return b.model(
        "tiny_mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, outputs])],
    )


def mlp_feeds(batch: int = 1, inputs: int = 16, seed: int = 0) -> dict[str, np.ndarray]:
    """A standard-normal input batch for :func:`tiny_mlp`."""
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((batch, inputs)).astype(np.float32)}


def single_op(
    op_type: str,
    inputs: list[tuple[str, tuple[int | str, ...]]],
    output_shape: tuple[int | str, ...] | None,
    weights: dict[str, np.ndarray] | None = None,
    opset: int = OPSET,
    **attrs: object,
) -> onnx.ModelProto:
    """A one-node float32 model: graph inputs ``inputs`` (name, shape), initializers
    ``weights`` (name -> array, read by the node after the graph inputs, in dict order),
    one output ``y`` whose shape is declared or, when ``output_shape`` is None, set by shape inference.
    """
    weights = weights or {}
    node = helper.make_node(op_type, [n for n, _ in inputs] + list(weights), ["y"], name=op_type.lower(), **attrs)
    graph = helper.make_graph(
        [node],
        op_type.lower(),
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None if output_shape is None else list(output_shape))],
        initializer=[numpy_helper.from_array(np.asarray(v), n) for n, v in weights.items()],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = IR_VERSION if opset <= OPSET else helper.find_min_ir_version_for([model.opset_import[0]])
    if output_shape is None:  # declare what inference finds (the graph stays valid when it finds nothing)
        model = onnx.shape_inference.infer_shapes(model)
    return model
