"""Deployment gates for CI: thresholds on a model's int8 deployment picture, PASS or FAIL each.

Input is the deployment document (:func:`engine.deployment.deployment_document`, the dict
``inspector analyze --json`` writes and the GUI and PDF report share), so a gate can be
evaluated on a fresh analysis or on a saved report alike. Gates (all optional):

- ``min_cosine``: the smallest cosine similarity of int8 vs float over the model outputs
  (accumulated view: the whole model int8). 1 is identical direction.
- ``min_sqnr_db``: the smallest output SQNR, dB (``10 log10(sum x^2 / sum (y - x)^2)``,
  higher is better; capped at 300 dB).
- ``max_accuracy_drop``: the largest float minus int8 top-1 accuracy over the labelled
  outputs, in PERCENTAGE POINTS (98.1% float, 97.5% int8: 0.6).
- ``max_latency_ms``: the estimated latency on the NPU profile with fusions applied (the
  fused timeline's ``total_ns``), ms.
- ``min_layer_sqnr_db``: the smallest ISOLATED per-layer SQNR, dB (only that layer
  quantized, on the float model's own inputs): where error enters, not where it shows.
  Layers without a rated float output (inner nodes of a fused unit) are not counted.
- ``max_float_ops``: how many nodes the profile runs off the int8 datapath, i.e. on the
  ``float`` or ``host`` lane of the cost model (unfused).

A gate whose value the document does not hold (no labels for an accuracy gate, no
quantization analysis, no NPU estimate) FAILS with a detail saying what is missing: a gate
never passes by not being measured.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any

from engine.errors import ModelError

GATES_FORMAT = "deployment-inspector/gates"

FLOAT_LANES = ("float", "host")
"""Cost-model lanes that are off the int8 datapath (see :mod:`engine.costmodel`)."""

QUANT_GATES = ("min_cosine", "min_sqnr_db", "max_accuracy_drop", "min_layer_sqnr_db")
"""Gates measured by the quantization analysis (the others come from the cost model)."""

UNITS: dict[str, str] = {
    "min_cosine": "",
    "min_sqnr_db": "dB",
    "max_accuracy_drop": "pp",
    "max_latency_ms": "ms",
    "min_layer_sqnr_db": "dB",
    "max_float_ops": "nodes",
}


@dataclass(frozen=True)
class Thresholds:
    """Gate thresholds; ``None`` means the gate is not checked. Units as in the module
    docstring: cosine unitless, SQNR dB, accuracy drop percentage points, latency ms,
    float ops a node count."""

    min_cosine: float | None = None
    min_sqnr_db: float | None = None
    max_accuracy_drop: float | None = None
    max_latency_ms: float | None = None
    min_layer_sqnr_db: float | None = None
    max_float_ops: int | None = None

    def __post_init__(self) -> None:
        for name in self.names():
            value = getattr(self, name)
            if value is None:
                continue
            problem = _value_problem(name, value)
            if problem:
                raise ValueError(f"{name}: {problem}")
            object.__setattr__(self, name, int(value) if name == "max_float_ops" else float(value))

    @staticmethod
    def names() -> tuple[str, ...]:
        """Every gate name, in report order."""
        return tuple(f.name for f in fields(Thresholds))

    def given(self) -> dict[str, float | int]:
        """The thresholds that are set, by gate name, in report order."""
        return {n: getattr(self, n) for n in self.names() if getattr(self, n) is not None}

    def merged(self, override: Thresholds) -> Thresholds:
        """These thresholds with every value ``override`` sets replacing ours."""
        values = {n: getattr(self, n) for n in self.names()}
        values.update(override.given())
        return Thresholds(**values)

    @property
    def needs_quantization(self) -> bool:
        """True when a gate needs the quantization analysis (not only the cost model)."""
        return any(getattr(self, n) is not None for n in QUANT_GATES)

    def to_dict(self) -> dict[str, float | int | None]:
        return {n: getattr(self, n) for n in self.names()}


def _value_problem(name: str, value: Any) -> str | None:
    """Why ``value`` is no valid threshold for gate ``name`` (None when it is)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"expected a number, got {type(value).__name__} {value!r}"
    if name == "max_float_ops":
        if isinstance(value, float) and not value.is_integer():
            return f"expected a whole number of nodes, got {value!r}"
        if value < 0:
            return f"expected a count of at least 0, got {value!r}"
        return None
    if not math.isfinite(value):
        return f"expected a finite number, got {value!r}"
    if name == "min_cosine" and not -1.0 <= value <= 1.0:
        return f"a cosine similarity lies in [-1, 1], got {value!r}"
    if name == "max_latency_ms" and value < 0:
        return f"expected a latency of at least 0 ms, got {value!r}"
    return None


