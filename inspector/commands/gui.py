"""``inspector gui``: the desktop window, optionally with a model and calibration data.

``--screenshot FILE.png`` renders the window with the model loaded and analysed, saves the
image and exits (works without a display: it then renders offscreen).
"""

from __future__ import annotations

import argparse

from inspector.cliutil import UsageError, add_model_arguments


def cmd_gui(args: argparse.Namespace) -> int:
    from inspector.app import run_app

    if args.model and args.sample:
        raise UsageError("give either MODEL or --sample, not both")
    if args.screenshot and not (args.model or args.sample):
        raise UsageError("--screenshot needs a model: pass MODEL (an .onnx file) or --sample NAME")
    if args.screenshot and not args.screenshot.lower().endswith(".png"):
        raise UsageError(f"--screenshot: expected a .png file name, got {args.screenshot!r}")
    if args.sample:
        from engine.samples import get_sample

        get_sample(args.sample)  # ModelError naming the known samples
    return run_app(
        model=args.model,
        sample=args.sample,
        calib=args.calib,
        screenshot=args.screenshot,
        dims=dict(args.dim) or None,
        profile=args.profile,
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "gui",
        help="open the desktop window (also what 'inspector' with no command does)",
        description="Open the Deployment Inspector window. Drop an .onnx model on it to open it, and "
        ".npz/.npy files or a folder of images to use them as calibration data.",
    )
    add_model_arguments(p)
    p.add_argument("--calib", metavar="DATA", help="calibration data: .npz/.npy, or a folder of them or of images")
    p.add_argument("--profile", metavar="NAME", help="NPU profile: a shipped name, 'host', or a .toml file")
    p.add_argument("--screenshot", metavar="FILE.png",
                   help="render the window with the model loaded and analysed to FILE.png, then exit")
    p.set_defaults(func=cmd_gui)
