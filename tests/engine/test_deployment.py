"""engine.deployment: the cost model follows the quantization plan."""

from __future__ import annotations

import numpy as np

from engine import load_model
from engine.analysis import AnalysisConfig, run_analysis
from engine.calibrate import data_spec
from engine.deployment import deployed_format, deployment_document, npu_report_for
from engine.npu import load_profile
from engine.quant.qparams import QuantScheme
from engine.samples import get_sample


def test_float_fallback_ops_become_float_ops_of_the_cost_model() -> None:
    sample = get_sample("vit-digits")
    model = load_model(sample.model, dims={"batch": 1})
    calib = data_spec(str(sample.calib), limit=8)
    fallback = run_analysis(model, calib, None, None, "labels", AnalysisConfig(scheme=QuantScheme(), integer_ops=[]))
    integer = run_analysis(
        model, calib, None, None, "labels",
        AnalysisConfig(scheme=QuantScheme(), integer_ops=["softmax", "gelu", "layernorm", "sigmoid"]),
    )
    fmt_fb = deployed_format(model, fallback)
    fmt_int = deployed_format(model, integer)
    softmaxes = {n.name for n in model.graph.nodes if n.op_type == "Softmax"}
    adds = {n.name for n in model.graph.nodes if n.op_type == "Add"}
    assert softmaxes <= fmt_fb.float_ops
    assert not softmaxes & fmt_int.float_ops
    # per node, not per op type: integer Adds stay integer even when some other node falls back
    assert adds - fmt_fb.float_ops
    profile = load_profile("journey5")  # pure int8: float ops go to the host
    fb = npu_report_for(model, profile, fallback)
    it = npu_report_for(model, profile, integer)
    lanes_fb = {e.name: e.lane for e in fb.layers}
    softmax = next(n.name for n in model.graph.nodes if n.op_type == "Softmax")
    assert lanes_fb[softmax] == "host"
    assert {e.name: e.lane for e in it.layers}[softmax] != "host"
    # a host round trip per float op: the all-integer deployment is faster on a pure int8 chip
    assert it.timeline_unfused.total_ns < fb.timeline_unfused.total_ns
    doc = deployment_document(model, integer, it)
    assert doc["timeline"]["total_ns"] == it.timeline.total_ns
    assert all(np.isfinite(l["est_ns"]) for l in doc["layers"] if l["est_ns"] is not None)


def test_without_analysis_int8_and_default_float_ops() -> None:
    model = load_model(get_sample("cnn-digits").model, dims={"batch": 1})
    fmt = deployed_format(model, None)
    assert (fmt.act_bytes, fmt.weight_bytes, fmt.float_ops) == (1, 1, None)
