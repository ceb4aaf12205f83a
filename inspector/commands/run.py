"""``inspector run``: execute the model on inputs and write its outputs."""

from __future__ import annotations

import argparse

import numpy as np

from inspector.cliutil import (
    EXIT_OK,
    add_model_arguments,
    fmt_shape,
    load_from_args,
)


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
        print(f"{name:<24} {str(value.dtype):<8} {fmt_shape(value.shape):<18} {summary}")
    print(f"wrote {args.output}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run the float model on inputs and write the outputs")
    add_model_arguments(p)
    p.add_argument("--inputs", metavar="IN.npz", help="one array per model input; random (seeded) inputs if omitted")
    p.add_argument("-o", "--output", metavar="OUT.npz", required=True, help="where to write the outputs")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.set_defaults(func=cmd_run)
