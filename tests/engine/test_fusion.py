"""Fusion opportunities: exact DRAM bytes saved for every pattern, no fusion across a fan-out
or through a graph output (with the reason), disjoint greedy choice, patterns as data."""

from __future__ import annotations

import pytest

from benchmarks.models import bert_encoder, cnn
from engine import model_from_proto
from engine.costmodel import CostModel
from engine.fusion import PATTERNS, Fusion, Pattern, S, find_fusions
from engine.npu import load_profile
from tests.engine import npu_graphs as G


def only(report, pattern: str) -> Fusion:
    found = [f for f in report.fusions if f.pattern == pattern]
    assert len(found) == 1, (pattern, report.to_dict())
    return found[0]


# (builder, pattern, nodes, dram_bytes_saved at 1 byte/element): 2 x the internal tensors'
# elements listed in each builder's docstring
CASES = [
    (lambda: G.conv_bn_act("relu"), "conv_bn_act", ("c", "b", "y"), 2 * (256 + 256)),
    (lambda: G.conv_bn_act("clip"), "conv_bn_act", ("c", "b", "y"), 2 * (256 + 256)),
    (lambda: G.conv_bn_act("silu"), "conv_bn_act", ("c", "b", "s", "y"), 2 * (256 * 3)),
    (G.gemm_bias_relu, "gemm_bias_act", ("m", "a", "y"), 2 * (32 + 32)),
    (G.layernorm, "layernorm", ("mean", "center", "square", "var", "var_eps", "std", "norm", "scaled", "y"), 2 * 288),
    (G.gelu_erf, "gelu_erf", ("d", "e", "a", "m", "y"), 2 * 4 * 64),
    (lambda: G.gelu_erf(half_first=True), "gelu_erf", ("d", "e", "a", "h", "y"), 2 * 4 * 64),
    (lambda: G.layernorm(square="mul"), "layernorm",
     ("mean", "center", "square", "var", "var_eps", "std", "norm", "scaled", "y"), 2 * 288),
    (lambda: G.layernorm(affine=False), "layernorm", ("mean", "center", "square", "var", "var_eps", "std", "y"),
     2 * 160),
    (G.gelu_tanh, "gelu_tanh", ("p", "k", "i", "b", "t", "o", "h", "y"), 2 * 7 * 64),
    (lambda: G.gelu_tanh(cube="mul"), "gelu_tanh", ("q", "p", "k", "i", "b", "t", "o", "h", "y"), 2 * 8 * 64),
    (G.attention, "attention", ("s", "sd", "sm", "p", "y"), 2 * 4 * 32),
    (G.transpose_pair, "layout_cancel", ("t1", "t2"), 2 * (24 + 24)),
    (G.reshape_transpose_matmul, "layout_fold", ("r", "t"), 2 * (32 + 32)),
    (G.matmul_transposed_b, "layout_fold", ("kt",), 2 * 20),
    (G.matmul_head_merge, "layout_fold", ("t", "r"), 2 * (32 + 32)),
    (G.elementwise, "elementwise_chain", ("a", "m", "y"), 2 * (64 + 64)),
    (G.concat, "concat_placement", ("c",), 2 * 16),
    (G.split, "split_placement", ("split",), 2 * 16),
]


@pytest.mark.parametrize("build, pattern, nodes, saved", CASES, ids=[f"{c[1]}-{i}" for i, c in enumerate(CASES)])
def test_exact_dram_bytes_saved_for_every_pattern(build, pattern, nodes, saved) -> None:
    report = find_fusions(build(), G.FLOAT_CHIP)
    fusion = only(report, pattern)
    assert fusion.nodes == nodes
    assert fusion.dram_bytes_saved == saved
    assert fusion.est_ns_saved > 0


def test_every_pattern_is_covered_by_a_case() -> None:
    assert {p.name for p in PATTERNS} == {c[1] for c in CASES}


