"""``inspector info``: a model at a glance."""

from __future__ import annotations

import argparse
import json
import sys

from inspector.cliutil import (
    EXIT_OK,
    add_model_arguments,
    fmt_bytes,
    fmt_count,
    fmt_shape,
    load_from_args,
)


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
        f"nodes      {info.nodes}    params {fmt_count(info.params)} ({fmt_bytes(info.param_bytes)})"
        f"    MACs {fmt_count(info.macs)}{'' if info.shapes_complete else ' (lower bound: some shapes unknown)'}",
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
            print(f"  {t.name:<24} {str(t.dtype or '?'):<8} {fmt_shape(t.shape)}", file=out)
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


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="op histogram, shapes, parameters, MACs, unsupported ops")
    add_model_arguments(p)
    p.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    p.set_defaults(func=cmd_info)
