"""The deployment picture of one model: quantization analysis plus the NPU cost model.

One function builds what ``inspector analyze --json``, the GUI's export and the PDF report
all write, so the three never disagree. Plain data in, a JSON-safe dict out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from engine.analysis import AnalysisResult, analysis_document
from engine.graph import Model
from engine.npu import NpuProfile
from engine.timeline import NpuReport, analyze as npu_analyze

# per-layer keys the cost model adds to each layer of the document
LAYER_COST_KEYS = ("est_ns", "bound", "macs", "dram_bytes", "intensity", "unit", "lane")


@dataclass(frozen=True)
class DeployedFormat:
    """Element sizes and float-kept op types of the deployed model, for the cost model."""

    act_bytes: int
    weight_bytes: int
    float_ops: frozenset[str] | None  # op types or node names; None: the cost model's defaults


def deployed_format(model: Model, result: AnalysisResult | None) -> DeployedFormat:
    """What the cost model should assume. With an analysis, the plan says it: activations of
    its dtype (int16 counts 2 bytes) and, as float ops, the nodes (by name) the int8
    executor ran on a float path. Without, int8 and the cost model's default float op types."""
    if result is None:
        return DeployedFormat(1, 1, None)
    plan = result.plan
    act_bytes = 2 if plan.scheme.activation_dtype == "int16" else 1
    weight_bytes = 2 if plan.scheme.weight_dtype == "int16" else 1
    float_ops = {layer.name for layer in result.layers if layer.path in ("float", "float_fallback")}
    return DeployedFormat(act_bytes, weight_bytes, frozenset(float_ops))


def npu_report_for(model: Model, profile: NpuProfile, result: AnalysisResult | None = None) -> NpuReport:
    """Roofline, fusions and timelines on ``profile`` for the model as the analysis deploys it."""
    fmt = deployed_format(model, result)
    return npu_analyze(model, profile, fmt.act_bytes, fmt.weight_bytes, fmt.float_ops)


def npu_sections(report: NpuReport) -> dict[str, Any]:
    """Top-level JSON sections of the cost model: ``fusions``, ``rejected_fusions``,
    ``timeline`` (profile, total_ns, total_ns_unfused, events) and ``timeline_unfused``."""
    profile = report.profile
    return {
        "profile": profile.to_dict(),
        "fusions": [f.to_dict() for f in report.fusions.fusions],
        "rejected_fusions": [r.to_dict() for r in report.fusions.rejected],
        "timeline": report.timeline.to_dict(),
        "timeline_unfused": report.timeline_unfused.to_dict(),
    }


def merge_layer_costs(layers: Iterable[dict[str, Any]], report: NpuReport) -> None:
    """Add ``est_ns``, ``bound``, ``macs``, ``dram_bytes``, ``intensity``, ``unit`` (and
    ``lane``) of the unfused estimate to each layer dict, matched by node name."""
    by_name = {est.name: est.to_dict() for est in report.layers}
    for layer in layers:
        est = by_name.get(layer["name"])
        for key in LAYER_COST_KEYS:
            layer[key] = None if est is None else est.get(key)


def deployment_document(model: Model, result: AnalysisResult | None, report: NpuReport | None) -> dict[str, Any]:
    """The full JSON document: the analysis (or the layer list with ``result`` None) plus,
    when ``report`` is given, per-layer cost keys and the fusion and timeline sections."""
    doc = analysis_document(result, model=model)
    if report is not None:
        merge_layer_costs(doc["layers"], report)
        doc.update(npu_sections(report))
    return doc
