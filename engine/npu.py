"""NPU profiles: the handful of figures the cost model needs about a target chip.

A profile is a TOML file (``resources/npu/*.toml`` ships a few; a user may pass their own)
with these top-level keys, units in the names:

==================  ========  ===============================================================
key                 required  meaning
==================  ========  ===============================================================
``name``            yes       short identifier (a string)
``int8_tops``       yes       dense int8 MAC-array peak, 10^12 ops/s, 2 ops per MAC
``vector_gops``     yes       element-wise / reduction / data-movement unit, 10^9 ops/s
``dram_gbps``       yes       DRAM bandwidth, 10^9 bytes/s (read and write share it)
``sram_kib``        yes       on-chip buffer, KiB (1024 bytes)
``op_overhead_ns``  yes       fixed cost of every launched op, ns
``float_gflops``    no        float unit, 10^9 FLOP/s; 0 (the default) = pure int8 chip
``int16_tops``      no        int16 MAC mode, 10^12 ops/s; 0 = none (int16 runs as four int8 passes)
``host_gflops``     no        host CPU that runs float fallbacks on a pure int8 chip, 10^9 FLOP/s;
                              0 = :data:`DEFAULT_HOST_GFLOPS`
==================  ========  ===============================================================

Required values must be finite and > 0, optional ones finite and >= 0. Unknown keys, missing
keys, bad values and files that are not TOML are a one-line :class:`engine.errors.ModelError`
naming the file and the key.

``measure_host_profile`` builds the ``host`` profile by timing numpy on this machine.
"""

from __future__ import annotations

import functools
import math
import os
import time
import tomllib
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from engine.errors import ModelError

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
PROFILE_DIR = RESOURCES / "npu"
HOST = "host"

# A float fallback on a pure int8 chip runs on the application CPU next to the NPU. When a
# profile does not say how fast that CPU is, assume a quad Cortex-A55 class cluster:
# 4 cores x 1.5 GHz x 8 FP32 FLOP/cycle (128-bit NEON FMA) = 48 GFLOP/s peak.
DEFAULT_HOST_GFLOPS = 48.0

REQUIRED_KEYS = ("name", "int8_tops", "vector_gops", "dram_gbps", "sram_kib", "op_overhead_ns")
OPTIONAL_KEYS = ("float_gflops", "int16_tops", "host_gflops")


@dataclass(frozen=True)
class NpuProfile:
    """One target chip. Rates are peaks; see the module docstring for units."""

    name: str
    int8_tops: float
    vector_gops: float
    dram_gbps: float
    sram_kib: float
    op_overhead_ns: float
    float_gflops: float = 0.0
    int16_tops: float = 0.0
    host_gflops: float = 0.0
    source: str = ""  # the file it came from, or "measured"

    # ------------------------------------------------------------- derived rates (per ns)

    def mac_ops_per_ns(self, element_bytes: int = 1) -> float:
        """MAC-array throughput in ops/ns (2 ops per MAC) for operands of ``element_bytes``.

        1 byte: ``int8_tops``; 2 bytes: ``int16_tops``, or a quarter of ``int8_tops`` when the
        chip has no int16 mode (a 16x16-bit product is four 8x8-bit partial products).
        Wider operands do not run on the MAC array (the cost model sends them to the float unit).
        """
        if element_bytes <= 1:
            return self.int8_tops * 1e3
        if element_bytes == 2:
            return (self.int16_tops if self.int16_tops > 0 else self.int8_tops / 4.0) * 1e3
        raise ValueError(f"the MAC array takes 1- or 2-byte operands, not {element_bytes}")

    @property
    def vector_ops_per_ns(self) -> float:
        return self.vector_gops  # 10^9 ops/s = 1 op/ns

    @property
    def float_flops_per_ns(self) -> float:
        return self.float_gflops

    @property
    def host_flops_per_ns(self) -> float:
        """Host CPU rate for float fallbacks on a pure int8 chip (FLOP/ns)."""
        return self.host_gflops if self.host_gflops > 0 else DEFAULT_HOST_GFLOPS

    @property
    def dram_bytes_per_ns(self) -> float:
        return self.dram_gbps  # 10^9 bytes/s = 1 byte/ns

    @property
    def sram_bytes(self) -> int:
        return int(self.sram_kib * 1024)

    @property
    def has_float_unit(self) -> bool:
        return self.float_gflops > 0

    # ------------------------------------------------------------------------ output

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_toml(self) -> str:
        """The profile as a TOML file that :func:`load_profile` reads back (no ``source``)."""
        lines = [f'name = "{_toml_escape(self.name)}"']
        for key in REQUIRED_KEYS[1:] + OPTIONAL_KEYS:
            value = float(getattr(self, key))
            if key in OPTIONAL_KEYS and value == 0:
                continue
            lines.append(f"{key} = {value!r}")
        return "\n".join(lines) + "\n"


