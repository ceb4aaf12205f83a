"""Findings: computed from the analysis, with re-evaluated alternatives."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine import load_model
from engine.analysis import AnalysisConfig, ErrorSummary, LayerResult, run_analysis
from engine.calibrate import CalibrationStats, DataSpec, data_spec
from engine.findings import _bias_findings, outlier_channels
from engine.quant.observers import HistogramObserver, PerChannelMinMaxObserver
from engine.quant.qparams import QuantScheme
from tests.builders import IR_VERSION, save

OUTLIERS = [3, 17, 25]


def outlier_model(tmp_path, factor: float = 40.0):
    """x -> fc1 -> h -> fc2 -> Relu -> fc3 -> y, with channels OUTLIERS of ``h`` scaled up by
    ``factor`` (fc1's weight columns) and scaled back down in fc2's weight rows: the same
    function, but ``h`` has a few huge channels, as LLM activations do."""
    rng = np.random.default_rng(0)
    w1 = (rng.standard_normal((16, 32)) / 4).astype(np.float32)
    w2 = (rng.standard_normal((32, 16)) / 6).astype(np.float32)
    w3 = (rng.standard_normal((16, 10)) / 4).astype(np.float32)
    w1[:, OUTLIERS] *= factor
    w2[OUTLIERS, :] /= factor
    inits = [numpy_helper.from_array(a, n) for a, n in ((w1, "W1"), (w2, "W2"), (w3, "W3"))]
    nodes = [
        helper.make_node("MatMul", ["x", "W1"], ["h"], name="fc1"),
        helper.make_node("MatMul", ["h", "W2"], ["h2"], name="fc2"),
        helper.make_node("Relu", ["h2"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "W3"], ["y"], name="fc3"),
    ]
    g = helper.make_graph(
        nodes,
        "outliers",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    onnx.checker.check_model(m)
    return load_model(save(m, tmp_path / "outliers.onnx"))


def test_outlier_layer_is_worst_and_named(tmp_path) -> None:
    model = outlier_model(tmp_path)
    result = run_analysis(model, DataSpec("synthetic", samples=64))
    worst = result.worst_isolated(1)[0]
    assert worst.name == "fc2"
    others = [l.isolated.sqnr_db for l in result.layers if l.name != "fc2"]
    assert worst.isolated.sqnr_db < min(others) - 10  # clearly the worst, not by a hair
    found = [f for f in result.findings if f.kind == "outlier_channels"]
    assert len(found) == 1
    f = found[0]
    assert f.tensor == "h" and f.node == "fc2"
    assert sorted(f.numbers["channels"]) == OUTLIERS and f.numbers["axis"] == 1
    assert all(str(c) in f.text for c in OUTLIERS)
    # log2(40 x typical / typical) ~ 4-5 bits
    assert 3.5 < f.numbers["wasted_bits"] < 6.5
    # the recovered dB are measured by re-running fc2, not canned: per-channel helps a lot
    assert f.numbers["per_channel_gain_db"] > 6.0
    assert f.numbers["per_channel_base_sqnr_db"] == pytest.approx(worst.isolated.sqnr_db, abs=3.0)
    assert f"{f.numbers['per_channel_gain_db']:+.1f} dB" in f.text
    assert f.severity == "high"
    # the accumulated error jumps at fc2 too
    jumps = [f for f in result.findings if f.kind == "error_enters"]
    assert jumps and jumps[0].node == "fc2" and jumps[0].numbers["drop_db"] > 6.0


def test_no_outliers_without_them(tmp_path) -> None:
    model = outlier_model(tmp_path, factor=1.0)
    result = run_analysis(model, DataSpec("synthetic", samples=64))
    assert not [f for f in result.findings if f.kind == "outlier_channels"]
    assert min(l.isolated.sqnr_db for l in result.layers) > 25.0


def test_outlier_channels_from_statistics() -> None:
    stats = CalibrationStats()
    x = np.random.default_rng(0).standard_normal((200, 64)).astype(np.float32)
    x[:, [5, 40]] *= 30.0
    stats.tensors["t"] = HistogramObserver()
    stats.tensors["t"].update(x)
    stats.channels["t"] = PerChannelMinMaxObserver(1)
    stats.channels["t"].update(x)
    stats.channel_axes["t"] = 1
    info = outlier_channels(stats, "t")
    assert info is not None and sorted(info.channels) == [5, 40]
    amax = np.abs(x).max(axis=0)
    assert info.amax == pytest.approx(float(amax.max()))
    assert info.rest_amax == pytest.approx(float(np.delete(amax, [5, 40]).max()))
    assert info.wasted_bits == pytest.approx(math.log2(info.amax / info.rest_amax))
    # a tensor whose channels merely differ a little has none
    y = np.random.default_rng(1).standard_normal((200, 64)).astype(np.float32) * np.linspace(1, 3, 64, dtype=np.float32)
    stats.tensors["u"] = HistogramObserver()
    stats.tensors["u"].update(y)
    stats.channels["u"] = PerChannelMinMaxObserver(1)
    stats.channels["u"].update(y)
    stats.channel_axes["u"] = 1
    assert outlier_channels(stats, "u") is None


def test_clipping_finding_measures_the_full_range(tmp_path) -> None:
    model = outlier_model(tmp_path, factor=1.0)
    x = np.random.default_rng(5).standard_normal((64, 16)).astype(np.float32)
    x *= np.random.default_rng(6).standard_t(2, size=(64, 1)).astype(np.float32)  # heavy-tailed samples
    np.savez(tmp_path / "c.npz", x=x)
    scheme = QuantScheme(method="percentile", percentile=99.0)
    result = run_analysis(model, data_spec(str(tmp_path / "c.npz")), config=AnalysisConfig(scheme=scheme))
    clips = [f for f in result.findings if f.kind == "clipping"]
    assert clips
    f = clips[0]
    layer = result.layer(f.node)
    assert f.numbers["clip_fraction"] == pytest.approx(
        max(layer.accumulated.clip_fraction, layer.isolated.clip_fraction, layer.outside_fraction)
    )
    assert f.numbers["clip_fraction"] >= 1e-3
    assert "minmax_sqnr_db" in f.numbers and "gain_db" in f.numbers
    assert f"{f.numbers['gain_db']:+.1f} dB" in f.text


def _summary(mean: float, std: float, sqnr: float) -> ErrorSummary:
    return ErrorSummary(1000, 0, 0.999, sqnr, mean**2 + std**2, 1.0, mean, std, 0.0, 0.0, 0.0, mean / 0.1, std / 0.1, None, 0, 0)


def test_bias_finding_gain_is_computed() -> None:
    class Result:
        layers = [
            LayerResult("biased", "Conv", ["a"], "integer", None, None, _summary(0.4, 0.3, 20.0)),
            LayerResult("fine", "Conv", ["b"], "integer", None, None, _summary(0.01, 0.3, 20.0)),
        ]

    found = _bias_findings(Result())  # type: ignore[arg-type]
    assert [f.node for f in found] == ["biased"]
    share = 0.16 / 0.25
    assert found[0].numbers["bias_share"] == pytest.approx(share)
    assert found[0].numbers["gain_db"] == pytest.approx(-10 * math.log10(1 - share))
    assert "+4 steps" in found[0].text and "64%" in found[0].text


def _clip_summary(clip: float) -> ErrorSummary:
    return ErrorSummary(1000, 0, 0.999, 30.0, 1e-4, 0.1, 0.0, 0.01, 0.0, 0.0, clip, 0.0, 0.1, None, 0, 0)


@pytest.mark.parametrize("outside", [0.0, 0.004, None])
def test_clipping_finding_names_the_cause_it_saw(outside) -> None:
    """Float values inside the range but int8 values saturated: the int8 model's own error
    (accumulated here) carried them over, not data beyond calibration; with float values
    outside the range that is the cause named; unknown: neither claim."""
    from engine.findings import _clip_findings
    from engine.int8.plan import QuantPlan
    from engine.quant.qparams import qparams_from_range

    class Result:
        layers = [LayerResult("gemm", "Gemm", ["logits"], "integer", None, _clip_summary(0.0016), _clip_summary(0.0), outside_fraction=outside)]

    plan = QuantPlan(QuantScheme(), activations={"logits": qparams_from_range(-4.7, 4.7, "int8", True)})
    found = _clip_findings(None, plan, Result(), CalibrationStats(), None)  # type: ignore[arg-type]
    assert len(found) == 1
    f = found[0]
    drift = "the int8 model's own error carries them over it" in f.text
    assert drift == (outside == 0.0)
    assert f.numbers["accumulated_fraction"] == pytest.approx(0.0016)
    assert ("outside_fraction" in f.numbers) == (outside is not None)
    assert f.numbers["clip_fraction"] == pytest.approx(max(0.0016, outside or 0.0))


def _softmax_model(tmp_path):
    rng = np.random.default_rng(3)
    w = numpy_helper.from_array((rng.standard_normal((16, 12)) / 2).astype(np.float32), "W")
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["h"], name="fc"),
        helper.make_node("Softmax", ["h"], ["y"], name="softmax", axis=-1),
    ]
    g = helper.make_graph(
        nodes,
        "sm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 12])],
        [w],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    return load_model(save(m, tmp_path / "sm.onnx"))


def test_float_fallback_finding_compares_the_integer_kernel(tmp_path) -> None:
    model = _softmax_model(tmp_path)
    result = run_analysis(model, DataSpec("synthetic", samples=32), config=AnalysisConfig(integer_ops=[]))
    assert result.layer("softmax").path == "float_fallback"
    found = [f for f in result.findings if f.kind == "float_fallback"]
    assert [f.node for f in found] == ["softmax"]
    f = found[0]
    assert f.severity == "medium"
    assert f.numbers["base_sqnr_db"] == pytest.approx(result.layer("softmax").isolated.sqnr_db, abs=1.0)
    assert math.isfinite(f.numbers["integer_sqnr_db"])
    # and the integer run itself agrees with what the finding measured
    integer = run_analysis(model, DataSpec("synthetic", samples=32), config=AnalysisConfig(integer_ops=["softmax"]))
    assert integer.layer("softmax").path == "integer"
    assert integer.layer("softmax").isolated.sqnr_db == pytest.approx(f.numbers["integer_sqnr_db"], abs=1.0)
    kept = run_analysis(model, DataSpec("synthetic", samples=8), config=AnalysisConfig(float_ops=["Softmax"]))
    low = [f for f in kept.findings if f.kind == "float_fallback"]
    assert low and low[0].severity == "low" and "kept in float" in low[0].text
