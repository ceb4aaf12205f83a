"""The ``inspector`` command line.

Exit codes, for every subcommand: 0 success, 1 a check failed, 2 bad input or usage
(one line on stderr naming the file and the problem; never a traceback, unless the
environment sets INSPECTOR_DEBUG=1).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from typing import Any, Callable, Sequence

import numpy as np

from engine.errors import ModelError

EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Bad command-line usage (exit 2)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message} (see --help)")


def _dim(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"dimension {name} needs an integer value, got {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"dimension {name} must be positive, got {number}")
    return name, number


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """MODEL or --sample NAME, and --dim NAME=VALUE bindings."""
    p.add_argument("model", nargs="?", metavar="MODEL", help="path of an .onnx file")
    p.add_argument("--sample", metavar="NAME", help="a bundled sample instead of MODEL: vit-digits or cnn-digits")
    p.add_argument(
        "--dim",
        action="append",
        type=_dim,
        default=[],
        metavar="NAME=VALUE",
        help="bind a symbolic dimension, e.g. --dim batch=1 --dim seq=128 (repeatable)",
    )


def model_path(args: argparse.Namespace) -> str:
    """The model file the arguments name (MODEL or --sample)."""
    from engine.samples import get_sample

    if args.model and args.sample:
        raise UsageError("give either MODEL or --sample, not both")
    if args.sample:
        return str(get_sample(args.sample).model)
    if not args.model:
        raise UsageError("no model given: pass MODEL (an .onnx file) or --sample NAME")
    return args.model


def load_from_args(args: argparse.Namespace):
    """Load the model the arguments name, with --dim bindings."""
    from engine import load_model

    return load_model(model_path(args), dims=dict(args.dim))


def _fmt_count(n: int | float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)}"


def _fmt_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def _fmt_shape(shape: Sequence[Any] | None) -> str:
    return "?" if shape is None else "(" + ", ".join(str(d) for d in shape) + ")"


# ---------------------------------------------------------------- subcommands


def cmd_info(args: argparse.Namespace) -> int:
    from engine.summary import model_info

    info = model_info(load_from_args(args))
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return EXIT_OK
    out = sys.stdout
    print(f"model      {info.path}", file=out)
    print(f"opset      {info.opset}  (IR {info.ir_version}{', ' + info.producer if info.producer else ''})", file=out)
    print(
        f"nodes      {info.nodes}    params {_fmt_count(info.params)} ({_fmt_bytes(info.param_bytes)})"
        f"    MACs {_fmt_count(info.macs)}{'' if info.shapes_complete else ' (lower bound: some shapes unknown)'}",
        file=out,
    )
    if info.external_weights:
        print(f"external   {info.external_weights} weight tensors in external data (memory-mapped)", file=out)
    if info.symbolic_dims:
        bound = ", ".join(f"{k}={v}" for k, v in info.dims.items()) or "none bound (use --dim NAME=VALUE)"
        print(f"dims       symbolic: {', '.join(info.symbolic_dims)}; {bound}", file=out)
    for title, tensors in (("inputs", info.inputs), ("outputs", info.outputs)):
        print(title, file=out)
        for t in tensors:
            print(f"  {t.name:<24} {str(t.dtype or '?'):<8} {_fmt_shape(t.shape)}", file=out)
    print("op types", file=out)
    for op, count in info.op_types.items():
        print(f"  {op:<24} {count}", file=out)
    if info.unsupported_ops:
        print("unsupported ops (inspection works; execution does not)", file=out)
        for op, why in info.unsupported_ops.items():
            print(f"  {op:<24} {why}", file=out)
    else:
        print("unsupported ops: none", file=out)
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from engine import random_feeds
    from engine.executor import executor_for
    from engine.fileio import read_npz, write_npz
    from inspector.progress import TerminalProgress

    model = load_from_args(args)
    if args.inputs:
        feeds = read_npz(args.inputs, "input file")
    else:
        feeds = random_feeds(model, seed=args.seed)
    plan = executor_for(model)
    bar = TerminalProgress(f"run {model.name}")
    try:
        outputs = plan.run(feeds, progress=bar)
    finally:
        bar.close()
    write_npz(args.output, {name: outputs[name] for name in model.graph.output_names})
    for name in model.graph.output_names:
        value = np.asarray(outputs[name])
        finite = value[np.isfinite(value)] if value.dtype.kind == "f" else value
        summary = (
            f"min {finite.min():.6g} max {finite.max():.6g} mean {finite.mean():.6g}"
            if finite.size and value.dtype.kind in "fiu"
            else ""
        )
        print(f"{name:<24} {str(value.dtype):<8} {_fmt_shape(value.shape):<18} {summary}")
    print(f"wrote {args.output}")
    return EXIT_OK


Command = Callable[[argparse.Namespace], int]


def build_parser() -> argparse.ArgumentParser:
    from inspector import __version__

    parser = _Parser(
        prog="inspector",
        description="Deployment Inspector: int8 NPU deployment analysis of ONNX models.",
    )
    parser.add_argument("--version", action="version", version=f"inspector {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("info", help="op histogram, shapes, parameters, MACs, unsupported ops")
    add_model_arguments(p)
    p.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("run", help="run the float model on inputs and write the outputs")
    add_model_arguments(p)
    p.add_argument("--inputs", metavar="IN.npz", help="one array per model input; random (seeded) inputs if omitted")
    p.add_argument("-o", "--output", metavar="OUT.npz", required=True, help="where to write the outputs")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``inspector``; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            parser.print_help()
            return EXIT_OK
        return int(args.func(args))
    except UsageError as e:
        print(f"inspector: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except ModelError as e:
        print(f"inspector: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("inspector: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print("inspector: error: out of memory", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # last resort: one line, never a traceback for the user
        if os.environ.get("INSPECTOR_DEBUG"):
            traceback.print_exc()
        detail = " ".join(str(e).split())[:300]
        print(f"inspector: internal error: {type(e).__name__}: {detail}", file=sys.stderr)
        return EXIT_BAD_INPUT