def test_saved_bytes_scale_with_the_deployed_element_size() -> None:
    model = G.gemm_bias_relu()
    assert only(find_fusions(model, G.FLOAT_CHIP, act_bytes=2), "gemm_bias_act").dram_bytes_saved == 2 * 2 * 64
    # a Concat removal saves the copy: reading its inputs and writing its output
    cm = CostModel(G.concat(), G.FLOAT_CHIP)
    assert only(find_fusions(G.concat(), G.FLOAT_CHIP), "concat_placement").dram_bytes_saved == 2 * cm.bytes["c"]


# (builder taking tap/as_output, pattern, internal tensor to tap)
FANOUT = [
    (lambda **k: G.conv_bn_act("relu", **k), "conv_bn_act", "b"),
    (lambda **k: G.conv_bn_act("silu", **k), "conv_bn_act", "s"),
    (G.gemm_bias_relu, "gemm_bias_act", "m"),
    (G.layernorm, "layernorm", "center"),
    (G.gelu_erf, "gelu_erf", "e"),
    (G.gelu_tanh, "gelu_tanh", "t"),
    (G.attention, "attention", "p"),
    (G.transpose_pair, "layout_cancel", "t1"),
    (G.reshape_transpose_matmul, "layout_fold", "t"),
    (G.elementwise, "elementwise_chain", "a"),
    (G.concat, "concat_placement", "a"),
]


def _producer_and_readers(model, tensor: str) -> set[str]:
    names = {n.name for n in model.graph.nodes if tensor in n.outputs}
    return names | {n.name for n in model.graph.nodes if tensor in n.inputs and n.name != "tap_reader"}


@pytest.mark.parametrize("as_output", [False, True], ids=["fan-out", "graph-output"])
@pytest.mark.parametrize("build, pattern, tensor", FANOUT, ids=[f[1] + "-" + f[2] for f in FANOUT])
def test_no_fusion_across_a_fan_out_or_a_graph_output(build, pattern, tensor, as_output) -> None:
    model = build(tap=tensor, as_output=as_output)
    report = find_fusions(model, G.FLOAT_CHIP)
    around = _producer_and_readers(model, tensor)
    for f in report.fusions:
        # the tensor would be an internal one: its producer and its reader in one fusion
        assert not (f.pattern == pattern and around <= set(f.nodes)), f
        assert not around <= set(f.nodes) or f.pattern in ("concat_placement", "split_placement"), f
    reasons = [r.reason for r in report.rejected if r.pattern == pattern and tensor in r.reason]
    assert reasons, report.to_dict()
    expected = "graph output" if as_output else "also read by tap_reader"
    assert any(expected in r for r in reasons), reasons


def test_split_output_that_is_a_graph_output_is_not_removed() -> None:
    report = find_fusions(G.split(as_output=True), G.FLOAT_CHIP)
    assert not [f for f in report.fusions if f.pattern == "split_placement"]
    assert any("s1" in r.reason and "graph output" in r.reason for r in report.rejected)


def test_a_fan_out_still_leaves_the_valid_part_fused() -> None:
    # b (BN output) also read elsewhere: Conv+BN still fuse, the Relu stays outside
    report = find_fusions(G.conv_bn_act("relu", tap="b"), G.FLOAT_CHIP)
    assert only(report, "conv_bn_act").nodes == ("c", "b")


