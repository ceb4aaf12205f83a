"""inspector analyze: the cost-model keys (per-layer roofline, fusions, timeline) in its JSON."""

from __future__ import annotations

import json

from inspector.cli import main


def test_no_quant_json_has_cost_model_keys(tmp_path, capsys) -> None:
    out = tmp_path / "a.json"
    assert main(["analyze", "--sample", "cnn-digits", "--dim", "batch=1", "--no-quant", "--profile", "xavier", "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "NPU estimate on xavier" in text
    doc = json.loads(out.read_text())
    assert doc["profile"]["name"] == "xavier"
    assert len(doc["layers"]) == 13
    for layer in doc["layers"]:
        for key in ("est_ns", "bound", "macs", "dram_bytes", "intensity", "unit"):
            assert key in layer
        assert layer["bound"] in ("compute", "memory") and layer["est_ns"] > 0
    assert {l["unit"] for l in doc["layers"]} <= {"mac", "vector", "float"}
    conv = next(l for l in doc["layers"] if l["op_type"] == "Conv")
    assert conv["unit"] == "mac" and conv["macs"] > 0
    assert doc["fusions"], "the CNN sample keeps BatchNorm unfolded: Conv+BN fusions exist"
    for f in doc["fusions"]:
        assert set(f) == {"pattern", "nodes", "dram_bytes_saved", "est_ns_saved"}
        assert f["dram_bytes_saved"] > 0
    tl = doc["timeline"]
    assert set(tl) == {"profile", "total_ns", "total_ns_unfused", "events"}
    assert tl["profile"] == "xavier" and 0 < tl["total_ns"] <= tl["total_ns_unfused"]
    for e in tl["events"]:
        assert e["end_ns"] >= e["start_ns"] >= 0


def test_full_analyze_has_quant_and_cost_keys(tmp_path, capsys) -> None:
    out = tmp_path / "a.json"
    assert main(["analyze", "--sample", "cnn-digits", "--samples", "16", "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    layer = next(l for l in doc["layers"] if l["op_type"] == "Conv")
    assert layer["sqnr_db_isolated"] is not None and layer["est_ns"] > 0 and layer["unit"] == "mac"
    assert doc["timeline"]["profile"] == "journey5"


def test_profile_file_and_bad_profile(tmp_path, capsys) -> None:
    good = tmp_path / "chip.toml"
    good.write_text(
        'name = "my-chip"\nint8_tops = 4\nvector_gops = 100\ndram_gbps = 10\nsram_kib = 256\nop_overhead_ns = 500\n'
    )
    out = tmp_path / "a.json"
    assert main(["analyze", "--sample", "cnn-digits", "--dim", "batch=1", "--no-quant", "--profile", str(good), "--json", str(out)]) == 0
    assert json.loads(out.read_text())["timeline"]["profile"] == "my-chip"
    capsys.readouterr()
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nint8_tops = 4\nbogus = 1\n')
    code = main(["analyze", "--sample", "cnn-digits", "--no-quant", "--profile", str(bad)])
    err = capsys.readouterr().err
    assert code == 2 and str(bad) in err and len(err.strip().splitlines()) == 1
    code = main(["analyze", "--sample", "cnn-digits", "--no-quant", "--profile", "no-such-chip"])
    assert code == 2
