"""``inspector check``: deployment gates for CI (see :mod:`engine.gates`).

Runs the same analysis as ``inspector analyze`` (same options), checks each threshold
given on the command line or in a TOML file (``--config``; the command line wins), prints
one line per gate (measured value, threshold, PASS/FAIL) and optionally writes JUnit XML and
JSON. Exit 0 when every gate holds, 1 when any fails, 2 on bad input or usage.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from inspector.cliutil import EXIT_CHECK_FAILED, EXIT_OK, UsageError, check_writable, model_path

# command-line option -> gate name (engine.gates.Thresholds field)
GATE_OPTIONS: dict[str, str] = {
    "--min-cosine": "min_cosine",
    "--min-sqnr-db": "min_sqnr_db",
    "--max-accuracy-drop": "max_accuracy_drop",
    "--max-latency-ms": "max_latency_ms",
    "--min-layer-sqnr-db": "min_layer_sqnr_db",
    "--max-float-ops": "max_float_ops",
}


def thresholds_from_args(args: argparse.Namespace):
    """The thresholds of ``--config`` overridden by the gate options given."""
    from engine.gates import Thresholds, load_thresholds

    base = load_thresholds(args.config) if args.config else Thresholds()
    given = {name: getattr(args, name) for name in GATE_OPTIONS.values() if getattr(args, name) is not None}
    try:
        return base.merged(Thresholds(**given))
    except ValueError as e:
        name, _, problem = str(e).partition(": ")
        option = next((o for o, n in GATE_OPTIONS.items() if n == name), name)
        raise UsageError(f"{option}: {problem}") from None


def cmd_check(args: argparse.Namespace) -> int:
    from engine.fileio import write_text
    from engine.gates import QUANT_GATES, evaluate_gates
    from inspector.commands.analyze import analysis_from_args
    from inspector.progress import TerminalProgress

    thresholds = thresholds_from_args(args)
    given = thresholds.given()
    if not given:
        raise UsageError(f"no gates to check: give at least one of {', '.join(GATE_OPTIONS)}, or --config FILE.toml")
    if args.no_quant:
        quant = [n for n in given if n in QUANT_GATES]
        if quant:
            raise UsageError(f"--no-quant skips the quantization analysis that {', '.join(quant)} needs")
    if "max_accuracy_drop" in given and not (args.labels or args.sample):
        raise UsageError("--max-accuracy-drop needs labelled evaluation data: give --labels LABELS.npz")
    for option, path in (("--junit", args.junit), ("--json", args.json)):
        if path:
            check_writable(path, option)
    if args.junit and args.json and os.path.abspath(args.junit) == os.path.abspath(args.json):
        raise UsageError("--junit and --json name the same file")

    bar = TerminalProgress(f"check {os.path.splitext(os.path.basename(model_path(args)))[0]}")
    try:
        model, _result, _report, doc = analysis_from_args(args, progress=bar)
    finally:
        bar.close()
    report = evaluate_gates(doc, thresholds)
    print(f"model        {model.path}")
    if report.profile:
        print(f"profile      {report.profile}")
    for note in report.notes:
        print(f"note: {note}")
    for line in report.lines():
        print(line)
    print(report.summary())
    if args.junit:
        write_text(args.junit, report.to_junit_xml())
        print(f"wrote {args.junit}")
    if args.json:
        payload = report.to_dict()
        payload["thresholds"] = thresholds.to_dict()
        write_text(args.json, json.dumps(payload, indent=1, allow_nan=False))
        print(f"wrote {args.json}")
    sys.stdout.flush()
    return EXIT_OK if report.passed else EXIT_CHECK_FAILED


def register(sub: argparse._SubParsersAction) -> None:
    from inspector.commands.analyze import add_analysis_arguments

    p = sub.add_parser(
        "check",
        help="CI gates: thresholds on output cosine/SQNR, accuracy drop, per-layer SQNR, latency, float ops",
        description="Analyze like `inspector analyze` and check thresholds: exit 0 when every gate holds, "
        "1 when any fails, 2 on bad input. SQNR in dB (higher is better), accuracy drop in percentage "
        "points (float minus int8 top-1), latency in ms (fused NPU timeline), float ops = nodes the "
        "profile runs on its float unit or the host.",
    )
    add_analysis_arguments(p)
    g = p.add_argument_group("gates (any subset; also from --config)")
    g.add_argument("--config", metavar="GATE.toml",
                   help="thresholds from a TOML file (keys min_cosine, min_sqnr_db, max_accuracy_drop, "
                        "max_latency_ms, min_layer_sqnr_db, max_float_ops); options given here override it")
    g.add_argument("--min-cosine", dest="min_cosine", type=float, metavar="X",
                   help="smallest allowed cosine similarity of int8 vs float over the outputs")
    g.add_argument("--min-sqnr-db", dest="min_sqnr_db", type=float, metavar="DB",
                   help="smallest allowed output SQNR, dB")
    g.add_argument("--max-accuracy-drop", dest="max_accuracy_drop", type=float, metavar="PP",
                   help="largest allowed float minus int8 top-1 accuracy, percentage points (needs labels)")
    g.add_argument("--max-latency-ms", dest="max_latency_ms", type=float, metavar="MS",
                   help="largest allowed estimated latency on --profile with fusions, ms")
    g.add_argument("--min-layer-sqnr-db", dest="min_layer_sqnr_db", type=float, metavar="DB",
                   help="smallest allowed isolated SQNR of any layer, dB (names the layer that breaks it)")
    g.add_argument("--max-float-ops", dest="max_float_ops", type=int, metavar="N",
                   help="largest allowed number of nodes that fall back to float/host on --profile")
    p.add_argument("--junit", metavar="OUT.xml", help="write JUnit XML, one test case per gate")
    p.add_argument("--json", metavar="OUT.json", help="write the gate results as JSON")
    p.set_defaults(func=cmd_check)
