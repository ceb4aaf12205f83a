"""Deployment gates (engine.gates): thresholds, TOML loading, evaluation on a document, JUnit XML."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelError
from engine.gates import (
    GateReport,
    GateResult,
    Thresholds,
    check_model,
    evaluate_gates,
    load_thresholds,
)
from engine.loader import model_from_proto
from tests.builders import matmul_relu

ROOT = Path(__file__).resolve().parents[2]


def _doc(**over) -> dict:
    """A hand-made deployment document with the keys the gates read."""
    doc = {
        "model": "/models/net.onnx",
        "calibration": {"synthetic": False},
        "evaluation": {"synthetic": False},
        "layers": [
            {"name": "conv1", "op_type": "Conv", "sqnr_db_isolated": 38.0, "lane": "mac"},
            {"name": "gelu", "op_type": "Erf", "sqnr_db_isolated": 21.5, "lane": "float"},
            {"name": "inner", "op_type": "Mul", "sqnr_db_isolated": None, "lane": "vector"},
            {"name": "softmax", "op_type": "Softmax", "sqnr_db_isolated": 300.0, "lane": "host"},
            {"name": "fc", "op_type": "Gemm", "sqnr_db_isolated": 33.0, "lane": "mac"},
        ],
        "outputs": [
            {"name": "logits", "cosine": 0.9990, "sqnr_db": 27.0, "accuracy_float": 0.9806,
             "accuracy_int8": 0.9750, "labelled_samples": 360},
            {"name": "aux", "cosine": 0.9950, "sqnr_db": 31.0, "accuracy_float": None,
             "accuracy_int8": None, "labelled_samples": 0},
        ],
        "profile": {"name": "journey5"},
        "timeline": {"total_ns": 1_250_000.0, "total_ns_unfused": 2_000_000.0},
    }
    doc.update(over)
    return doc


def _by_name(report: GateReport) -> dict[str, GateResult]:
    return {r.name: r for r in report.results}


# ---------------------------------------------------------------- thresholds


def test_thresholds_validate_values() -> None:
    assert Thresholds(max_float_ops=3.0).max_float_ops == 3 and isinstance(Thresholds(max_float_ops=3.0).max_float_ops, int)
    for kwargs, needle in [
        ({"min_cosine": 1.5}, "[-1, 1]"),
        ({"min_sqnr_db": math.nan}, "finite"),
        ({"max_latency_ms": -1.0}, "at least 0"),
        ({"max_float_ops": -1}, "at least 0"),
        ({"max_float_ops": 2.5}, "whole number"),
        ({"min_sqnr_db": True}, "number"),
        ({"max_accuracy_drop": "1"}, "number"),
    ]:
        with pytest.raises(ValueError, match=None) as info:
            Thresholds(**kwargs)
        assert needle in str(info.value) and next(iter(kwargs)) in str(info.value)


def test_merged_overrides_only_given_values() -> None:
    base = Thresholds(min_cosine=0.99, max_float_ops=0)
    merged = base.merged(Thresholds(min_cosine=0.5, max_latency_ms=2.0))
    assert merged.given() == {"min_cosine": 0.5, "max_latency_ms": 2.0, "max_float_ops": 0}
    assert list(merged.given()) == ["min_cosine", "max_latency_ms", "max_float_ops"]  # report order
    assert Thresholds(max_latency_ms=1).needs_quantization is False
    assert Thresholds(min_layer_sqnr_db=20).needs_quantization is True


def test_load_thresholds_from_toml(tmp_path) -> None:
    path = tmp_path / "gate.toml"
    path.write_text("# team gate\nmin_cosine = 0.99\nmin_sqnr_db = 20\nmax_float_ops = 0\n")
    t = load_thresholds(path)
    assert t.given() == {"min_cosine": 0.99, "min_sqnr_db": 20.0, "max_float_ops": 0}
    assert load_thresholds(ROOT / "docs" / "examples" / "gate.toml").given().keys() == set(Thresholds.names())


@pytest.mark.parametrize(
    "text, needles",
    [
        ("min_cosine = 0.99\nmin_cosin = 0.9\n", ["unknown key 'min_cosin'", "known: min_cosine"]),
        ("min_sqnr_db = 'high'\n", ["min_sqnr_db", "expected a number"]),
        ("max_float_ops = 1.0\n", ["max_float_ops", "integer"]),
        ("min_cosine = 2.0\n", ["min_cosine", "[-1, 1]"]),
        ("[gates]\nmin_cosine = 0.9\n", ["unknown key 'gates'"]),
        ("min_cosine = = 1\n", ["not valid TOML"]),
        ("min_sqnr_db = nan\n", ["finite"]),
    ],
    ids=["unknown-key", "string", "float-count", "range", "table", "syntax", "nan"],
)
def test_load_thresholds_rejects_bad_files_in_one_line(tmp_path, text, needles) -> None:
    path = tmp_path / "gate.toml"
    path.write_text(text)
    with pytest.raises(ModelError) as info:
        load_thresholds(path)
    message = str(info.value)
    assert "\n" not in message and str(path) in message
    for n in needles:
        assert n in message, (n, message)


def test_load_thresholds_missing_and_binary(tmp_path) -> None:
    with pytest.raises(ModelError, match="no such file"):
        load_thresholds(tmp_path / "nope.toml")
    binary = tmp_path / "b.toml"
    binary.write_bytes(b"\xff\xfe\x00min")
    with pytest.raises(ModelError, match="UTF-8"):
        load_thresholds(binary)


# ---------------------------------------------------------------- evaluation


def test_every_gate_measures_the_documented_quantity() -> None:
    t = Thresholds(min_cosine=0.996, min_sqnr_db=25.0, max_accuracy_drop=0.5, max_latency_ms=1.0,
                   min_layer_sqnr_db=30.0, max_float_ops=2)
    r = _by_name(evaluate_gates(_doc(), t))
    assert list(r) == list(Thresholds.names())
    # worst output cosine (aux), passes-or-fails by >=
    assert r["min_cosine"].measured == pytest.approx(0.995) and not r["min_cosine"].passed
    assert "aux" in r["min_cosine"].detail
    assert r["min_sqnr_db"].measured == 27.0 and r["min_sqnr_db"].passed and "logits" in r["min_sqnr_db"].detail
    # percentage points: 98.06% - 97.50% = 0.56 pp
    assert r["max_accuracy_drop"].measured == pytest.approx(0.56) and not r["max_accuracy_drop"].passed
    assert r["max_accuracy_drop"].unit == "pp"
    # fused timeline total, ns -> ms
    assert r["max_latency_ms"].measured == pytest.approx(1.25) and not r["max_latency_ms"].passed
    assert "journey5" in r["max_latency_ms"].detail
    # isolated per-layer SQNR: the Erf layer at 21.5 dB breaks the 30 dB budget; None layers skipped
    assert r["min_layer_sqnr_db"].measured == 21.5 and not r["min_layer_sqnr_db"].passed
    assert "gelu" in r["min_layer_sqnr_db"].detail and "1 of 4 rated layers" in r["min_layer_sqnr_db"].detail
    assert r["min_layer_sqnr_db"].detail.endswith("below the budget: gelu 21.5 dB")  # the layers below are named
    # float + host lanes: Erf and Softmax
    assert r["max_float_ops"].measured == 2 and r["max_float_ops"].passed
    assert "Erf" in r["max_float_ops"].detail and "Softmax" in r["max_float_ops"].detail


def test_boundaries_are_inclusive() -> None:
    t = Thresholds(min_sqnr_db=27.0, max_latency_ms=1.25, max_float_ops=2, min_layer_sqnr_db=21.5)
    report = evaluate_gates(_doc(), t)
    assert report.passed and all(r.passed for r in report.results)
    t = Thresholds(max_float_ops=1)
    assert not evaluate_gates(_doc(), t).passed


def test_unmeasured_gates_fail_and_say_why() -> None:
    doc = _doc(outputs=[{"name": "y", "cosine": None, "sqnr_db": 20.0, "accuracy_float": None, "accuracy_int8": None}])
    del doc["timeline"]
    for layer in doc["layers"]:
        del layer["lane"]
    t = Thresholds(min_cosine=0.5, max_accuracy_drop=100.0, max_latency_ms=1e9, max_float_ops=1000)
    r = _by_name(evaluate_gates(doc, t))
    assert all(not x.passed and x.measured is None for x in r.values())
    assert "undefined" in r["min_cosine"].detail
    assert "--labels" in r["max_accuracy_drop"].detail
    assert "no NPU estimate" in r["max_latency_ms"].detail and "no NPU estimate" in r["max_float_ops"].detail
    assert "not measured" in r["min_cosine"].line()
    # no quantization analysis at all (--no-quant document)
    noquant = _doc(outputs=[], layers=[{"name": "a", "op_type": "Conv", "lane": "mac"}])
    r = _by_name(evaluate_gates(noquant, Thresholds(min_sqnr_db=1.0, min_layer_sqnr_db=1.0, max_float_ops=0)))
    assert not r["min_sqnr_db"].passed and "no quantization analysis" in r["min_sqnr_db"].detail
    assert not r["min_layer_sqnr_db"].passed
    assert r["max_float_ops"].passed and r["max_float_ops"].measured == 0


def test_lines_report_and_serialisations() -> None:
    report = evaluate_gates(_doc(calibration={"synthetic": True}), Thresholds(min_cosine=0.99, min_layer_sqnr_db=30.0))
    ok, bad = report.results
    assert ok.line().startswith("PASS  min_cosine") and ">= 0.99" in ok.line() and "0.995000" in ok.line()
    assert bad.line().startswith("FAIL  min_layer_sqnr_db") and "21.50 dB < 30 dB" in bad.line()
    assert report.summary() == "check: FAILED (1 of 2 gates: min_layer_sqnr_db)"
    assert any("SYNTHETIC" in n for n in report.notes)
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert d["passed"] is False and [x["name"] for x in d["results"]] == ["min_cosine", "min_layer_sqnr_db"]
    # more digits when the display precision would print the value equal to the missed threshold
    close = GateResult("min_sqnr_db", 29.996, 30.0, False, "dB")
    assert "29.996 dB < 30 dB" in close.line()
    assert not GateReport("m", []).passed  # nothing checked is not a pass


def test_junit_xml_has_one_case_per_gate() -> None:
    doc = _doc(model="/models/ne\x01t.onnx")  # a control character XML 1.0 cannot hold
    report = evaluate_gates(doc, Thresholds(min_cosine=0.9, min_sqnr_db=40.0, max_float_ops=5))
    root = ET.fromstring(report.to_junit_xml())
    assert root.tag == "testsuites" and root.get("tests") == "3" and root.get("failures") == "1"
    (suite,) = root.findall("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["min_cosine", "min_sqnr_db", "max_float_ops"]
    failed = [c for c in cases if c.find("failure") is not None]
    assert [c.get("name") for c in failed] == ["min_sqnr_db"]
    assert "27.00 dB < 40 dB" in failed[0].find("failure").get("message")
    assert all(c.get("classname").startswith("inspector.check.") for c in cases)


# ---------------------------------------------------------------- on a real analysis


def test_check_model_agrees_with_the_document() -> None:
    model = model_from_proto(matmul_relu(batch=4, k=16, n=8))
    t = Thresholds(min_cosine=0.9, min_sqnr_db=10.0, max_latency_ms=10.0, min_layer_sqnr_db=10.0, max_float_ops=0)
    from engine.analysis import AnalysisConfig
    from engine.calibrate import data_spec

    report, doc = check_model(model, t, calib=data_spec(None, limit=8), config=AnalysisConfig(batch=4))
    r = _by_name(report)
    (out,) = doc["outputs"]
    assert r["min_cosine"].measured == out["cosine"] and r["min_sqnr_db"].measured == out["sqnr_db"]
    rated = [l["sqnr_db_isolated"] for l in doc["layers"] if l["sqnr_db_isolated"] is not None]
    assert r["min_layer_sqnr_db"].measured == min(rated)
    assert r["max_latency_ms"].measured == pytest.approx(doc["timeline"]["total_ns"] / 1e6, rel=1e-12)
    assert r["max_float_ops"].measured == sum(l["lane"] in ("float", "host") for l in doc["layers"])
    # a MatMul + bias + ReLU in int8 keeps its output direction: cosine > 0.99 on 8 samples
    assert out["cosine"] > 0.99 and r["min_cosine"].passed
    assert report.profile == "journey5" and any("SYNTHETIC" in n for n in report.notes)


def test_check_model_cost_only() -> None:
    model = model_from_proto(matmul_relu(batch=1, k=16, n=8))
    report, doc = check_model(model, Thresholds(max_latency_ms=1e6, min_cosine=0.5), quantize=False)
    r = _by_name(report)
    assert r["max_latency_ms"].passed and r["max_latency_ms"].measured > 0
    assert not r["min_cosine"].passed and r["min_cosine"].measured is None
    assert doc["quantization"] is None and np.isfinite(doc["timeline"]["total_ns"])