def load_thresholds(path: str | os.PathLike[str]) -> Thresholds:
    """Thresholds from a TOML file: top-level keys named as the gates (``min_cosine = 0.99``,
    ``max_float_ops = 0``, ...). An unknown key, a wrong type or a malformed file is a
    one-line ModelError naming the file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelError("no such file", path)
    if os.path.isdir(path):
        raise ModelError("is a folder, not a TOML gate file", path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ModelError(f"cannot read file ({e.strerror or e})", path) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ModelError("not a TOML gate file (not UTF-8 text)", path) from None
    except tomllib.TOMLDecodeError as e:
        raise ModelError(f"not valid TOML ({' '.join(str(e).split())})", path) from None
    known = Thresholds.names()
    unknown = sorted(k for k in data if k not in known)
    if unknown:
        raise ModelError(f"unknown key {unknown[0]!r} (known: {', '.join(known)})", path)
    for key, value in data.items():
        problem = _value_problem(key, value)
        if problem is None and key == "max_float_ops" and not isinstance(value, int):
            problem = f"expected an integer, got {value!r}"
        if problem:
            raise ModelError(f"{key}: {problem}", path)
    return Thresholds(**data)


# ------------------------------------------------------------------------ results


@dataclass(frozen=True)
class GateResult:
    """One checked gate. ``measured`` is None when the document does not hold the value
    (the gate then fails and ``detail`` says why); ``detail`` names where the value comes
    from (the worst output or layer, the profile)."""

    name: str
    measured: float | None
    threshold: float
    passed: bool
    unit: str
    detail: str = ""

    @property
    def is_min(self) -> bool:
        """True for a lower bound (``min_*``), False for an upper bound (``max_*``)."""
        return self.name.startswith("min_")

    def _fmt(self, value: float) -> str:
        """The measured value at the gate's display precision; more digits when that
        precision would print it equal to a threshold it misses."""
        if self.name == "max_float_ops":
            return str(int(value))
        spec = {"min_cosine": ".6f", "max_latency_ms": ".4g"}.get(self.name, ".2f")
        text = format(value, spec)
        if not self.passed and float(text) == self.threshold:
            text = format(value, ".10g")
        return text

    def _fmt_threshold(self) -> str:
        return str(int(self.threshold)) if self.name == "max_float_ops" else format(self.threshold, "g")

    def line(self) -> str:
        """``PASS  min_cosine  0.998880 >= 0.99  output logits``: status, gate, measured value,
        the relation that holds, threshold with its unit, and the detail."""
        status = "PASS" if self.passed else "FAIL"
        unit = f" {self.unit}" if self.unit else ""
        if self.measured is None:
            relation = f"not measured (needs {'>=' if self.is_min else '<='} {self._fmt_threshold()}{unit})"
        else:
            holds = self.passed
            op = (">=" if holds else "<") if self.is_min else ("<=" if holds else ">")
            relation = f"{self._fmt(self.measured)}{unit} {op} {self._fmt_threshold()}{unit}"
        text = f"{status}  {self.name:<18} {relation}"
        return f"{text}  {self.detail}" if self.detail else text

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "measured": self.measured,
            "threshold": self.threshold,
            "passed": self.passed,
            "unit": self.unit,
            "detail": self.detail,
        }


@dataclass
class GateReport:
    """Every checked gate of one model, in :meth:`Thresholds.names` order."""

    model: str
    results: list[GateResult]
    profile: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every gate holds (and at least one was checked)."""
        return bool(self.results) and all(r.passed for r in self.results)

    @property
    def failures(self) -> list[GateResult]:
        return [r for r in self.results if not r.passed]

    def lines(self) -> list[str]:
        """One line per gate (see :meth:`GateResult.line`)."""
        return [r.line() for r in self.results]

    def summary(self) -> str:
        """``check: PASSED (6 gates)`` or ``check: FAILED (2 of 6 gates: min_cosine, ...)``."""
        if self.passed:
            return f"check: PASSED ({len(self.results)} gates)"
        names = ", ".join(r.name for r in self.failures)
        return f"check: FAILED ({len(self.failures)} of {len(self.results)} gates: {names})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": GATES_FORMAT,
            "version": 1,
            "model": self.model,
            "profile": self.profile,
            "passed": self.passed,
            "notes": list(self.notes),
            "results": [r.to_dict() for r in self.results],
        }

    def to_junit_xml(self, suite: str = "inspector check") -> str:
        """JUnit XML: one ``<testsuite>``, one ``<testcase>`` per gate (a ``<failure>`` when it
        fails), so CI systems list every gate by name."""
        model = _xml_text(os.path.basename(self.model) or self.model)
        classname = "inspector.check." + re.sub(r"[^0-9A-Za-z_.-]", "_", os.path.splitext(model)[0] or "model")
        root = ET.Element("testsuites", name=suite, tests=str(len(self.results)),
                          failures=str(len(self.failures)), errors="0")
        ts = ET.SubElement(root, "testsuite", name=f"{suite}: {model}", tests=str(len(self.results)),
                           failures=str(len(self.failures)), errors="0", skipped="0")
        props = ET.SubElement(ts, "properties")
        ET.SubElement(props, "property", name="model", value=_xml_text(self.model))
        if self.profile:
            ET.SubElement(props, "property", name="profile", value=_xml_text(self.profile))
        for r in self.results:
            case = ET.SubElement(ts, "testcase", classname=classname, name=r.name)
            line = _xml_text(r.line())
            if not r.passed:
                failure = ET.SubElement(case, "failure", message=line, type="GateFailed")
                failure.text = line
            out = ET.SubElement(case, "system-out")
            out.text = line
        if self.notes:
            out = ET.SubElement(ts, "system-out")
            out.text = _xml_text("\n".join(self.notes))
        ET.indent(root)
        return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _xml_text(text: str) -> str:
    """``text`` without the characters XML 1.0 cannot hold (control characters, surrogates)."""
    return _XML_ILLEGAL.sub("?", text)