def _toml_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')


# ------------------------------------------------------------------------------ loading


def parse_profile(text: str, path: str = "<string>") -> NpuProfile:
    """Parse and validate profile TOML text; ``path`` names it in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ModelError(f"not a valid TOML file ({' '.join(str(e).split())})", path) from None
    return _validate(data, path)


def _validate(data: dict[str, Any], path: str) -> NpuProfile:
    known = REQUIRED_KEYS + OPTIONAL_KEYS
    for key in data:
        if key not in known:
            raise ModelError(f"unknown key {key!r} in NPU profile (known keys: {', '.join(known)})", path)
    for key in REQUIRED_KEYS:
        if key not in data:
            raise ModelError(f"NPU profile is missing the required key {key!r}", path)
    name = data["name"]
    if not isinstance(name, str) or not name.strip():
        raise ModelError(f"key 'name' must be a non-empty string, got {name!r}", path)
    values: dict[str, float] = {}
    for key in REQUIRED_KEYS[1:] + OPTIONAL_KEYS:
        if key not in data:
            continue
        value = data[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ModelError(f"key {key!r} must be a number, got {value!r}", path)
        value = float(value)
        if not math.isfinite(value):
            raise ModelError(f"key {key!r} must be a finite number, got {value!r}", path)
        if key in REQUIRED_KEYS and value <= 0:
            raise ModelError(f"key {key!r} must be positive, got {value:g}", path)
        if key in OPTIONAL_KEYS and value < 0:
            raise ModelError(f"key {key!r} must be zero or positive, got {value:g}", path)
        values[key] = value
    return NpuProfile(name=name.strip(), source=path, **values)


def load_profile_file(path: str | os.PathLike[str]) -> NpuProfile:
    """Read and validate one profile file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelError("no such NPU profile file", path)
    if os.path.isdir(path):
        raise ModelError("is a folder, not an NPU profile (.toml) file", path)
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise ModelError(f"cannot read NPU profile ({e.strerror or e})", path) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelError("not a valid TOML file (not UTF-8 text)", path) from None
    return parse_profile(text, path)


def shipped_profiles() -> dict[str, NpuProfile]:
    """The profiles in ``resources/npu/``, by file stem, sorted (``host`` is measured, not shipped)."""
    return {p.stem: load_profile_file(p) for p in sorted(PROFILE_DIR.glob("*.toml"))}


