"""``inspector run``: execute the model on inputs and write its outputs.

With ``--int8`` the integer-exact int8 executor runs instead and the DEQUANTIZED outputs
are written: a float model is calibrated first (``--calib DATA`` and the scheme options of
``inspector analyze``); a QDQ model uses its own scales (``--calib`` is not needed).
"""

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
    from inspector.cliutil import check_writable
    from inspector.progress import TerminalProgress

    model = load_from_args(args)
    check_writable(args.output)  # before any work
    given = read_npz(args.inputs, "input file") if args.inputs else None  # read (and checked) before calibrating
    if given is not None and "labels" in given and "labels" not in model.graph.input_names:
        del given["labels"]  # a data file's labels (as analyze reads them), not an input of the model
        print(f"{args.inputs}: ignoring the array 'labels' (not an input of the model)")
    if args.int8:
        from engine.int8.executor import Int8Executor
        from inspector.commands.analyze import plan_from_args

        bar = TerminalProgress(f"calibrate {model.name}")
        try:
            run_model, plan, facts = plan_from_args(model, args, progress=bar)
        finally:
            bar.close()
        if facts.get("method") == "qdq":
            print("int8: scales from the model's QuantizeLinear/DequantizeLinear nodes")
        else:
            synthetic = " (SYNTHETIC random data: ranges are not representative)" if facts.get("synthetic") else ""
            data = f" of {facts['data']}" if facts.get("data") and not facts.get("synthetic") else ""
            print(f"int8: calibrated with {facts['method']} on {facts['samples']} samples{data}{synthetic}")
    else:
        run_model, plan = model, None
    if given is not None:
        feeds = given
    else:
        feeds = random_feeds(run_model, seed=args.seed)
        print(f"inputs: random (seed {args.seed}); --inputs IN.npz gives your own")
    bar = TerminalProgress(f"run {model.name}")
    try:
        if plan is not None:
            result = Int8Executor(run_model, plan).run(feeds, progress=bar)
            outputs = result.values
        else:
            outputs = executor_for(run_model).run(feeds, progress=bar)
    finally:
        bar.close()
    names = run_model.graph.output_names
    write_npz(args.output, {name: outputs[name] for name in names})
    for name in names:
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
    from inspector.commands.analyze import add_quant_arguments

    p = sub.add_parser(
        "run",
        help="run the float (or, with --int8, the int8) model on inputs and write the outputs",
        description="Run the model on inputs (an .npz with one array per model input; random seeded inputs "
        "without --inputs) and write its outputs to an .npz. With --int8 the integer-exact int8 executor runs "
        "instead and the outputs are dequantized: a QDQ model uses its own scales, a float model is calibrated "
        "first (on --calib, or on a bundled sample's calibration set).",
    )
    add_model_arguments(p)
    p.add_argument("--inputs", metavar="IN.npz", help="one array per model input; random (seeded) inputs if omitted")
    p.add_argument("-o", "--output", metavar="OUT.npz", required=True, help="where to write the outputs")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument(
        "--int8",
        action="store_true",
        help="run the integer-exact int8 executor and write dequantized outputs (float model: needs --calib; "
        "QDQ model: its own scales)",
    )
    add_quant_arguments(p, seed=False)
    p.set_defaults(func=cmd_run)
