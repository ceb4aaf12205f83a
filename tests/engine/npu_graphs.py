"""Small hand-built graphs for the fusion, cost-model and timeline tests (onnx.helper ->
engine.model_from_proto). Every intermediate shape is stated in the builders' comments so
the expected byte counts can be checked by hand (act_bytes = 1: one byte per element)."""

from __future__ import annotations

import math

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from engine import Model, model_from_proto
from engine.npu import NpuProfile

# a chip with a float unit (fallbacks stay on the NPU) and a pure int8 one (fallbacks on the host)
FLOAT_CHIP = NpuProfile("float-chip", int8_tops=10.0, vector_gops=100.0, dram_gbps=10.0, sram_kib=64,
                        op_overhead_ns=100.0, float_gflops=50.0)
INT8_CHIP = NpuProfile("int8-chip", int8_tops=10.0, vector_gops=100.0, dram_gbps=10.0, sram_kib=64,
                       op_overhead_ns=100.0)


class G:
    """Collects nodes, initializers and graph inputs; ``model`` declares the outputs."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.inits: list = []
        self.inputs: list = []

    def input(self, name: str, shape: tuple[int, ...]) -> str:
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        return name

    def const(self, name: str, value: object, dtype: type = np.float32) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(self, op_type: str, inputs: list[str], output: str, **attrs: object) -> str:
        self.nodes.append(helper.make_node(op_type, inputs, [output], name=output, **attrs))
        return output

    def split(self, x: str, outputs: list[str], sizes: list[int], axis: int) -> list[str]:
        sizes_name = self.const(f"{outputs[0]}.sizes", sizes, np.int64)
        self.nodes.append(helper.make_node("Split", [x, sizes_name], outputs, name="split", axis=axis))
        return outputs

    def model(self, outputs: dict[str, tuple[int, ...]], opset: int = 17) -> Model:
        graph = helper.make_graph(
            self.nodes, "g", self.inputs,
            [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in outputs.items()],
            initializer=self.inits,
        )
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        proto.ir_version = 8
        return model_from_proto(proto)


def taps(g: G, tap: str | None, out_shape: dict[str, tuple[int, ...]], shapes: dict[str, tuple[int, ...]],
         as_output: bool = False) -> dict[str, tuple[int, ...]]:
    """Make ``tap`` (an internal tensor) fan out to an extra Neg node, or be a graph output."""
    outputs = dict(out_shape)
    if tap is None:
        return outputs
    if as_output:
        outputs[tap] = shapes[tap]
    else:
        outputs[g.op("Neg", [tap], "tap_reader")] = shapes[tap]
    return outputs


rng = np.random.default_rng(0)


def conv_bn_act(act: str = "relu", tap: str | None = None, as_output: bool = False) -> Model:
    """x (1,3,8,8) -> Conv 3x3 pad 1 -> c (1,4,8,8) -> BN -> b -> act -> y; c, b: 256 elements."""
    g = G()
    g.input("x", (1, 3, 8, 8))
    w = g.const("w", rng.standard_normal((4, 3, 3, 3)))
    g.op("Conv", ["x", w], "c", kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    bn = [g.const(f"bn.{k}", v) for k, v in (("s", np.ones(4)), ("b", np.zeros(4)), ("m", np.zeros(4)), ("v", np.ones(4)))]
    g.op("BatchNormalization", ["c", *bn], "b")
    shapes = {"c": (1, 4, 8, 8), "b": (1, 4, 8, 8), "s": (1, 4, 8, 8)}
    if act == "relu":
        g.op("Relu", ["b"], "y")
    elif act == "clip":
        g.op("Clip", ["b", g.const("lo", 0.0), g.const("hi", 6.0)], "y")
    elif act == "silu":  # Sigmoid + Mul: s is a third internal tensor
        g.op("Sigmoid", ["b"], "s")
        g.op("Mul", ["b", "s"], "y")
    return g.model(taps(g, tap, {"y": (1, 4, 8, 8)}, shapes, as_output))


def gemm_bias_relu(bias_shape: tuple[int, ...] = (8,), tap: str | None = None, as_output: bool = False) -> Model:
    """x (4,16) @ w (16,8) -> m (4,8) -> Add bias -> a (4,8) -> Relu -> y; m, a: 32 elements."""
    g = G()
    g.input("x", (4, 16))
    g.op("MatMul", ["x", g.const("w", rng.standard_normal((16, 8)))], "m")
    g.op("Add", ["m", g.const("bias", rng.standard_normal(bias_shape))], "a")
    g.op("Relu", ["a"], "y")
    return g.model(taps(g, tap, {"y": (4, 8)}, {"m": (4, 8), "a": (4, 8)}, as_output))


def layernorm(axis: int = -1, square: str = "pow", affine: bool = True, tap: str | None = None,
              as_output: bool = False) -> Model:
    """x (2,4,8) normalised over the last axis, spelled out in 9 nodes (7 without ``affine``).

    Internal tensors: mean (2,4,1) 8, center 64, square 64, var 8, var_eps 8, std 8, norm 64,
    scaled 64 elements = 288 (without ``affine``: 160, ``norm`` is the output ``y``).
    ``square="mul"`` squares as Mul(center, center) instead of Pow(center, 2).
    """
    g = G()
    g.input("x", (2, 4, 8))
    g.op("ReduceMean", ["x"], "mean", axes=[axis], keepdims=1)
    g.op("Sub", ["x", "mean"], "center")
    if square == "pow":
        g.op("Pow", ["center", g.const("two", 2.0)], "square")
    else:
        g.op("Mul", ["center", "center"], "square")
    g.op("ReduceMean", ["square"], "var", axes=[-1], keepdims=1)
    g.op("Add", ["var", g.const("eps", 1e-5)], "var_eps")
    g.op("Sqrt", ["var_eps"], "std")
    if not affine:
        g.op("Div", ["center", "std"], "y")
        return g.model(taps(g, tap, {"y": (2, 4, 8)}, {"center": (2, 4, 8), "mean": (2, 4, 1)}, as_output))
    g.op("Div", ["center", "std"], "norm")
    g.op("Mul", ["norm", g.const("gamma", np.ones(8))], "scaled")
    g.op("Add", ["scaled", g.const("beta", np.zeros(8))], "y")
    shapes = {"center": (2, 4, 8), "norm": (2, 4, 8), "mean": (2, 4, 1)}
    return g.model(taps(g, tap, {"y": (2, 4, 8)}, shapes, as_output), opset=17)


def gelu_erf(half_first: bool = False, divisor: float = math.sqrt(2.0), tap: str | None = None,
             as_output: bool = False) -> Model:
    """x (4,16) -> GELU as Div-Erf-Add-Mul-Mul; internal d, e, a and m (or h): 4 x 64 elements."""
    g = G()
    g.input("x", (4, 16))
    g.op("Div", ["x", g.const("sqrt2", divisor)], "d")
    g.op("Erf", ["d"], "e")
    g.op("Add", ["e", g.const("one", 1.0)], "a")
    if half_first:
        g.op("Mul", ["x", g.const("half", 0.5)], "h")
        g.op("Mul", ["h", "a"], "y")
    else:
        g.op("Mul", ["x", "a"], "m")
        g.op("Mul", ["m", g.const("half", 0.5)], "y")
    return g.model(taps(g, tap, {"y": (4, 16)}, {k: (4, 16) for k in "deamh"}, as_output))


def gelu_tanh(cube: str = "pow", tap: str | None = None, as_output: bool = False) -> Model:
    """x (4,16) -> 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) as torch exports it;
    internal p, k, i, b, t, o, h: 7 x 64 elements (``cube="mul"``: x*x*x, one more, q)."""
    g = G()
    g.input("x", (4, 16))
    if cube == "pow":
        g.op("Pow", ["x", g.const("three", 3.0)], "p")
    else:
        g.op("Mul", ["x", "x"], "q")
        g.op("Mul", ["q", "x"], "p")
    g.op("Mul", ["p", g.const("kappa", 0.044715)], "k")
    g.op("Add", ["x", "k"], "i")
    g.op("Mul", ["i", g.const("beta", math.sqrt(2.0 / math.pi))], "b")
    g.op("Tanh", ["b"], "t")
    g.op("Add", ["t", g.const("one", 1.0)], "o")
    g.op("Mul", ["x", g.const("half", 0.5)], "h")
    g.op("Mul", ["h", "o"], "y")
    return g.model(taps(g, tap, {"y": (4, 16)}, {k: (4, 16) for k in "pkibtoh"}, as_output))


def attention(tap: str | None = None, as_output: bool = False) -> Model:
    """q (1,2,4,8) @ kt (1,2,8,4) -> s (1,2,4,4) -> Div -> Add mask -> Softmax -> @ v (1,2,4,8).
    Internal s, sd, sm, p: 4 x 32 elements."""
    g = G()
    for name, shape in (("q", (1, 2, 4, 8)), ("kt", (1, 2, 8, 4)), ("v", (1, 2, 4, 8)), ("mask", (1, 1, 1, 4))):
        g.input(name, shape)
    g.op("MatMul", ["q", "kt"], "s")
    g.op("Div", ["s", g.const("scale", math.sqrt(8.0))], "sd")
    g.op("Add", ["sd", "mask"], "sm")
    g.op("Softmax", ["sm"], "p", axis=-1)
    g.op("MatMul", ["p", "v"], "y")
    return g.model(taps(g, tap, {"y": (1, 2, 4, 8)}, {k: (1, 2, 4, 4) for k in ("s", "sd", "sm", "p")}, as_output))


def transpose_pair(perm2: tuple[int, ...] = (0, 2, 1), tap: str | None = None, as_output: bool = False) -> Model:
    """x (2,3,4) -> Transpose(0,2,1) -> t1 (2,4,3) -> Transpose(perm2) -> t2 -> Relu -> y; 24 elements each."""
    g = G()
    g.input("x", (2, 3, 4))
    g.op("Transpose", ["x"], "t1", perm=[0, 2, 1])
    g.op("Transpose", ["t1"], "t2", perm=list(perm2))
    out = tuple(np.empty((2, 4, 3)).transpose(perm2).shape)
    g.op("Relu", ["t2"], "y")
    return g.model(taps(g, tap, {"y": out}, {"t1": (2, 4, 3), "t2": out}, as_output))


def reshape_transpose_matmul(perm: tuple[int, ...] = (0, 2, 1, 3), tap: str | None = None,
                             as_output: bool = False) -> Model:
    """x (1,4,8) -> Reshape (1,4,2,4) -> r -> Transpose(perm) -> t -> MatMul w (4,5) -> y.
    Internal r, t: 32 elements each (the head split of an attention layer)."""
    g = G()
    g.input("x", (1, 4, 8))
    g.op("Reshape", ["x", g.const("shape", [1, 4, 2, 4], np.int64)], "r")
    g.op("Transpose", ["r"], "t", perm=list(perm))
    t_shape = tuple(np.empty((1, 4, 2, 4)).transpose(perm).shape)
    g.op("MatMul", ["t", g.const("w", rng.standard_normal((4, 5)))], "y")
    return g.model(taps(g, tap, {"y": t_shape[:-1] + (5,)}, {"r": (1, 4, 2, 4), "t": t_shape}, as_output))


def matmul_transposed_b() -> Model:
    """a (3,4) @ Transpose(k (5,4)) -> kt (4,5): the MAC array reads B transposed; kt 20 elements."""
    g = G()
    g.input("a", (3, 4))
    g.input("k", (5, 4))
    g.op("Transpose", ["k"], "kt", perm=[1, 0])
    g.op("MatMul", ["a", "kt"], "y")
    return g.model({"y": (3, 5)})


def matmul_head_merge() -> Model:
    """x (1,2,4,3) @ w (3,4) -> m (1,2,4,4) -> Transpose(0,2,1,3) -> t (1,4,2,4) -> Reshape (1,4,8)
    -> r -> Relu -> y: the MatMul writes the merged layout; t, r: 32 elements each."""
    g = G()
    g.input("x", (1, 2, 4, 3))
    g.op("MatMul", ["x", g.const("w", rng.standard_normal((3, 4)))], "m")
    g.op("Transpose", ["m"], "t", perm=[0, 2, 1, 3])
    g.op("Reshape", ["t", g.const("shape", [1, 4, 8], np.int64)], "r")
    g.op("Relu", ["r"], "y")
    return g.model({"y": (1, 4, 8)})


def elementwise(tap: str | None = None, as_output: bool = False) -> Model:
    """x (4,16) -> Add 0.5 -> a -> Mul (16,) -> m -> Relu -> y; internal a, m: 64 elements each."""
    g = G()
    g.input("x", (4, 16))
    g.op("Add", ["x", g.const("c", 0.5)], "a")
    g.op("Mul", ["a", g.const("scale", np.linspace(0.5, 1.5, 16))], "m")
    g.op("Relu", ["m"], "y")
    return g.model(taps(g, tap, {"y": (4, 16)}, {"a": (4, 16), "m": (4, 16)}, as_output))


def concat(graph_input: bool = False, tap: str | None = None, as_output: bool = False) -> Model:
    """x (2,4) -> Relu a, Sigmoid b (8 elements each) -> Concat axis 0 -> c (4,4) -> Tanh -> y."""
    g = G()
    g.input("x", (2, 4))
    g.op("Relu", ["x"], "a")
    g.op("Sigmoid", ["x"], "b")
    g.op("Concat", ["x" if graph_input else "a", "b"], "c", axis=0)
    g.op("Tanh", ["c"], "y")
    return g.model(taps(g, tap, {"y": (4, 4)}, {"a": (2, 4), "b": (2, 4)}, as_output))


def split(as_output: bool = False) -> Model:
    """x (2,8) -> Relu r -> Split axis 1 -> s1, s2 (2,4): 8 elements each -> Tanh y1, Sigmoid y2."""
    g = G()
    g.input("x", (2, 8))
    g.op("Relu", ["x"], "r")
    g.split("r", ["s1", "s2"], [4, 4], axis=1)
    g.op("Tanh", ["s1"], "y1")
    g.op("Sigmoid", ["s2"], "y2")
    outputs = {"y1": (2, 4), "y2": (2, 4)}
    if as_output:
        outputs["s1"] = (2, 4)
    return g.model(outputs)


def random_graph(seed: int, steps: int = 20) -> Model:
    """A random 2-D graph mixing every pattern's ops (MatMul/bias/activations, GELU, Softmax,
    Transpose pairs, Concat, Split, Reshape, residual adds), with random widths and batch
    sizes so that some tensors fit the SRAM and some do not. Same seed, same graph."""
    r = np.random.default_rng(seed)
    g = G()
    count = [0]

    def fresh(base: str) -> str:
        count[0] += 1
        return f"{base}{count[0]}"

    rows = int(r.choice([1, 8, 64, 256]))
    width = int(r.choice([16, 64, 256, 1024]))
    pool = [(g.input("x", (rows, width)), width)]
    for _ in range(steps):
        x, c = pool[int(r.integers(len(pool)))] if r.random() < 0.3 else pool[-1]
        kind = int(r.integers(9))
        if kind == 0:
            c2 = int(r.choice([16, 64, 256, 1024]))
            y = g.op("MatMul", [x, g.const(fresh("w"), r.standard_normal((c, c2)) * 0.1)], fresh("mm"))
            if r.random() < 0.7:
                y = g.op("Add", [y, g.const(fresh("b"), r.standard_normal(c2))], fresh("bias"))
            if r.random() < 0.5:
                y = g.op(str(r.choice(["Relu", "Sigmoid", "Tanh"])), [y], fresh("act"))
            pool.append((y, c2))
        elif kind == 1:
            pool.append((g.op(str(r.choice(["Relu", "Erf", "Exp", "Sigmoid", "Neg"])), [x], fresh("u")), c))
        elif kind == 2:
            pool.append((g.op(str(r.choice(["Add", "Mul"])), [x, g.const(fresh("k"), r.standard_normal())], fresh("e")), c))
        elif kind == 3:
            same = [t for t, cc in pool if cc == c and t != x]
            if same:
                pool.append((g.op("Add", [x, same[int(r.integers(len(same)))]], fresh("res")), c))
        elif kind == 4:
            t = g.op("Transpose", [x], fresh("t"), perm=[1, 0])
            pool.append((g.op("Transpose", [t], fresh("t"), perm=[1, 0]), c))
        elif kind == 5:
            pool.append((g.op("Softmax", [x], fresh("sm"), axis=-1), c))
        elif kind == 6:
            others = [(t, cc) for t, cc in pool if t != x]
            if others:
                t2, c2 = others[int(r.integers(len(others)))]
                pool.append((g.op("Concat", [x, t2], fresh("cat"), axis=1), c + c2))
        elif kind == 7 and c % 2 == 0:
            a, b = fresh("s"), fresh("s")
            sizes = g.const(fresh("sz"), [c // 2, c // 2], np.int64)
            g.nodes.append(helper.make_node("Split", [x, sizes], [a, b], name=fresh("split"), axis=1))
            pool.append((a, c // 2))
            pool.append((g.op("Relu", [b], fresh("u")), c // 2))
        else:
            d = g.op("Div", [x, g.const(fresh("k"), math.sqrt(2.0))], fresh("gd"))
            e = g.op("Erf", [d], fresh("ge"))
            a = g.op("Add", [e, g.const(fresh("k"), 1.0)], fresh("ga"))
            m = g.op("Mul", [x, a], fresh("gm"))
            pool.append((g.op("Mul", [m, g.const(fresh("k"), 0.5)], fresh("gelu")), c))
    outputs = {pool[-1][0]: (rows, pool[-1][1])}
    for t, c in pool[1:]:
        if r.random() < 0.15:
            outputs[t] = (rows, c)
    return g.model(outputs)