def profile_names() -> list[str]:
    """Names :func:`load_profile` accepts besides a path: the shipped stems and ``host``."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml")) + [HOST]


def load_profile(name_or_path: str | os.PathLike[str]) -> NpuProfile:
    """A profile by shipped name (file stem or its ``name`` key), ``"host"``, or a path to a .toml file.

    ``"host"`` runs :func:`measure_host_profile` once per process (a few seconds).
    """
    if isinstance(name_or_path, os.PathLike):
        return load_profile_file(name_or_path)
    text = str(name_or_path)
    if text == HOST:
        return _cached_host_profile()
    if text.endswith(".toml") or os.sep in text or "/" in text or os.path.exists(text):
        return load_profile_file(text)
    shipped = PROFILE_DIR / f"{text}.toml"
    if shipped.is_file():
        return load_profile_file(shipped)
    for profile in shipped_profiles().values():
        if profile.name == text:
            return profile
    raise ModelError(
        f"unknown NPU profile {text!r} (shipped: {', '.join(profile_names())}; or pass a .toml file)"
    )


@functools.lru_cache(maxsize=1)
def _cached_host_profile() -> NpuProfile:
    return measure_host_profile()


# ---------------------------------------------------------------------- host benchmark


def _best_time(fn: Callable[[], object], budget_s: float, min_reps: int = 3) -> float:
    """Shortest wall time of ``fn`` in seconds, repeating until ``budget_s`` is spent (>= min_reps)."""
    best = math.inf
    deadline = time.perf_counter() + budget_s
    reps = 0
    while reps < min_reps or time.perf_counter() < deadline:
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return best


def _cache_bytes() -> tuple[int, int]:
    """(per-core L2, last-level cache) in bytes from the OS; 0 when it does not say."""
    def conf(name: str) -> int:
        try:
            return max(0, int(os.sysconf(name)))
        except (ValueError, OSError, AttributeError):
            return 0

    l2 = conf("SC_LEVEL2_CACHE_SIZE")
    llc = max(conf("SC_LEVEL3_CACHE_SIZE"), l2)
    if l2 == 0:
        for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
            try:
                level = int((index / "level").read_text())
                size = (index / "size").read_text().strip().upper()
            except (OSError, ValueError):
                continue
            scale = {"K": 1024, "M": 1024 * 1024}.get(size[-1:], 1)
            nbytes = int(size.rstrip("KM")) * scale if size.rstrip("KM").isdigit() else 0
            if level == 2:
                l2 = max(l2, nbytes)
            llc = max(llc, nbytes)
    return l2, llc


def _copy_gbps(copy_bytes: int, budget_s: float) -> float:
    """DRAM bandwidth in GB/s from copying ``copy_bytes``: bytes read plus bytes written per second.

    Allocating and touching the buffers counts against ``budget_s``.
    """
    t0 = time.perf_counter()
    src = np.ones(copy_bytes // 8, dtype=np.float64)
    dst = np.empty_like(src)
    setup_s = time.perf_counter() - t0
    copy_s = _best_time(lambda: np.copyto(dst, src), max(0.0, budget_s - setup_s), min_reps=2)
    return 2.0 * src.nbytes / copy_s / 1e9


# when the OS reports no cache sizes: a typical per-core L2 of current x86 and Arm cores
FALLBACK_L2_BYTES = 1 << 20


def measure_host_profile(seconds_budget: float = 3.0) -> NpuProfile:
    """Time numpy on this machine and describe it as a profile named ``host``.

    - ``float_gflops``: float32 GEMM (512 x 512 x 512) throughput, 2 FLOP per MAC. numpy has
      no int8 BLAS, so ``int8_tops`` is the same rate (int8 models run at float speed here)
      and ``host_gflops`` too.
    - ``vector_gops``: element-wise adds on cache-resident float32 arrays (64 KiB each).
    - ``dram_gbps``: a large copy (at least the last-level cache, 64 to 256 MiB): bytes read
      plus bytes written over the time.
    - ``op_overhead_ns``: a numpy add of one element (the fixed cost of launching an op).
    - ``sram_kib``: the per-core L2 cache as the OS reports it.

    Each measurement keeps the best of repeated runs within its share of ``seconds_budget``
    (at least two or three runs each, so a tiny budget still gives figures).
    """
    if not seconds_budget > 0:
        raise ValueError(f"seconds_budget must be positive, got {seconds_budget!r}")
    share = seconds_budget / 5.0
    l2, llc = _cache_bytes()
    rng = np.random.default_rng(0)

    n = 512
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    c = np.empty((n, n), dtype=np.float32)
    gemm_s = _best_time(lambda: np.matmul(a, b, out=c), share)
    gflops = 2.0 * n**3 / gemm_s / 1e9

    m = 16384  # 64 KiB per float32 array: three arrays stay in L1/L2
    x = rng.standard_normal(m, dtype=np.float32)
    y = rng.standard_normal(m, dtype=np.float32)
    z = np.empty(m, dtype=np.float32)
    add_s = _best_time(lambda: np.add(x, y, out=z), share)
    vector_gops = m / add_s / 1e9

    dram_gbps = _copy_gbps(int(min(max(llc, 64 << 20), 256 << 20)), 2 * share)

    one_a = np.ones(1, dtype=np.float32)
    one_b = np.ones(1, dtype=np.float32)
    one_c = np.empty(1, dtype=np.float32)
    calls = 1000

    def tiny_ops() -> None:
        for _ in range(calls):
            np.add(one_a, one_b, out=one_c)

    overhead_ns = _best_time(tiny_ops, share) / calls * 1e9

    return NpuProfile(
        name=HOST,
        int8_tops=gflops / 1e3,
        vector_gops=vector_gops,
        dram_gbps=dram_gbps,
        sram_kib=(l2 or FALLBACK_L2_BYTES) / 1024,
        op_overhead_ns=overhead_ns,
        float_gflops=gflops,
        host_gflops=gflops,
        source="measured",
    )

