"""``inspector profiles`` and ``inspector profile-host``: the NPU profiles the cost model uses."""

from __future__ import annotations

import argparse
import json

from inspector.cliutil import EXIT_OK


def cmd_profiles(args: argparse.Namespace) -> int:
    from engine.npu import shipped_profiles, load_profile_file
    from inspector.profiles import host_profile_path

    profiles = dict(shipped_profiles())
    host_path = host_profile_path()
    if host_path.is_file():
        profiles["host"] = load_profile_file(host_path)
    if args.json:
        print(json.dumps({name: p.to_dict() for name, p in profiles.items()}, indent=2))
        return EXIT_OK
    print(f"{'profile':<10} {'int8 TOPS':>10} {'vector GOPS':>12} {'DRAM GB/s':>10} {'SRAM KiB':>10} {'overhead ns':>12} {'float GFLOP/s':>14}  name")
    for key, p in profiles.items():
        print(
            f"{key:<10} {p.int8_tops:>10.3g} {p.vector_gops:>12.4g} {p.dram_gbps:>10.4g} {p.sram_kib:>10.6g} "
            f"{p.op_overhead_ns:>12.4g} {p.float_gflops:>14.4g}  {p.name}"
        )
    if "host" not in profiles:
        print("host       (not measured yet: run `inspector profile-host`)")
    return EXIT_OK


def cmd_profile_host(args: argparse.Namespace) -> int:
    from inspector.profiles import measure_and_cache_host

    profile, path = measure_and_cache_host(args.seconds, args.output)
    print(profile.to_toml().rstrip())
    print(f"wrote {path}")
    return EXIT_OK


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("profiles", help="list the NPU profiles (shipped, and the measured host)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_profiles)

    p = sub.add_parser("profile-host", help="measure this machine (GEMM, bandwidth, op overhead) as the 'host' profile")
    p.add_argument("--seconds", type=float, default=3.0, help="time budget of the micro-benchmark (default 3)")
    p.add_argument("-o", "--output", metavar="FILE.toml", help="where to write it (default: the user's config folder)")
    p.set_defaults(func=cmd_profile_host)
