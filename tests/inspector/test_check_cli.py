"""``inspector check``: exit codes, one line per gate, --config, JUnit/JSON outputs, the example script."""

from __future__ import annotations

import importlib.util
import json
import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.builders import matmul_relu, save
from tests.inspector.cli_helpers import assert_one_line_error, run_cli

ROOT = Path(__file__).resolve().parents[2]
ALL_GATES = ["--min-cosine", "0.9", "--min-sqnr-db", "10", "--max-accuracy-drop", "5", "--max-latency-ms", "10",
             "--min-layer-sqnr-db", "15", "--max-float-ops", "0"]
FAST = ["--samples", "16"]


def _gate_lines(out: str) -> dict[str, str]:
    return {ln.split()[1]: ln for ln in out.splitlines() if ln.startswith(("PASS ", "FAIL "))}


def test_all_gates_pass_on_the_cnn_sample(tmp_path, capsys) -> None:
    junit, js = tmp_path / "gate.xml", tmp_path / "gate.json"
    code, out, err = run_cli(capsys, "check", "--sample", "cnn-digits", *FAST, *ALL_GATES,
                          "--junit", str(junit), "--json", str(js))
    assert code == 0, out + err
    lines = _gate_lines(out)
    assert list(lines) == ["min_cosine", "min_sqnr_db", "max_accuracy_drop", "max_latency_ms",
                           "min_layer_sqnr_db", "max_float_ops"]
    assert all(ln.startswith("PASS") for ln in lines.values())
    assert ">= 0.9" in lines["min_cosine"] and "pp <= 5 pp" in lines["max_accuracy_drop"]
    assert "check: PASSED (6 gates)" in out
    root = ET.parse(junit).getroot()
    cases = root.findall("./testsuite/testcase")
    assert len(cases) == 6 and root.get("failures") == "0"
    doc = json.loads(js.read_text())
    assert doc["passed"] is True and doc["thresholds"]["min_layer_sqnr_db"] == 15.0
    by_name = {r["name"]: r for r in doc["results"]}
    assert by_name["max_accuracy_drop"]["measured"] <= 5.0 and by_name["max_float_ops"]["measured"] == 0
    assert [n for n in os.listdir(tmp_path) if n.startswith(".tmp-")] == []


def test_a_failing_gate_exits_1_and_names_the_layer(tmp_path, capsys) -> None:
    junit = tmp_path / "gate.xml"
    code, out, err = run_cli(capsys, "check", "--sample", "cnn-digits", *FAST, "--min-cosine", "0.9",
                          "--min-layer-sqnr-db", "60", "--junit", str(junit))
    assert code == 1, out + err
    assert err == ""
    lines = _gate_lines(out)
    assert lines["min_cosine"].startswith("PASS")
    fail = lines["min_layer_sqnr_db"]
    assert fail.startswith("FAIL") and "< 60 dB" in fail and "layer /" in fail and "isolated" in fail
    assert "check: FAILED (1 of 2 gates: min_layer_sqnr_db)" in out
    cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
    assert cases["min_layer_sqnr_db"].find("failure") is not None and cases["min_cosine"].find("failure") is None


def test_config_file_and_command_line_override(tmp_path, capsys) -> None:
    config = tmp_path / "gate.toml"
    config.write_text("min_cosine = 1.0\nmax_latency_ms = 1000.0\n")
    model = save(matmul_relu(batch=2, k=16, n=8), tmp_path / "m.onnx")
    code, out, _ = run_cli(capsys, "check", model, "--samples", "8", "--config", str(config))
    assert code == 1 and _gate_lines(out)["min_cosine"].startswith("FAIL")  # int8 is never exactly 1.0
    assert "SYNTHETIC" in out  # no --calib: the gate says its data is synthetic
    code, out, _ = run_cli(capsys, "check", model, "--samples", "8", "--config", str(config), "--min-cosine", "0.5")
    assert code == 0, out
    lines = _gate_lines(out)
    assert ">= 0.5" in lines["min_cosine"] and lines["max_latency_ms"].startswith("PASS")


