"""The ``inspector`` command line.

With no subcommand, ``inspector`` opens the desktop window (``inspector gui``).

Exit codes, for every subcommand: 0 success, 1 a check failed, 2 bad input or usage
(one line on stderr naming the file and the problem; never a traceback, unless the
environment sets INSPECTOR_DEBUG=1). Subcommands live in ``inspector.commands``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import traceback
from typing import Sequence

from engine.errors import ModelError
from inspector.cliutil import EXIT_BAD_INPUT, UsageError, _Parser


def build_parser() -> argparse.ArgumentParser:
    from inspector import __version__
    from inspector.commands import register_all

    parser = _Parser(
        prog="inspector",
        description="Deployment Inspector: int8 NPU deployment analysis of ONNX models.",
    )
    parser.add_argument("--version", action="version", version=f"inspector {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    register_all(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``inspector``; returns the exit code."""
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        if getattr(args, "func", None) is None:
            # no subcommand: open the desktop window (--help and --version exit in parse_args)
            from inspector.app import run_app

            return run_app()
        import numpy as np

        # NaN/Inf in a model's weights or data is reported by the analysis itself; numpy's
        # floating-point RuntimeWarnings would only add multi-line noise to stderr
        with np.errstate(all="ignore"):
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
    except BrokenPipeError:
        # the reader of stdout went away (`inspector info M | head`): stop quietly, and keep
        # Python's exit-time flush of stdout from failing again
        with contextlib.suppress(OSError, ValueError):
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
        print("inspector: output closed early (broken pipe)", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # last resort: one line, never a traceback for the user
        if os.environ.get("INSPECTOR_DEBUG"):
            traceback.print_exc()
        detail = " ".join(str(e).split())[:300]
        print(f"inspector: internal error: {type(e).__name__}: {detail}", file=sys.stderr)
        return EXIT_BAD_INPUT
