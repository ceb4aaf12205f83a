"""Subcommands of ``inspector``: one module each, with ``register(subparsers)``.

Adding a subcommand is adding a module here; the command line finds it by itself.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil


def register_all(sub: argparse._SubParsersAction) -> None:
    """Call ``register`` of every module in this package, in name order."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        module.register(sub)