@pytest.mark.parametrize(
    "model, pattern, words",
    [
        (lambda: G.gemm_bias_relu(bias_shape=(4, 8)), "gemm_bias_act", "not a per-column bias"),
        (lambda: G.layernorm(axis=1), "layernorm", "reduce different"),
        (lambda: G.gelu_erf(divisor=2.0), "gelu_erf", "not sqrt(2)"),
        (lambda: G.transpose_pair(perm2=(1, 0, 2)), "layout_cancel", "do not cancel"),
        (lambda: G.reshape_transpose_matmul(perm=(0, 1, 3, 2)), "layout_fold", "not be contiguous"),
        (lambda: G.concat(graph_input=True), "concat_placement", "graph input"),
    ],
    ids=["bias-shape", "layernorm-axes", "gelu-constant", "no-cancel", "strided-rows", "concat-graph-input"],
)
def test_failed_checks_are_rejected_with_their_reason(model, pattern, words) -> None:
    # without the generic element-wise chain, which may still fuse such nodes another way
    specific = [p for p in PATTERNS if p.name != "elementwise_chain"]
    report = find_fusions(model(), G.FLOAT_CHIP, patterns=specific)
    assert not [f for f in report.fusions if f.pattern == pattern]
    assert any(r.pattern == pattern and words in r.reason for r in report.rejected), report.to_dict()


def test_a_fusion_that_would_be_slower_is_rejected() -> None:
    # journey5 has no float unit: a fused attention would run its MatMuls on the host CPU
    model = model_from_proto(bert_encoder(layers=1))
    report = find_fusions(model, load_profile("journey5"))
    assert not [f for f in report.fusions if f.pattern == "attention"]
    assert any(r.pattern == "attention" and r.reason.startswith("not faster on journey5") for r in report.rejected)
    # with a float unit the same attention fuses
    assert [f for f in find_fusions(model, load_profile("xavier")).fusions if f.pattern == "attention"]


@pytest.mark.parametrize("build", [lambda: bert_encoder(layers=2), cnn])
def test_chosen_fusions_are_disjoint_and_save_time(build) -> None:
    model = model_from_proto(build())
    for profile in ("journey5", "xavier", "rpi3", "v100"):
        report = find_fusions(model, load_profile(profile))
        seen: set[str] = set()
        for f in report.fusions:
            assert seen.isdisjoint(f.nodes), f
            seen.update(f.nodes)
            assert f.est_ns_saved >= 0 and f.dram_bytes_saved > 0
        assert report.fusions


def test_bert_and_cnn_find_the_expected_patterns() -> None:
    bert = find_fusions(model_from_proto(bert_encoder(layers=2)), load_profile("xavier"))
    counts: dict[str, int] = {}
    for f in bert.fusions:
        counts[f.pattern] = counts.get(f.pattern, 0) + 1
    # per layer: q, k, v, output, ffn-in, ffn-out linears; one attention; one GELU;
    # q, k, v head splits and the head merge fold into the attention MatMuls
    assert counts == {"gemm_bias_act": 12, "attention": 2, "gelu_erf": 2, "layout_fold": 8}
    model = model_from_proto(cnn())
    net = find_fusions(model, load_profile("xavier"))
    convs = sum(n.op_type == "Conv" for n in model.graph.nodes)
    assert sum(f.pattern == "conv_bn_act" for f in net.fusions) == convs  # every Conv + its BN


def test_larger_fusion_wins_over_an_overlapping_smaller_one() -> None:
    # Add+Relu alone would be an element-wise chain; MatMul+Add+Relu is larger and wins
    report = find_fusions(G.gemm_bias_relu(), G.FLOAT_CHIP)
    assert [f.pattern for f in report.fusions] == ["gemm_bias_act"]


def test_to_dict_keys() -> None:
    report = find_fusions(G.gemm_bias_relu(bias_shape=(4, 8)), G.FLOAT_CHIP)
    assert set(report.fusions[0].to_dict()) == {"pattern", "nodes", "dram_bytes_saved", "est_ns_saved"}
    assert set(report.rejected[0].to_dict()) == {"pattern", "nodes", "reason"}


def test_patterns_are_validated_as_data() -> None:
    with pytest.raises(ValueError, match="wired to no earlier step"):
        Pattern("broken", "kernel", ((S("a", "Relu", "$x"), S("b", "Relu", "$y")),), "unwired")
    with pytest.raises(ValueError, match="unknown kind"):
        Pattern("broken", "fuse", ((S("a", "Relu", "$x"),),), "bad kind")
