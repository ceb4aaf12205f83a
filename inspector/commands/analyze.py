"""``inspector analyze``: per-layer int8 quantization error, findings, and a JSON report.

Also the quantization options shared with ``inspector run --int8`` (:func:`add_quant_arguments`,
:func:`scheme_from_args`, :func:`plan_from_args`).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any, TextIO

from engine.shards import auto_workers
from inspector.cliutil import (
    EXIT_OK,
    UsageError,
    add_model_arguments,
    load_from_args,
    model_path,
)

SCHEME_HELP = (
    "comma-separated: int8|uint8 (activations), sym|asym, per-channel|per-tensor (weights), pow2 "
    "(power-of-two scales); default int8,sym,per-channel"
)


def _list(values: list[str] | None) -> list[str] | None:
    """Flatten repeatable comma-separated options; None when the option was not given."""
    if values is None:
        return None
    return [item.strip() for v in values for item in v.split(",") if item.strip()]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def add_quant_arguments(p: argparse.ArgumentParser, seed: bool = True) -> None:
    """Calibration data and scheme options (shared by ``analyze`` and ``run --int8``, which
    has its own ``--seed``: ``seed=False``)."""
    p.add_argument("--calib", metavar="DATA", help="calibration data: .npz/.npy, or a folder of them, or of images (PNG, JPEG, BMP, PGM)")
    p.add_argument("--method", choices=("minmax", "percentile", "entropy", "mse"), default="minmax",
                   help="calibration range method (default minmax)")
    p.add_argument("--percentile", type=float, default=99.99, metavar="P",
                   help="percentile of the percentile method, in percent (default 99.99)")
    p.add_argument("--scheme", metavar="SPEC", default="", help=SCHEME_HELP)
    p.add_argument("--float-ops", action="append", metavar="OPS", help="op types or node names kept in float (comma-separated)")
    p.add_argument("--int16-ops", action="append", metavar="OPS", help="op types or node names whose outputs are int16")
    p.add_argument("--integer-ops", action="append", metavar="KINDS",
                   help="which of softmax,gelu,layernorm,sigmoid run integer (I-BERT); the others fall back "
                        "to float ('none' for all fallback); default: the executor's choice")
    p.add_argument("--rounding", choices=("half_even_float", "fixed_point_half_up"), default="half_even_float",
                   help="requantization rounding (default half_even_float, as onnxruntime)")
    p.add_argument("--workers", type=_positive_int, default=auto_workers(), metavar="N",
                   help="processes that calibrate and evaluate shares of the samples "
                        f"(default {auto_workers()}: one per CPU, at most 8)")
    p.add_argument("--samples", type=_positive_int, metavar="N", help="use at most N samples of each data set")
    p.add_argument("--batch", type=_positive_int, default=16, metavar="N", help="samples per executor run (default 16)")
    if seed:
        p.add_argument("--seed", type=int, default=0, help="seed of synthetic data (default 0)")
    p.add_argument("--image-size", metavar="HxW", help="images: resize to H x W (default: the model input's)")
    p.add_argument("--image-mean", metavar="M[,M,M]", default="0", help="images: mean subtracted after scaling")
    p.add_argument("--image-std", metavar="S[,S,S]", default="1", help="images: std divided by")
    p.add_argument("--image-scale", type=float, default=1.0 / 255.0, help="images: pixel multiplier (default 1/255)")
    p.add_argument("--image-layout", choices=("NCHW", "NHWC"), default="NCHW", help="images: input layout")
    p.add_argument("--image-bgr", action="store_true", help="images: BGR channel order")


def scheme_from_args(args: argparse.Namespace) -> Any:
    """The QuantScheme the options describe (UsageError on an unknown token)."""
    from engine.quant.qparams import QuantScheme

    fields: dict[str, Any] = {"method": args.method, "percentile": args.percentile}
    tokens = {
        "int8": ("activation_dtype", "int8"),
        "uint8": ("activation_dtype", "uint8"),
        "sym": ("symmetric", True),
        "symmetric": ("symmetric", True),
        "asym": ("symmetric", False),
        "asymmetric": ("symmetric", False),
        "per-channel": ("weight_per_channel", True),
        "per-tensor": ("weight_per_channel", False),
        "pow2": ("power_of_two", True),
        "power-of-two": ("power_of_two", True),
    }
    for token in (t.strip().lower() for t in (args.scheme or "").split(",")):
        if not token:
            continue
        if token not in tokens:
            raise UsageError(f"--scheme: unknown item {token!r} ({SCHEME_HELP})")
        key, value = tokens[token]
        fields[key] = value
    return QuantScheme(**fields)


def _floats(text: str, what: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise UsageError(f"{what}: expected numbers separated by commas, got {text!r}") from None


def _preprocess(args: argparse.Namespace) -> Any:
    from engine.calibrate import ImagePreprocess

    size = None
    if args.image_size:
        h, sep, w = args.image_size.lower().partition("x")
        if not sep or not h.isdigit() or not w.isdigit():
            raise UsageError(f"--image-size: expected HxW, got {args.image_size!r}")
        size = (int(h), int(w))
    return ImagePreprocess(
        size=size,
        mean=_floats(args.image_mean, "--image-mean"),
        std=_floats(args.image_std, "--image-std"),
        scale=args.image_scale,
        layout=args.image_layout,
        channel_order="BGR" if args.image_bgr else "RGB",
    )


def calib_spec_from_args(args: argparse.Namespace) -> Any:
    """The calibration data the options name (the sample's, a path, or synthetic)."""
    from engine.calibrate import data_spec
    from engine.samples import get_sample

    path = args.calib
    if path is None and getattr(args, "sample", None):
        path = str(get_sample(args.sample).calib)
    return data_spec(path, limit=args.samples, preprocess=_preprocess(args), seed=args.seed)


def integer_ops_from_args(args: argparse.Namespace) -> list[str] | None:
    from engine.calibrate import NONLINEAR_OPS

    items = _list(args.integer_ops)
    if items is None:
        return None
    lowered = [i.lower() for i in items]
    if lowered == ["none"]:
        return []
    if lowered == ["all"]:
        return list(NONLINEAR_OPS)
    return items


def plan_from_args(model: Any, args: argparse.Namespace, progress: Any = None) -> tuple[Any, Any, dict[str, Any]]:
    """(float model, plan, calibration facts) for ``run --int8``: a QDQ model's own plan, or
    calibration with the options."""
    from engine.analysis import has_qdq
    from engine.calibrate import calibrate_plan

    if has_qdq(model):
        from engine.int8.qdq import plan_from_qdq

        float_model, plan = plan_from_qdq(model)
        return float_model, plan, {"method": "qdq", "synthetic": False, "samples": 0}
    if args.calib is None and not getattr(args, "sample", None):
        raise UsageError("--int8 on a float model needs --calib DATA (calibration data)")
    plan, stats = calibrate_plan(
        model,
        calib_spec_from_args(args),
        scheme_from_args(args),
        _list(args.float_ops),
        _list(args.int16_ops),
        integer_ops_from_args(args),
        args.rounding,
        batch=args.batch,
        workers=args.workers,
        progress=progress,
    )
    return model, plan, {"method": args.method, "synthetic": stats.synthetic, "samples": stats.samples, "data": stats.source}


# ------------------------------------------------------------------------ output


def _fmt_db(value: float | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if value >= 300.0:
        return "exact"
    return f"{value:.1f}"


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _short(text: str, width: int) -> str:
    return text if len(text) <= width else "..." + text[-(width - 3):]


def print_summary(doc: dict[str, Any], out: TextIO, worst: int = 10) -> None:
    """The readable summary: data used, worst layers by isolated SQNR, outputs, findings."""
    cal = doc["calibration"]
    ev = doc["evaluation"]
    print(f"model        {doc['model']}", file=out)
    if cal.get("method") == "qdq":
        print("calibration  none: scales from the model's QuantizeLinear/DequantizeLinear nodes", file=out)
    else:
        what = "SYNTHETIC random data (no calibration data given; ranges are not representative)" if cal.get("synthetic") else cal.get("data")
        pct = f" {cal['percentile']}" if cal.get("percentile") is not None else ""
        print(f"calibration  {cal.get('method')}{pct} on {what}, {cal.get('samples')} samples", file=out)
    ev_what = "SYNTHETIC random data" if ev.get("synthetic") else ev.get("data")
    print(f"evaluation   {ev.get('samples')} samples of {ev_what}{' with labels' if ev.get('labels') else ''}", file=out)
    print("SQNR = 10*log10(sum float^2 / sum (int8-float)^2) in dB: higher is better (int8 layers typically 30-45 dB)", file=out)
    rated = [l for l in doc["layers"] if l.get("sqnr_db_isolated") is not None]
    rated.sort(key=lambda l: l["sqnr_db_isolated"])
    print(f"worst {min(worst, len(rated))} layers by isolated SQNR (only that layer quantized; [GELU unit]/[+bias unit]: the error of a fused unit, on the node writing its output)", file=out)
    print(f"  {'layer':<40} {'op':<18} {'iso dB':>7} {'acc dB':>7} {'cosine':>8} {'clip%':>7}", file=out)
    for l in rated[:worst]:
        clips = [c for c in (l.get("clip_fraction"), l.get("outside_fraction")) if c is not None]
        clip = max(clips) if clips else None
        op = l["op_type"] + ((" [+bias unit]" if l.get("fused_kind") == "bias" else " [GELU unit]") if l.get("fused_unit") else "")
        print(
            f"  {_short(l['name'], 40):<40} {_short(op, 18):<18} {_fmt_db(l['sqnr_db_isolated']):>7} "
            f"{_fmt_db(l.get('sqnr_db')):>7} {_fmt(l.get('cosine'), '.5f'):>8} "
            f"{'-' if clip is None else format(100 * clip, '.3f'):>7}",
            file=out,
        )
    print("outputs (accumulated: whole model int8)", file=out)
    for o in doc["outputs"]:
        line = (
            f"  {o['name']:<20} SQNR {_fmt_db(o['sqnr_db'])} dB  cosine {_fmt(o['cosine'], '.5f')}"
            f"  max|err| {_fmt(o['max_abs_err'], '.4g')}"
        )
        if o.get("top1_agreement") is not None:
            line += f"  top-1 agreement {100 * o['top1_agreement']:.2f}%"
        if o.get("accuracy_float") is not None:
            line += f"  accuracy float {100 * o['accuracy_float']:.2f}% int8 {100 * o['accuracy_int8']:.2f}% ({o['labelled_samples']} labelled)"
        print(line, file=out)
    findings = doc.get("findings") or []
    print(f"findings ({len(findings)})", file=out)
    for f in findings[:12]:
        print(f"  [{f['severity']}] {f['node']}: {f['text']}", file=out)
    if len(findings) > 12:
        print(f"  ... {len(findings) - 12} more in the JSON report", file=out)


# ------------------------------------------------------------------------ command


def _evaluation_from_args(args: argparse.Namespace, model: Any) -> tuple[Any, Any, str]:
    """(evaluation spec or None, labels array or None, labels file) from --labels / --sample."""
    from engine.calibrate import evaluation_source
    from engine.samples import get_sample

    path = args.labels
    if path is None and args.sample and args.calib is None:
        path = str(get_sample(args.sample).val)
    if path is None:
        return None, None, ""
    spec, labels = evaluation_source(path, model, args.samples)
    return spec, labels, path


def print_npu_summary(doc: dict[str, Any], out: TextIO, top: int = 8) -> None:
    """Estimated latency on the profile, unfused and fused, and the largest fusion savings."""
    tl = doc.get("timeline")
    if not tl:
        return
    prof = doc["profile"]
    fused, unfused = tl["total_ns"], tl["total_ns_unfused"]
    assumed = doc.get("assumed_dims") or {}
    per = f" ({', '.join(f'{k}={v}' for k, v in assumed.items())} assumed; --dim NAME=VALUE binds it)" if assumed else ""
    print(
        f"NPU estimate on {prof['name']}{per}: {unfused / 1e6:.3f} ms unfused, {fused / 1e6:.3f} ms with "
        f"{len(doc['fusions'])} fusions ({100 * (1 - fused / unfused) if unfused else 0:.1f}% saved)",
        file=out,
    )
    layers = [l for l in doc["layers"] if l.get("est_ns") is not None]
    memory = sum(l["est_ns"] for l in layers if l.get("bound") == "memory")
    total = sum(l["est_ns"] for l in layers) or 1.0
    print(f"  memory-bound layers take {100 * memory / total:.1f}% of the unfused layer time", file=out)
    fusions = sorted(doc["fusions"], key=lambda f: -f["est_ns_saved"])[:top]
    if fusions:
        shown = f"the {len(fusions)} saving most time, of {len(doc['fusions'])}" if len(doc["fusions"]) > len(fusions) else "all"
        print(f"  fusions ({shown}; every one in the JSON and the report):", file=out)
        print(f"  {'fusion':<28} {'nodes':>5} {'DRAM saved':>12} {'time saved':>12}", file=out)
        for f in fusions:
            print(
                f"  {_short(f['pattern'], 28):<28} {len(f['nodes']):>5} {f['dram_bytes_saved']:>10,d} B "
                f"{f['est_ns_saved'] / 1e3:>9.2f} us",
                file=out,
            )


def analysis_from_args(args: argparse.Namespace, progress: Any = None) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Run the whole analysis the options describe: (model, AnalysisResult or None with
    ``--no-quant``, NpuReport on ``--profile``, the JSON document). Shared by ``analyze``,
    ``report`` and any command that needs the same figures. ``progress(done, total)``
    counts samples (calibration, evaluation, probe)."""
    from engine.analysis import AnalysisConfig, has_qdq, run_analysis
    from engine.calibrate import data_spec
    from engine.deployment import deployment_document, npu_report_for
    from inspector.profiles import resolve_profile

    model = load_from_args(args)
    profile = resolve_profile(args.profile)
    cost_model, assumed = model_for_costs(args, model)
    if args.no_quant:
        report = npu_report_for(cost_model, profile, None)
        return model, None, report, with_assumed(deployment_document(model, None, report), assumed)
    scheme = scheme_from_args(args)
    qdq = has_qdq(model)
    calib = None if (qdq and args.calib is None) else calib_spec_from_args(args)
    evaluation, labels, labels_path = _evaluation_from_args(args, model)
    if qdq and calib is None and evaluation is None and labels is None:
        evaluation = data_spec(None, limit=args.samples, seed=args.seed)  # said plainly: synthetic
    config = AnalysisConfig(
        scheme=scheme,
        float_ops=_list(args.float_ops),
        int16_ops=_list(args.int16_ops),
        integer_ops=integer_ops_from_args(args),
        rounding=args.rounding,
        workers=args.workers,
        batch=args.batch,
    )
    result = run_analysis(model, calib, evaluation, labels, labels_path or "labels", config, progress=progress)
    report = npu_report_for(cost_model, profile, result)
    return model, result, report, with_assumed(deployment_document(model, result, report), assumed)


def model_for_costs(args: argparse.Namespace, model: Any) -> tuple[Any, dict[str, int]]:
    """The model the cost model estimates, and the dimensions assumed for it: batch-like
    dimensions left free are bound to 1 (as the window does; the estimate is per sample and
    fusions need known shapes), the analysis itself keeps them free (it runs in batches)."""
    from engine import load_model
    from inspector.session import batch_like_dims

    assumed = batch_like_dims(model)
    if not assumed:
        return model, {}
    return load_model(model_path(args), dims={**dict(args.dim), **assumed}), assumed


def with_assumed(doc: dict[str, Any], assumed: dict[str, int]) -> dict[str, Any]:
    """``doc`` with ``assumed_dims`` (the dimensions bound to 1 for the NPU estimate), when any."""
    if assumed:
        doc["assumed_dims"] = dict(assumed)
    return doc


def cmd_analyze(args: argparse.Namespace) -> int:
    from engine.fileio import write_text
    from inspector.progress import TerminalProgress

    if args.json:  # before the work: a path that cannot be written fails now, not after the analysis
        from inspector.cliutil import check_writable

        check_writable(args.json)
    bar = TerminalProgress(f"analyze {os.path.splitext(os.path.basename(model_path(args)))[0]}")
    try:
        model, result, _report, doc = analysis_from_args(args, progress=bar)
    finally:
        bar.close()
    if result is None:
        print(f"model        {model.path}\nquantization analysis skipped (--no-quant)")
    else:
        print_summary(doc, sys.stdout)
    print_npu_summary(doc, sys.stdout)
    if args.json:
        write_text(args.json, json.dumps(doc, indent=1, allow_nan=False))
        print(f"wrote {args.json}")
    return EXIT_OK


def add_analysis_arguments(p: argparse.ArgumentParser) -> None:
    """MODEL / --sample, the quantization options, --labels, --no-quant and --profile: what
    :func:`analysis_from_args` reads (``--json`` is each command's own)."""
    add_model_arguments(p)
    add_quant_arguments(p)
    p.add_argument("--labels", metavar="LABELS.npz",
                   help="key 'labels' (one per sample); if it also holds the model inputs, evaluate on them")
    p.add_argument("--no-quant", action="store_true", help="skip the quantization analysis (cost model, fusions and timeline only)")
    p.add_argument("--profile", default="journey5", metavar="NAME|FILE",
                   help="NPU profile for the cost model: a shipped name (see `inspector profiles`), host, or a .toml file (default journey5)")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "analyze",
        help="per-layer int8 error (SQNR, cosine, clipping; isolated and accumulated), findings, JSON report",
        description="Calibrate, run the int8 model against the float model layer by layer, and report. "
        "SQNR is in dB, higher is better. Without --calib (and without --sample) calibration uses "
        "seeded synthetic data, and the report says so.",
    )
    add_analysis_arguments(p)
    p.add_argument("--json", metavar="OUT.json", help="write the full report as JSON")
    p.set_defaults(func=cmd_analyze)