# ------------------------------------------------------------------------ evaluation


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _output_metric(doc: Mapping[str, Any], key: str, label: str) -> tuple[float | None, str]:
    """The smallest ``key`` over the outputs and which output it is (None: not measured)."""
    outputs = doc.get("outputs")
    if not outputs:
        return None, "no quantization analysis in the report (run without --no-quant)"
    worst: tuple[float, str] | None = None
    for o in outputs:
        value = _number(o.get(key))
        if value is None:
            return None, f"output {o.get('name')}: {label} undefined (an all-zero or non-finite tensor)"
        if worst is None or value < worst[0]:
            worst = (value, str(o.get("name")))
    assert worst is not None
    return worst[0], f"output {worst[1]}" + (f" (worst of {len(outputs)})" if len(outputs) > 1 else "")


def _accuracy_drop(doc: Mapping[str, Any]) -> tuple[float | None, str]:
    outputs = doc.get("outputs")
    if not outputs:
        return None, "no quantization analysis in the report (run without --no-quant)"
    worst: tuple[float, Mapping[str, Any]] | None = None
    for o in outputs:
        af, ai = _number(o.get("accuracy_float")), _number(o.get("accuracy_int8"))
        if af is None or ai is None:
            continue
        drop = 100.0 * (af - ai)
        if worst is None or drop > worst[0]:
            worst = (drop, o)
    if worst is None:
        return None, "no labelled evaluation data (give --labels LABELS.npz)"
    o = worst[1]
    return worst[0], (
        f"output {o.get('name')}: float {100 * o['accuracy_float']:.2f}%, int8 {100 * o['accuracy_int8']:.2f}% "
        f"on {o.get('labelled_samples')} labelled samples"
    )


def _layer_sqnr(doc: Mapping[str, Any], threshold: float) -> tuple[float | None, str]:
    if not doc.get("outputs"):
        return None, "no quantization analysis in the report (run without --no-quant)"
    rated = [(v, l) for l in doc.get("layers") or [] if (v := _number(l.get("sqnr_db_isolated"))) is not None]
    if not rated:
        return None, "no layer has a rated isolated SQNR"
    value, layer = min(rated, key=lambda p: p[0])
    below = sorted((p for p in rated if p[0] < threshold), key=lambda p: p[0])
    names = ", ".join(f"{l.get('name')} {v:.1f} dB" for v, l in below[:5]) + (f" and {len(below) - 5} more" if len(below) > 5 else "")
    return value, (
        f"layer {layer.get('name')} ({_op_label(layer)}), isolated; "
        f"{len(below)} of {len(rated)} rated layers below the budget" + (f": {names}" if below else "")
    )


def _op_label(layer: Mapping[str, Any]) -> str:
    """A layer's op type, or the fused unit whose error it carries."""
    if layer.get("fused_unit"):
        from engine.int8.executor import UNIT_NAMES

        kind = UNIT_NAMES.get(str(layer.get("fused_kind") or "gelu"), "fused")
        return f"{layer.get('op_type')}, {kind} unit {layer.get('fused_unit')}"
    return str(layer.get("op_type"))


