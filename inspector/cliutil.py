"""Shared pieces of the ``inspector`` command line (arguments, model loading, formatting).

Exit codes, for every subcommand: 0 success, 1 a check failed, 2 bad input or usage
(one line on stderr naming the file and the problem; never a traceback, unless the
environment sets INSPECTOR_DEBUG=1).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
from typing import Any, Sequence

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


def fmt_count(n: int | float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}"
    return f"{int(n)}"


def fmt_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"


def fmt_shape(shape: Sequence[Any] | None) -> str:
    return "?" if shape is None else "(" + ", ".join(str(d) for d in shape) + ")"


def check_writable(path: str, option: str = "") -> None:
    """Fail early (ModelError naming ``path`` and the ``option`` that gave it) when ``path``
    cannot be written: its folder is missing or read-only, or it is a folder. Probes the
    folder with a temporary file it removes."""
    from engine.errors import ModelError

    what = f"cannot write {option}" if option else "cannot write"
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise ModelError(f"{what}: is a folder", path)
    if not os.path.isdir(folder):
        raise ModelError(f"{what}: the folder does not exist", path)
    try:
        fd, probe = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    except OSError as e:
        raise ModelError(f"{what}: the folder is not writable ({e.strerror or e})", path) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.remove(probe)