def test_no_quant_checks_cost_gates_only(tmp_path, capsys) -> None:
    code, out, err = run_cli(capsys, "check", "--sample", "vit-digits", "--no-quant", "--max-latency-ms", "1e-6")
    assert code == 1 and "FAIL  max_latency_ms" in out, out + err
    code, _, err = run_cli(capsys, "check", "--sample", "vit-digits", "--no-quant", "--min-sqnr-db", "20")
    assert code == 2
    assert_one_line_error(err, "--no-quant", "min_sqnr_db")


@pytest.mark.parametrize(
    "argv, needles",
    [
        (["--sample", "cnn-digits"], ["no gates to check", "--min-cosine"]),
        (["--sample", "cnn-digits", "--min-cosine", "2"], ["--min-cosine", "[-1, 1]"]),
        (["--sample", "cnn-digits", "--max-float-ops", "-1"], ["--max-float-ops", "at least 0"]),
        (["--sample", "cnn-digits", "--min-sqnr-db", "nan"], ["--min-sqnr-db", "finite"]),
        (["--sample", "cnn-digits", "--min-sqnr-db", "x"], ["--min-sqnr-db", "invalid float"]),
        (["MODEL", "--max-accuracy-drop", "1"], ["--max-accuracy-drop", "--labels"]),
        (["--sample", "cnn-digits", "--min-cosine", "0.5", "--config", "NOPE.toml"], ["NOPE.toml", "no such file"]),
        (["does-not-exist.onnx", "--min-cosine", "0.5"], ["does-not-exist.onnx", "no such file"]),
    ],
    ids=["no-gates", "cosine-range", "negative-count", "nan", "not-a-number", "accuracy-without-labels",
         "missing-config", "missing-model"],
)
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, argv, needles) -> None:
    argv = [str(tmp_path / a) if a in ("MODEL", "NOPE.toml") else a for a in argv]
    if str(tmp_path / "MODEL") in argv:
        save(matmul_relu(batch=2), argv[0])
    code, _, err = run_cli(capsys, "check", *argv)
    assert code == 2
    assert_one_line_error(err, *needles)


def test_bad_config_file_exits_2_naming_it(tmp_path, capsys) -> None:
    config = tmp_path / "gate.toml"
    config.write_text("min_cosine = 0.9\nmax_latency = 3\n")
    code, _, err = run_cli(capsys, "check", "--sample", "cnn-digits", "--config", str(config))
    assert code == 2
    assert_one_line_error(err, str(config), "unknown key 'max_latency'")


def test_unwritable_outputs_exit_2_and_leave_nothing(tmp_path, capsys) -> None:
    missing = tmp_path / "no-such-dir" / "gate.xml"
    code, out, err = run_cli(capsys, "check", "--sample", "cnn-digits", "--min-cosine", "0.5", "--junit", str(missing))
    assert code == 2 and out == ""  # refused before the analysis runs
    assert_one_line_error(err, str(missing), "--junit", "does not exist")
    folder = tmp_path / "out"
    folder.mkdir()
    code, _, err = run_cli(capsys, "check", "--sample", "cnn-digits", "--min-cosine", "0.5", "--json", str(folder))
    assert code == 2
    assert_one_line_error(err, "is a folder")


def test_read_only_folder_exits_2_and_leaves_nothing(tmp_path, capsys) -> None:
    ro = tmp_path / "ro"
    ro.mkdir()
    os.chmod(ro, 0o500)
    try:
        if os.access(ro, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        code, _, err = run_cli(capsys, "check", "--sample", "cnn-digits", "--min-cosine", "0.5", "--junit", str(ro / "g.xml"))
        assert code == 2 and os.listdir(ro) == []
        assert_one_line_error(err, "not writable")
    finally:
        os.chmod(ro, 0o700)


def test_example_script_runs_the_python_api(tmp_path, monkeypatch, capsys) -> None:
    """docs/examples/gate.py: the documented Python API end to end (exit code, lines, JUnit)."""
    spec = importlib.util.spec_from_file_location("gate_example", ROOT / "docs" / "examples" / "gate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    junit = tmp_path / "report.xml"
    code = module.main(["--junit", str(junit)])
    out = capsys.readouterr().out
    assert code in (0, 1)
    assert len(_gate_lines(out)) == 6 and ("check: PASSED" in out) == (code == 0)
    assert len(ET.parse(junit).getroot().findall("./testsuite/testcase")) == 6
