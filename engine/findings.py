"""Plain-language findings per layer, computed from the analysis (never canned).

Each finding names a node, a severity (``high``, ``medium``, ``low``), a sentence, and the
numbers behind it. Where a finding proposes a fix (per-channel scales, a smaller or larger
clipping range, the integer kernel), the gain in dB is MEASURED: the layer is re-run with
the alternative parameters by the int8 executor's ``run_node`` on cached float inputs
(:class:`engine.analysis.LayerProbe`) and its isolated SQNR compared with the plan's on the
same samples. SQNR is in dB, higher is better.

Kinds:

- ``outlier_channels``: a few channels of an activation reach far beyond the rest
  (channel max above ``OUTLIER_RATIO`` x the median channel max, at most
  ``MAX_OUTLIER_SHARE`` of the channels), so one per-tensor scale wastes
  ``log2(max / max of the other channels)`` bits on everything else;
- ``clipping``: at least ``CLIP_FRACTION`` of a layer's output values saturate (as the
  executor counted them, or as float values beyond the output's range);
- ``bias``: the isolated error's mean carries at least ``BIAS_SHARE`` of its energy
  (``mean**2 / (mean**2 + std**2)``): removing it would gain ``-10 log10(1 - share)`` dB;
- ``error_enters``: the accumulated SQNR falls by at least ``JUMP_DB`` from the node's
  inputs to its output (at most ``MAX_JUMPS`` reported, largest first);
- ``float_fallback``: a node that the int8 model runs in float (fallback or kept float).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np

from engine.calibrate import NONLINEAR_OPS, CalibrationStats
from engine.errors import ModelError
from engine.graph import Model
from engine.int8.executor import UNIT_NAMES
from engine.int8.plan import PASSTHROUGH_OPS, QuantPlan, same_params
from engine.quant.qparams import QParams, qparams_from_range
from engine.quant.ranges import percentile_range

if TYPE_CHECKING:
    from engine.analysis import AnalysisResult, LayerProbe

OUTLIER_RATIO = 6.0
"""A channel is an outlier when its max |x| exceeds this multiple of the median channel's."""
MAX_OUTLIER_SHARE = 0.1
"""At most this fraction of the channels may be outliers (else the tensor is just wide)."""
MIN_CHANNELS = 8
"""Tensors with fewer channels are not searched for outlier channels."""
MIN_WASTED_BITS = 1.5
"""Outlier channels are reported when they cost at least this many bits of resolution."""
CLIP_FRACTION = 1e-3
"""Clipping is reported from this fraction of saturated output values on."""
BIAS_SHARE = 0.2
"""A bias is reported when the error mean carries at least this share of the error energy."""
BIAS_MAX_SQNR_DB = 50.0
"""Layers quantized better than this (isolated SQNR) are not reported for bias."""
JUMP_DB = 6.0
"""An accumulated-SQNR drop of at least this many dB at one node is reported."""
MAX_JUMPS = 5
"""At most this many ``error_enters`` findings (largest drops)."""

SEVERITY_ORDER = {"high": 0, "medium": 1, "low": 2}


@dataclass
class Finding:
    """One finding: ``numbers`` holds every figure the text quotes (JSON-safe)."""

    node: str
    kind: str
    severity: str
    text: str
    numbers: dict[str, Any] = field(default_factory=dict)
    tensor: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "node": self.node,
            "kind": self.kind,
            "severity": self.severity,
            "tensor": self.tensor,
            "text": self.text,
            "numbers": _json(self.numbers),
        }


