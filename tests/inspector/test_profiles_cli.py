"""inspector profiles / profile-host and the host profile cache."""

from __future__ import annotations

import json

from engine.npu import load_profile_file
from inspector.cli import main
from inspector.profiles import host_profile_path, resolve_profile


def test_profiles_lists_shipped(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert main(["profiles", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {"journey5", "xavier", "rpi3", "v100"} <= set(data)
    assert data["journey5"]["int8_tops"] == 128
    assert "host" not in data


def test_profile_host_writes_cache_and_resolve_uses_it(capsys, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    assert main(["profile-host", "--seconds", "0.3"]) == 0
    path = host_profile_path()
    assert path.is_file() and str(tmp_path) in str(path)
    cached = load_profile_file(path)
    assert cached.int8_tops > 0 and cached.dram_gbps > 0
    assert resolve_profile("host") == cached  # read back, not measured again
    assert main(["profiles", "--json"]) == 0
    capsys.readouterr()


def test_bad_profile_file_is_exit_2(capsys, tmp_path) -> None:
    bad = tmp_path / "chip.toml"
    bad.write_text('name = "x"\nint8_tops = -1\n')
    from inspector.cliutil import UsageError  # noqa: F401  (import check only)
    from engine import ModelError

    try:
        resolve_profile(str(bad))
    except ModelError as e:
        assert str(bad) in str(e) and "\n" not in str(e)
    else:
        raise AssertionError("a negative int8_tops must be refused")
