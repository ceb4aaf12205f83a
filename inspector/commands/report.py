"""``inspector report``: the deployment report as a PDF (and its JSON), from the analysis options.

The same :func:`inspector.report.write_report` the GUI's File > Export report calls. The
analysis is ``analyze``'s (:func:`inspector.commands.analyze.analysis_from_args`); the JSON
is ``analyze --json``'s document plus a ``report`` section (title-page facts, and the
verdict when gates are given). Gates are ``inspector check``'s options; exit 1 when one
fails (the report is still written), 2 on bad input or an unwritable output.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from inspector.cliutil import EXIT_CHECK_FAILED, EXIT_OK, UsageError, check_writable
from inspector.commands.analyze import add_analysis_arguments, analysis_from_args


def _page_size(text: str) -> str:
    sizes = {"a4": "A4", "letter": "Letter"}
    try:
        return sizes[text.strip().lower()]
    except KeyError:
        raise argparse.ArgumentTypeError(f"expected A4 or Letter, got {text!r}") from None


def add_gate_arguments(p: argparse.ArgumentParser) -> None:
    """The gate options of ``inspector check`` (same names, same meaning: engine.gates): with
    any given, the report's summary carries the verdict."""
    from engine.gates import UNITS, Thresholds
    from inspector.commands.check import GATE_OPTIONS

    g = p.add_argument_group("gates (optional; as `inspector check`: the verdict goes into the summary)")
    g.add_argument("--config", metavar="GATE.toml", help="thresholds from a TOML file (keys as the options below, "
                   "with underscores); options given here override it")
    kinds = {f: int if f == "max_float_ops" else float for f in Thresholds.names()}
    for option, name in GATE_OPTIONS.items():
        unit = UNITS.get(name) or "unitless"
        g.add_argument(option, dest=name, type=kinds[name], metavar="N" if kinds[name] is int else "X",
                       help=f"{'lower' if name.startswith('min_') else 'upper'} bound of {name} ({unit}; see `inspector check --help`)")


def cmd_report(args: argparse.Namespace) -> int:
    from engine.gates import QUANT_GATES, evaluate_gates
    from inspector.commands.check import thresholds_from_args
    from inspector.progress import TerminalProgress
    from inspector.report import write_report

    thresholds = thresholds_from_args(args)
    gates = thresholds.given()
    if args.no_quant and any(n in QUANT_GATES for n in gates):
        quant = [n for n in gates if n in QUANT_GATES]
        raise UsageError(f"--no-quant skips the quantization analysis that {', '.join(quant)} needs")

    outputs = [args.output] + ([args.json] if args.json else [])
    if args.json and os.path.abspath(args.json) == os.path.abspath(args.output):
        raise UsageError("-o and --json name the same file")
    for path in outputs:
        check_writable(path)
    t0 = time.perf_counter()
    bar = TerminalProgress("analyze")
    try:
        model, result, npu_report, doc = analysis_from_args(args, progress=bar)
    finally:
        bar.close()
    verdict = evaluate_gates(doc, thresholds) if gates else None
    t1 = time.perf_counter()
    pages = TerminalProgress("report")
    try:
        facts = write_report(args.output, model, result, npu_report, doc, args.page_size, progress=pages,
                             title=args.title, verdict=verdict, json_path=args.json)
    finally:
        pages.close()
    t2 = time.perf_counter()
    print(f"wrote {args.output} ({facts['pages']} pages, {args.page_size}, {facts['bytes'] / 1024:.0f} KiB) "
          f"in {t2 - t1:.2f} s (analysis {t1 - t0:.2f} s)")
    if args.json:
        print(f"wrote {args.json}")
    if verdict is not None:
        print(verdict.summary())
    sys.stdout.flush()
    return EXIT_OK if verdict is None or verdict.passed else EXIT_CHECK_FAILED


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="deployment report as PDF (title page, summary, worst layers, SQNR, fusions, timeline, roofline, all layers)",
        description="Run the analysis (the options of `inspector analyze`) and write the deployment report as a PDF "
        "made with Qt's PDF writer (vector charts, searchable text), optionally with the JSON document. "
        "--no-quant skips the quantization analysis (cost model only), for large models.",
    )
    add_analysis_arguments(p)
    p.add_argument("-o", "--output", required=True, metavar="REPORT.pdf", help="the PDF to write (atomically)")
    p.add_argument("--json", metavar="REPORT.json", help="also write the JSON document (analyze's, plus a 'report' section)")
    p.add_argument("--page-size", type=_page_size, default="A4", metavar="A4|Letter", help="paper size (default A4)")
    p.add_argument("--title", help="title on the title page and in the header (default: 'Deployment report: MODEL')")
    add_gate_arguments(p)
    p.set_defaults(func=cmd_report)
