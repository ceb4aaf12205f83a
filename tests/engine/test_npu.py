"""NPU profiles: shipped files, loading by name or path, one-line errors for bad files,
and the host micro-benchmark."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from engine.errors import ModelError
from engine.npu import (
    OPTIONAL_KEYS,
    PROFILE_DIR,
    REQUIRED_KEYS,
    NpuProfile,
    load_profile,
    measure_host_profile,
    parse_profile,
    profile_names,
    shipped_profiles,
)

GOOD = """
name = "mychip"
int8_tops = 4.0
vector_gops = 100
dram_gbps = 12.8
sram_kib = 1024
op_overhead_ns = 500
"""


def write(tmp_path: Path, text: str, name: str = "chip.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_shipped_profiles_cover_the_four_classes() -> None:
    profiles = shipped_profiles()
    assert set(profiles) == {"journey5", "xavier", "rpi3", "v100"}
    assert profiles["journey5"].int8_tops == 128 and not profiles["journey5"].has_float_unit
    assert profiles["xavier"].dram_gbps == pytest.approx(137, abs=1)
    assert 28 <= profiles["xavier"].int8_tops <= 32
    rpi = profiles["rpi3"]
    assert (rpi.float_gflops, rpi.dram_gbps, rpi.sram_kib) == (38.4, 3.6, 512)
    v100 = profiles["v100"]
    assert (v100.int8_tops, v100.dram_gbps, v100.sram_kib) == (120, 900, 36 * 1024)
    for stem, p in profiles.items():
        assert p.name == stem
        for key in REQUIRED_KEYS[1:]:
            assert getattr(p, key) > 0


def test_every_shipped_value_has_a_comment_stating_its_source() -> None:
    for path in PROFILE_DIR.glob("*.toml"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            key = line.split("=")[0].strip()
            if key in REQUIRED_KEYS[1:] + OPTIONAL_KEYS:
                assert i > 0 and lines[i - 1].startswith("#"), f"{path.name}: {key} has no source comment"


def test_load_by_stem_name_path_and_host(tmp_path: Path) -> None:
    assert load_profile("v100").dram_gbps == 900
    assert load_profile(PROFILE_DIR / "rpi3.toml").name == "rpi3"
    p = load_profile(str(write(tmp_path, GOOD)))
    assert (p.name, p.int8_tops, p.float_gflops, p.int16_tops) == ("mychip", 4.0, 0.0, 0.0)
    assert "host" in profile_names()
    with pytest.raises(ModelError, match="unknown NPU profile 'nochip'"):
        load_profile("nochip")


def test_derived_rates_and_units() -> None:
    p = parse_profile(GOOD)
    assert p.mac_ops_per_ns(1) == 4000.0  # 4 TOPS = 4000 ops/ns
    assert p.mac_ops_per_ns(2) == 1000.0  # no int16 mode: four int8 passes
    assert parse_profile(GOOD + "int16_tops = 2\n").mac_ops_per_ns(2) == 2000.0
    assert p.dram_bytes_per_ns == 12.8 and p.sram_bytes == 1024 * 1024
    assert p.host_flops_per_ns > 0  # default host CPU for float fallbacks


def test_to_toml_round_trips() -> None:
    for p in shipped_profiles().values():
        back = parse_profile(p.to_toml())
        assert back.to_dict() == {**p.to_dict(), "source": "<string>"}


@pytest.mark.parametrize(
    "text, words",
    [
        (GOOD + "turbo = 1\n", "unknown key 'turbo'"),
        (GOOD.replace("dram_gbps = 12.8\n", ""), "missing the required key 'dram_gbps'"),
        (GOOD.replace("sram_kib = 1024", "sram_kib = 0"), "key 'sram_kib' must be positive"),
        (GOOD.replace("op_overhead_ns = 500", "op_overhead_ns = -5"), "key 'op_overhead_ns' must be positive"),
        (GOOD + "float_gflops = -1\n", "key 'float_gflops' must be zero or positive"),
        (GOOD.replace("int8_tops = 4.0", 'int8_tops = "fast"'), "key 'int8_tops' must be a number"),
        (GOOD.replace("int8_tops = 4.0", "int8_tops = true"), "key 'int8_tops' must be a number"),
        (GOOD.replace("int8_tops = 4.0", "int8_tops = inf"), "key 'int8_tops' must be a finite number"),
        (GOOD.replace('name = "mychip"', "name = 3"), "key 'name' must be a non-empty string"),
        (GOOD + "[extra]\nx = 1\n", "unknown key 'extra'"),
        ("name = \n int8_tops = = 4", "not a valid TOML file"),
        ("\x00\x01binary", "not a valid TOML file"),
    ],
    ids=["unknown", "missing", "zero", "negative", "negative-optional", "string", "bool", "inf", "name",
         "table", "syntax", "binary"],
)
def test_bad_profile_files_give_a_one_line_model_error(tmp_path: Path, text: str, words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ModelError) as info:
        load_profile(path)
    message = str(info.value)
    assert words in message
    assert str(path) in message and "\n" not in message


def test_missing_file_and_non_utf8(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no such NPU profile file"):
        load_profile(tmp_path / "absent.toml")
    path = tmp_path / "latin1.toml"
    path.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(ModelError, match="not a valid TOML file"):
        load_profile(path)


def test_measure_host_profile_gives_a_usable_profile() -> None:
    p = measure_host_profile(seconds_budget=0.5)
    assert isinstance(p, NpuProfile) and p.name == "host" and p.source == "measured"
    for key in REQUIRED_KEYS[1:] + ("float_gflops",):
        value = getattr(p, key)
        assert math.isfinite(value) and value > 0, key
    # the measured profile is a valid profile file
    assert parse_profile(p.to_toml()).int8_tops == p.int8_tops
    with pytest.raises(ValueError):
        measure_host_profile(seconds_budget=0)