def _json(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        v = float(value)
        return None if math.isnan(v) else (math.copysign(300.0, v) if math.isinf(v) else v)
    return value


def _db(x: float) -> str:
    if math.isinf(x):
        return ">300 dB" if x > 0 else "-inf dB"
    return f"{x:.1f} dB"


# ----------------------------------------------------------------- outliers


@dataclass
class OutlierInfo:
    """Outlier channels of one activation (channel indices along ``axis``, largest first)."""

    tensor: str
    axis: int
    channels: list[int]
    channel_count: int
    amax: float
    rest_amax: float
    p99_abs: float
    wasted_bits: float
    lo_rest: float
    hi_rest: float
    ch_min: np.ndarray
    ch_max: np.ndarray


def outlier_channels(stats: CalibrationStats, name: str) -> OutlierInfo | None:
    """The outlier channels of activation ``name`` from its per-channel min/max, or None."""
    ch = stats.channels.get(name)
    obs = stats.tensors.get(name)
    if ch is None or ch.min is None or ch.max is None or obs is None or obs.count < 2:
        return None
    lo = np.where(np.isfinite(ch.min), ch.min, 0.0)
    hi = np.where(np.isfinite(ch.max), ch.max, 0.0)
    amax = np.maximum(np.abs(lo), np.abs(hi))
    count = amax.size
    if count < MIN_CHANNELS:
        return None
    median = float(np.median(amax))
    if not median > 0.0:
        return None
    idx = np.flatnonzero(amax > OUTLIER_RATIO * median)
    if idx.size == 0 or idx.size > max(1, int(MAX_OUTLIER_SHARE * count)):
        return None
    rest = np.ones(count, dtype=bool)
    rest[idx] = False
    rest_amax = float(amax[rest].max())
    top = float(amax.max())
    if not rest_amax > 0.0:
        return None
    wasted = math.log2(top / rest_amax)
    if wasted < MIN_WASTED_BITS:
        return None
    order = idx[np.argsort(-amax[idx], kind="stable")]
    p99 = percentile_range(obs, 99.0, symmetric=True)[1]
    return OutlierInfo(
        name,
        stats.channel_axes[name],
        [int(c) for c in order],
        count,
        top,
        rest_amax,
        float(p99),
        wasted,
        float(lo[rest].min()),
        float(hi[rest].max()),
        lo,
        hi,
    )


def _with_activation(plan: QuantPlan, name: str, qp: QParams, model: Model | None = None) -> QuantPlan:
    """``plan`` with activation ``name`` given ``qp``. When a pass-through op writes ``name``
    from a constant that shares its parameters (a class token read by Expand), the constant
    gets ``qp`` too, so the op stays a pass-through."""
    acts = dict(plan.activations)
    old = acts.get(name)
    acts[name] = qp
    weights = plan.weights
    if model is not None and old is not None:
        producer = model.graph.producers().get(name)
        if producer is not None and producer.op_type in PASSTHROUGH_OPS and producer.inputs:
            data = producer.inputs[0]
            if data in weights and same_params(weights[data], old):
                weights = dict(weights)
                weights[data] = qp
    return replace(plan, activations=acts, weights=weights, paths=dict(plan.paths))


def _with_path(plan: QuantPlan, node: str, path: str) -> QuantPlan:
    paths = dict(plan.paths)
    paths[node] = path  # type: ignore[assignment]
    return replace(plan, paths=paths)


def _like(qp: QParams, lo: Any, hi: Any, plan: QuantPlan, axis: int | None = None) -> QParams:
    """QParams of the same dtype and symmetry as ``qp`` for another range (per channel along
    ``axis`` when ``lo``/``hi`` are arrays)."""
    zp = np.asarray(qp.zero_point).reshape(-1)
    if qp.qmin < 0:
        symmetric = bool(np.all(zp == 0))
    else:
        symmetric = plan.scheme.symmetric and bool(np.all(zp == (qp.qmax + 1) // 2))
    return qparams_from_range(lo, hi, qp.dtype, symmetric, plan.scheme.power_of_two, axis)


def qparams_range(qp: QParams) -> tuple[float, float] | None:
    """The float interval per-tensor QParams represent, ``[(qmin - zp) s, (qmax - zp) s]``."""
    if qp.per_channel:
        return None
    scale = float(np.asarray(qp.scale))
    zp = int(np.asarray(qp.zero_point))
    return (qp.qmin - zp) * scale, (qp.qmax - zp) * scale


def _sqnr(probe: "LayerProbe", node: str, plan: QuantPlan | None = None) -> float | None:
    """Isolated SQNR (dB) of ``node`` on the probe's samples, None when it cannot be run."""
    if not probe.has(node):
        return None
    try:
        acc = probe.evaluate(node, plan)
    except ModelError:
        return None
    value = acc.sqnr_db
    return None if math.isnan(value) else value


def _affected_nodes(model: Model, tensor: str) -> list[str]:
    """The node writing ``tensor`` and the nodes reading it."""
    graph = model.graph
    names: list[str] = []
    producer = graph.producers().get(tensor)
    if producer is not None:
        names.append(producer.name)
    names.extend(n.name for n in graph.consumers().get(tensor, []))
    return list(dict.fromkeys(names))


# ------------------------------------------------------------------ candidates


def _outlier_tensors(plan: QuantPlan, stats: CalibrationStats) -> list[OutlierInfo]:
    found = []
    for name in stats.order:
        qp = plan.activations.get(name)
        if qp is None or qp.per_channel:
            continue
        info = outlier_channels(stats, name)
        if info is not None:
            found.append(info)
    return found


def _clipped_layers(result: "AnalysisResult") -> list[tuple[str, str, float]]:
    """(node, output tensor, clip fraction) of layers that clip at least CLIP_FRACTION."""
    out = []
    for layer in result.layers:
        fractions = list(_clip_fractions(layer).values())
        if fractions and max(fractions) >= CLIP_FRACTION and layer.outputs:
            out.append((layer.name, layer.outputs[0], max(fractions)))
    return out


def _clip_fractions(layer: Any) -> dict[str, float]:
    """The layer's saturated fractions that are known: ``outside`` (float values beyond the
    range), ``isolated`` and ``accumulated`` (values the int8 executor saturated)."""
    found = {"outside": layer.outside_fraction}
    for key, s in (("isolated", layer.isolated), ("accumulated", layer.accumulated)):
        found[key] = None if s is None or math.isnan(s.clip_fraction) else s.clip_fraction
    return {k: float(v) for k, v in found.items() if v is not None}


def _fallback_nodes(model: Model, paths: Mapping[str, str]) -> list[str]:
    return [n.name for n in model.graph.nodes if paths.get(n.name) in ("float_fallback", "float")]


def probe_candidates(model: Model, plan: QuantPlan, result: "AnalysisResult", stats: CalibrationStats) -> set[str]:
    """Nodes whose float inputs the probe should cache: those a finding may re-evaluate."""
    nodes: set[str] = set()
    for info in _outlier_tensors(plan, stats):
        nodes.update(_affected_nodes(model, info.tensor))
    nodes.update(name for name, _, _ in _clipped_layers(result))
    nodes -= _unit_members(result)
    op_of = {n.name: n.op_type for n in model.graph.nodes}
    nonlinear = set().union(*NONLINEAR_OPS.values())
    paths = {l.name: l.path for l in result.layers if not l.unit}
    nodes.update(n for n in _fallback_nodes(model, paths) if op_of.get(n) in nonlinear)  # type: ignore[arg-type]
    return nodes


# -------------------------------------------------------------------- findings


def _severity(score: float, high: float, medium: float) -> str:
    return "high" if score >= high else ("medium" if score >= medium else "low")


def _unit_members(result: "AnalysisResult") -> set[str]:
    """Nodes inside fused GELU units: not runnable alone as the int8 model runs them. (The
    MatMul and Add of a MatMul + bias unit each run alone on their own QParams: the probe
    measures them as separate layers.)"""
    return {l.name for l in result.layers if l.unit and l.unit_kind != "bias"}


def _outlier_findings(
    model: Model, plan: QuantPlan, result: "AnalysisResult", stats: CalibrationStats, probe: "LayerProbe | None"
) -> list[Finding]:
    findings = []
    in_unit = _unit_members(result)
    for info in _outlier_tensors(plan, stats):
        qp = plan.activations[info.tensor]
        alternatives: dict[str, QParams] = {
            "per_channel": _like(qp, info.ch_min, info.ch_max, plan, axis=info.axis),
            "clip": _like(qp, info.lo_rest, info.hi_rest, plan),
        }
        best: dict[str, tuple[str, float, float]] = {}  # alternative -> (node, base, alt) with the largest gain
        if probe is not None:
            variants = {k: _with_activation(plan, info.tensor, v, model) for k, v in alternatives.items()}
            for node in _affected_nodes(model, info.tensor):
                if node in in_unit:
                    continue
                base = _sqnr(probe, node)
                if base is None:
                    continue
                for key, variant in variants.items():
                    alt = _sqnr(probe, node, variant)
                    if alt is None:
                        continue
                    if key not in best or alt - base > best[key][2] - best[key][1]:
                        best[key] = (node, base, alt)
        shown = info.channels[:8]
        more = "" if len(info.channels) <= 8 else f" and {len(info.channels) - 8} more"
        n_out = len(info.channels)
        text = (
            f"activation {info.tensor} range dominated by {n_out} outlier channel{'s' if n_out > 1 else ''} "
            f"({', '.join(str(c) for c in shown)}{more} on axis {info.axis}; max {info.amax:.3g} vs 99th percentile "
            f"{info.p99_abs:.3g}, other channels within {info.rest_amax:.3g}): per-tensor {qp.dtype} wastes "
            f"{info.wasted_bits:.1f} bits"
        )
        numbers: dict[str, Any] = {
            "channels": info.channels,
            "axis": info.axis,
            "channel_count": info.channel_count,
            "max_abs": info.amax,
            "p99_abs": info.p99_abs,
            "other_channels_max_abs": info.rest_amax,
            "wasted_bits": info.wasted_bits,
        }
        affected = _affected_nodes(model, info.tensor)  # the writer first; a graph input: its readers
        node = affected[0] if affected else info.tensor
        gain = 0.0
        parts = []
        clip_range = qparams_range(alternatives["clip"])
        clip_label = "a range clipped to the other channels" + (
            f" [{clip_range[0]:.3g}, {clip_range[1]:.3g}]" if clip_range is not None else ""
        )
        for key, label in (("per_channel", "per-channel scales"), ("clip", clip_label)):
            if key in best:
                where, base, alt = best[key]
                delta = alt - base
                parts.append(f"{label}: {delta:+.1f} dB at {where} ({_db(base)} -> {_db(alt)})")
                numbers[f"{key}_node"] = where
                numbers[f"{key}_sqnr_db"] = alt
                numbers[f"{key}_base_sqnr_db"] = base
                numbers[f"{key}_gain_db"] = delta
                if delta > gain:
                    gain, node = delta, where
        if parts:
            text += "; measured isolated SQNR with " + "; with ".join(parts)
        else:
            text += "; per-channel scales or a smaller clipping range would recover resolution (not measured: no cached inputs)"
        numbers["gain_db"] = gain
        findings.append(
            Finding(node, "outlier_channels", _severity(max(gain, 2.0 * info.wasted_bits), 12.0, 6.0), text, numbers, info.tensor)
        )
    return findings


def _clip_findings(
    model: Model, plan: QuantPlan, result: "AnalysisResult", stats: CalibrationStats, probe: "LayerProbe | None"
) -> list[Finding]:
    findings = []
    in_unit = _unit_members(result)
    by_layer = {l.name: l for l in result.layers}
    for node, tensor, fraction in _clipped_layers(result):
        qp = plan.activations.get(tensor)
        obs = stats.tensors.get(tensor)
        numbers: dict[str, Any] = {"clip_fraction": fraction}
        rng = ""
        if qp is not None and not qp.per_channel:
            lo, hi = qparams_range(qp)  # type: ignore[misc]
            numbers.update(lo=lo, hi=hi)
            rng = f" at the {qp.dtype} range [{lo:.3g}, {hi:.3g}]"
        method = plan.calibration.get("method", plan.source)
        text = f"{fraction:.2%} of the values of {tensor} saturate{rng} ({method} calibration)"
        parts = _clip_fractions(by_layer[node]) if node in by_layer else {}
        numbers.update({f"{k}_fraction": v for k, v in parts.items()})
        drift = parts.get("outside") == 0.0 and max(parts.get("isolated", 0.0), parts.get("accumulated", 0.0)) > 0.0
        if drift:
            # the float values all fit: what saturates are int8 values carried over the edge by
            # the error of this layer (isolated) or of the layers before it (accumulated)
            text += (
                f"; the float values all lie inside the range, so the int8 model's own error carries them over it "
                f"(isolated view {parts.get('isolated', 0.0):.2%}, accumulated {parts.get('accumulated', 0.0):.2%})"
            )
        delta = 0.0
        if qp is not None and not qp.per_channel and obs is not None and obs.count and probe is not None and node not in in_unit:
            full = _like(qp, float(obs.min), float(obs.max), plan)
            numbers.update(observed_min=float(obs.min), observed_max=float(obs.max))
            if same_params(full, qp):
                if not drift:
                    text += (
                        f"; the calibration data reached only [{obs.min:.3g}, {obs.max:.3g}], all inside the range: "
                        "the evaluation data go beyond what calibration saw"
                    )
                base = alt = None
            else:
                base = _sqnr(probe, node)
                alt = _sqnr(probe, node, _with_activation(plan, tensor, full, model))
            if base is not None and alt is not None:
                delta = alt - base
                numbers.update(base_sqnr_db=base, minmax_sqnr_db=alt, gain_db=delta)
                text += (
                    f"; the full observed range [{obs.min:.3g}, {obs.max:.3g}] changes its isolated SQNR from "
                    f"{_db(base)} to {_db(alt)} ({delta:+.1f} dB)"
                )
        severity = _severity(fraction, 1e-2, CLIP_FRACTION)
        if delta >= 6.0:
            severity = "high"
        findings.append(Finding(node, "clipping", severity, text, numbers, tensor))
    return findings


def _bias_findings(result: "AnalysisResult") -> list[Finding]:
    findings = []
    for layer in result.layers:
        s = layer.isolated
        if s is None or s.n == 0 or math.isnan(s.err_std) or not math.isfinite(s.sqnr_db) or s.sqnr_db > BIAS_MAX_SQNR_DB:
            continue
        energy = s.err_mean**2 + s.err_std**2
        if energy <= 0.0:
            continue
        share = s.err_mean**2 / energy
        if share < BIAS_SHARE:
            continue
        gain = -10.0 * math.log10(max(1.0 - share, 1e-30))
        unit = "steps" if s.err_mean_steps is not None else ""
        mean_txt = f"{s.err_mean_steps:+.3g} steps" if s.err_mean_steps is not None else f"{s.err_mean:+.3g}"
        std_txt = f"{s.err_std_steps:.3g} steps" if s.err_std_steps is not None else f"{s.err_std:.3g}"
        text = (
            f"systematic bias: the isolated error has mean {mean_txt} vs std {std_txt}, {share:.0%} of the error "
            f"energy; removing the mean (bias correction) would raise its SQNR by {gain:.1f} dB ({_db(s.sqnr_db)} now)"
        )
        numbers = {
            "err_mean": s.err_mean,
            "err_std": s.err_std,
            "err_mean_steps": s.err_mean_steps,
            "err_std_steps": s.err_std_steps,
            "bias_share": share,
            "gain_db": gain,
            "sqnr_db_isolated": s.sqnr_db,
            "unit": unit or "value",
        }
        findings.append(Finding(layer.name, "bias", _severity(gain, 6.0, 3.0), text, numbers, layer.outputs[0] if layer.outputs else None))
    return findings


def _jump_findings(model: Model, result: "AnalysisResult") -> list[Finding]:
    graph = model.graph
    producers = graph.producers()
    by_name = {l.name: l for l in result.layers}
    jumps = []
    for node in graph.nodes:
        layer = by_name.get(node.name)
        if layer is None or layer.accumulated is None or math.isnan(layer.accumulated.sqnr_db):
            continue
        incoming = []
        for t in node.inputs:
            p = producers.get(t) if t else None
            if p is None:
                continue
            pl = by_name.get(p.name)
            if pl is not None and pl.accumulated is not None and not math.isnan(pl.accumulated.sqnr_db):
                incoming.append(pl.accumulated.sqnr_db)
        if not incoming:
            continue
        a_in = min(incoming)
        a_out = layer.accumulated.sqnr_db
        if not math.isfinite(a_out) and a_out > 0:
            continue
        drop = (min(a_in, 300.0) - a_out) if math.isfinite(a_out) else math.inf
        if drop >= JUMP_DB:
            jumps.append((drop, node.name, a_in, a_out, layer))
    jumps.sort(key=lambda j: -j[0] if math.isfinite(j[0]) else -1e9)
    findings = []
    for drop, name, a_in, a_out, layer in jumps[:MAX_JUMPS]:
        iso = layer.isolated.sqnr_db if layer.isolated is not None else math.nan
        if not math.isnan(iso) and iso <= a_out + 3.0:
            cause = f"its own isolated SQNR is {_db(iso)}: error enters here"
        elif not math.isnan(iso):
            cause = f"its own isolated SQNR is {_db(iso)}: the op amplifies the error it receives"
        else:
            cause = "error enters here"
        text = f"accumulated SQNR falls from {_db(a_in)} at its inputs to {_db(a_out)} at its output ({drop:.1f} dB); {cause}"
        numbers = {"sqnr_db_in": a_in, "sqnr_db_out": a_out, "drop_db": drop, "sqnr_db_isolated": iso}
        findings.append(Finding(name, "error_enters", _severity(drop, 12.0, JUMP_DB), text, numbers, layer.outputs[0] if layer.outputs else None))
    return findings


def _fallback_findings(model: Model, plan: QuantPlan, result: "AnalysisResult", probe: "LayerProbe | None", paths: Mapping[str, str]) -> list[Finding]:
    findings = []
    by_name = {l.name: l for l in result.layers}
    nonlinear = set().union(*NONLINEAR_OPS.values())
    for node in model.graph.nodes:
        path = paths.get(node.name)
        layer = by_name.get(node.name)
        if path not in ("float_fallback", "float") or layer is None or layer.isolated is None:
            continue  # no float output (shape arithmetic): nothing is quantized there
        numbers: dict[str, Any] = {"path": path}
        chosen = plan.paths.get(node.name) == path
        what = f"{UNIT_NAMES.get(layer.unit_kind or 'gelu', 'fused')} unit {layer.unit}" if layer.unit else node.op_type
        if path == "float":
            text = f"{what} kept in float (inputs dequantized, output not quantized)"
            severity = "low"
        else:
            why = "as configured" if chosen else "no integer kernel for it as configured"
            text = f"{what} runs as a float fallback ({why}): dequantize, float math, requantize; on an integer-only NPU that is a host round trip"
            severity = "medium"
        numbers["sqnr_db_isolated"] = layer.isolated.sqnr_db
        if probe is not None and node.op_type in nonlinear and path == "float_fallback" and not layer.unit:
            base = _sqnr(probe, node.name)
            alt = _sqnr(probe, node.name, _with_path(plan, node.name, "integer"))
            if base is not None and alt is not None and alt != base:
                numbers.update(base_sqnr_db=base, integer_sqnr_db=alt, gain_db=alt - base)
                text += f"; the integer (I-BERT) kernel gives isolated SQNR {_db(alt)} vs {_db(base)} in float"
        findings.append(Finding(node.name, "float_fallback", severity, text, numbers, layer.outputs[0] if layer.outputs else None))
    return findings


def compute_findings(
    model: Model,
    plan: QuantPlan,
    result: "AnalysisResult",
    stats: CalibrationStats,
    probe: "LayerProbe | None" = None,
    paths: Mapping[str, str] | None = None,
) -> list[Finding]:
    """All findings, most severe first (then by the size of their effect)."""
    paths = paths if paths is not None else {l.name: l.path for l in result.layers if l.path}
    findings = (
        _outlier_findings(model, plan, result, stats, probe)
        + _clip_findings(model, plan, result, stats, probe)
        + _bias_findings(result)
        + _jump_findings(model, result)
        + _fallback_findings(model, plan, result, probe, paths)
    )

    def magnitude(f: Finding) -> float:
        for key in ("gain_db", "drop_db", "wasted_bits", "clip_fraction"):
            v = f.numbers.get(key)
            if isinstance(v, (int, float)) and math.isfinite(v):
                return float(v)
        return 0.0

    findings.sort(key=lambda f: (SEVERITY_ORDER.get(f.severity, 3), -magnitude(f)))
    return findings