def _latency(doc: Mapping[str, Any]) -> tuple[float | None, str]:
    timeline = doc.get("timeline") or {}
    total = _number(timeline.get("total_ns"))
    if total is None:
        return None, "no NPU estimate in the report"
    profile = (doc.get("profile") or {}).get("name", "?")
    return total / 1e6, f"fused timeline on {profile}"


def _float_ops(doc: Mapping[str, Any]) -> tuple[float | None, str]:
    layers = doc.get("layers") or []
    if not layers or all("lane" not in l for l in layers):
        return None, "no NPU estimate in the report"
    off = [l for l in layers if l.get("lane") in FLOAT_LANES]
    profile = (doc.get("profile") or {}).get("name", "?")
    if not off:
        return 0, f"every node on the int8 datapath of {profile}"
    by_op: dict[str, int] = {}
    for l in off:
        key = f"{l.get('op_type')}@{l.get('lane')}"
        by_op[key] = by_op.get(key, 0) + 1
    ops = ", ".join(f"{k.split('@')[0]} x{n} ({k.split('@')[1]})" for k, n in sorted(by_op.items(), key=lambda kv: -kv[1]))
    return len(off), f"on {profile}: {ops}"


def evaluate_gates(doc: Mapping[str, Any], thresholds: Thresholds) -> GateReport:
    """Check every threshold that is set against a deployment document.

    ``doc`` is the dict of :func:`engine.deployment.deployment_document` (or a saved
    ``inspector analyze --json`` report). Returns one :class:`GateResult` per set threshold.
    """
    measures: dict[str, Callable[[float], tuple[float | None, str]]] = {
        "min_cosine": lambda t: _output_metric(doc, "cosine", "cosine"),
        "min_sqnr_db": lambda t: _output_metric(doc, "sqnr_db", "SQNR"),
        "max_accuracy_drop": lambda t: _accuracy_drop(doc),
        "max_latency_ms": lambda t: _latency(doc),
        "min_layer_sqnr_db": lambda t: _layer_sqnr(doc, t),
        "max_float_ops": lambda t: _float_ops(doc),
    }
    results: list[GateResult] = []
    for name, threshold in thresholds.given().items():
        measured, detail = measures[name](threshold)
        if measured is None:
            passed = False
        elif name.startswith("min_"):
            passed = measured >= threshold
        else:
            passed = measured <= threshold
        results.append(GateResult(name, measured, threshold, passed, UNITS[name], detail))
    notes: list[str] = []
    if (doc.get("calibration") or {}).get("synthetic"):
        notes.append("calibration used SYNTHETIC random data: the quantization gates measure unrepresentative ranges")
    if (doc.get("evaluation") or {}).get("synthetic"):
        notes.append("evaluation used SYNTHETIC random data")
    profile = (doc.get("profile") or {}).get("name")
    return GateReport(str(doc.get("model", "")), results, profile, notes)


def check_model(
    model: Any,
    thresholds: Thresholds,
    profile: Any = "journey5",
    calib: Any = None,
    evaluation: Any = None,
    labels: Any = None,
    config: Any = None,
    quantize: bool = True,
    progress: Callable[[int, int], None] | None = None,
) -> tuple[GateReport, dict[str, Any]]:
    """Analyze ``model`` (an :class:`engine.graph.Model`) and check ``thresholds``.

    ``profile``: an :class:`engine.npu.NpuProfile` or a name/path for
    :func:`engine.npu.load_profile`. ``calib``/``evaluation``: :class:`engine.calibrate.DataSpec`
    (see :func:`engine.calibrate.data_spec`; ``calib`` None means seeded synthetic data
    for a float model, the model's own scales for a QDQ model); ``labels``: one integer per
    evaluation sample; ``config``: :class:`engine.analysis.AnalysisConfig`. With
    ``quantize=False`` only the cost model runs (quantization gates then fail as not
    measured). Returns the gate report and the deployment document it was checked on.
    """
    from engine.analysis import has_qdq, run_analysis
    from engine.calibrate import data_spec
    from engine.deployment import deployment_document, npu_report_for
    from engine.npu import NpuProfile, load_profile

    prof = profile if isinstance(profile, NpuProfile) else load_profile(profile)
    result = None
    if quantize:
        if calib is None and not has_qdq(model):
            calib = data_spec(None)
        if calib is None and evaluation is None and labels is None:
            evaluation = data_spec(None)
        result = run_analysis(model, calib, evaluation, labels, config=config, progress=progress)
    report = npu_report_for(model, prof, result)
    doc = deployment_document(model, result, report)
    return evaluate_gates(doc, thresholds), doc


__all__: Sequence[str] = (
    "FLOAT_LANES",
    "GateReport",
    "GateResult",
    "Thresholds",
    "check_model",
    "evaluate_gates",
    "load_thresholds",
)
