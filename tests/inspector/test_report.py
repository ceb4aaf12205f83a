"""``inspector report`` and :func:`inspector.report.write_report`: the PDF's text, fonts, page
sizes and length, the JSON document, atomic output, and the report off the GUI thread.

PDF checks use poppler (pdftotext, pdfinfo, pdffonts; installed by scripts/bootstrap.sh).
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import onnx
import pytest

from inspector.cli import main
from tests.inspector.cli_helpers import run_cli

pytestmark = pytest.mark.skipif(
    not all(shutil.which(t) for t in ("pdftotext", "pdfinfo", "pdffonts")),
    reason="poppler-utils (pdftotext, pdfinfo, pdffonts) not installed: run scripts/bootstrap.sh",
)

CJK_TITLE = "部署报告 ViT 数字识别"


def _pdftotext(path: Path, first: int | None = None, last: int | None = None) -> str:
    cmd = ["pdftotext", "-layout"]
    if first is not None:
        cmd += ["-f", str(first)]
    if last is not None:
        cmd += ["-l", str(last)]
    return subprocess.run(cmd + [str(path), "-"], check=True, capture_output=True, text=True).stdout


def _pdfinfo(path: Path) -> dict[str, str]:
    out = subprocess.run(["pdfinfo", str(path)], check=True, capture_output=True, text=True).stdout
    return {k.strip(): v.strip() for k, _, v in (line.partition(":") for line in out.splitlines()) if v}


def _pages(path: Path) -> int:
    return int(_pdfinfo(path)["Pages"])


@pytest.fixture(scope="module")
def vit_report(tmp_path_factory, qapp) -> dict:
    """One full report of the bundled ViT (quantization analysis, A4, Chinese title) and the
    ``analyze --json`` document of the same run options."""
    folder = tmp_path_factory.mktemp("vit-report")
    pdf, js, analyzed = folder / "vit.pdf", folder / "vit.json", folder / "analyze.json"
    t0 = time.perf_counter()
    code = main(["report", "--sample", "vit-digits", "-o", str(pdf), "--json", str(js), "--title", CJK_TITLE])
    seconds = time.perf_counter() - t0
    assert code == 0
    assert main(["analyze", "--sample", "vit-digits", "--json", str(analyzed)]) == 0
    print(f"vit-digits report (analysis + PDF): {seconds:.2f} s, {_pages(pdf)} pages, {pdf.stat().st_size / 1024:.0f} KiB")
    return {"pdf": pdf, "json": json.loads(js.read_text()), "analyze": json.loads(analyzed.read_text()),
            "text": _pdftotext(pdf), "folder": folder}


def test_pdf_text_holds_the_title_page_facts_and_the_findings(vit_report) -> None:
    from engine.samples import get_sample

    text = vit_report["text"]
    doc = vit_report["json"]
    model_file = get_sample("vit-digits").model
    sha = hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert "vit-digits" in text
    assert sha in text
    assert doc["report"]["sha256"] == sha
    assert CJK_TITLE in text
    assert "opset 17" in text
    worst = min((l for l in doc["layers"] if l.get("sqnr_db_isolated") is not None), key=lambda l: l["sqnr_db_isolated"])
    assert worst["name"] in text
    patterns = {f["pattern"] for f in doc["fusions"]}
    assert patterns, "the ViT sample has fusions"
    for pattern in patterns:
        assert pattern in text, pattern
    for finding in doc["findings"]:
        assert finding["node"] in text
    # accuracy float vs int8 and the output's SQNR, as numbers the JSON holds
    out = doc["outputs"][0]
    assert f"float {100 * out['accuracy_float']:.2f} % vs int8 {100 * out['accuracy_int8']:.2f} %" in text
    assert f"SQNR {out['sqnr_db']:.1f} dB" in text
    # no ligature glyphs: "float" and "file" must stay searchable
    assert "\ufb01" not in text and "\ufb02" not in text
    assert "Page 1 of" in text
    # fused units: counted as units by op type, their members named, the estimate's batch said
    assert any(l.get("fused_kind") == "bias" for l in doc["layers"])
    flat = " ".join(text.split())
    assert "MatMul + bias unit" in flat and "GELU unit" in flat
    assert "·B: part of a MatMul + bias unit" in flat
    assert doc["assumed_dims"] == {"batch": 1} and "batch=1 assumed" in flat


def test_pdf_embeds_a_cjk_font_and_has_many_pages(vit_report) -> None:
    from inspector.report import cjk_font_families

    assert cjk_font_families(), "no font covers Chinese: install fonts-wqy-microhei (scripts/bootstrap.sh)"
    fonts = subprocess.run(["pdffonts", str(vit_report["pdf"])], check=True, capture_output=True, text=True).stdout
    rows = [line.split() for line in fonts.splitlines()[2:] if line.strip()]
    cjk = [r for r in rows if re.search(r"WenQuanYi|CJK|Droid|Hei|Ming|Noto", r[0])]
    assert cjk, fonts
    # columns: name type... encoding emb sub uni object ID; "emb" is the 4th from the end
    assert all(r[-5] == "yes" for r in cjk), fonts
    assert all(r[-5] == "yes" for r in rows), "every font is embedded"
    info = _pdfinfo(vit_report["pdf"])
    assert int(info["Pages"]) > 3
    assert "595 x 842" in info["Page size"]  # A4 in points
    assert info["Title"] == CJK_TITLE
    assert vit_report["pdf"].stat().st_size < 1.5 * 2**20


def test_json_is_the_analyze_document_plus_a_report_section(vit_report) -> None:
    doc, analyzed = vit_report["json"], vit_report["analyze"]
    assert set(doc) == set(analyzed) | {"report"}
    assert set(doc["layers"][0]) == set(analyzed["layers"][0])
    assert [l["name"] for l in doc["layers"]] == [l["name"] for l in analyzed["layers"]]
    assert doc["fusions"] == analyzed["fusions"]
    report = doc["report"]
    for key in ("title", "model_name", "sha256", "opset", "date", "profile", "scheme", "calibration_method",
                "calibration_samples", "app_version", "page_size", "pages"):
        assert key in report, key
    assert report["title"] == CJK_TITLE
    assert report["pages"] == _pages(vit_report["pdf"])
    assert report["calibration_samples"] == analyzed["calibration"]["samples"]
    assert "verdict" not in report  # no gates given: no verdict


def test_no_temporary_files_left(vit_report) -> None:
    assert sorted(p.name for p in vit_report["folder"].iterdir()) == ["analyze.json", "vit.json", "vit.pdf"]


def test_letter_and_a4_differ_and_gates_give_the_verdict(tmp_path, capsys, qapp) -> None:
    a4, letter, js = tmp_path / "a4.pdf", tmp_path / "letter.pdf", tmp_path / "letter.json"
    code, _out, err = run_cli(capsys, "report", "--sample", "vit-digits", "--no-quant", "-o", str(a4))
    assert code == 0, err
    # a latency budget of 1 ns fails: exit 1, the report is still written with the verdict
    code, out, err = run_cli(capsys, "report", "--sample", "vit-digits", "--no-quant", "--page-size", "letter",
                          "-o", str(letter), "--json", str(js), "--max-latency-ms", "0.000001", "--max-float-ops", "1000")
    assert code == 1, err
    assert "FAILED" in out and "max_latency_ms" in out
    assert "595 x 842" in _pdfinfo(a4)["Page size"]
    assert "612 x 792" in _pdfinfo(letter)["Page size"]
    text = _pdftotext(letter)
    assert "Verdict" in text and "FAIL" in text and "max_latency_ms" in text and "max_float_ops" in text
    assert "analysis skipped (--no-quant)" in text
    verdict = json.loads(js.read_text())["report"]["verdict"]
    assert verdict["passed"] is False
    assert {r["name"]: r["passed"] for r in verdict["results"]} == {"max_latency_ms": False, "max_float_ops": True}


def test_quant_gates_with_no_quant_are_a_usage_error(tmp_path, capsys) -> None:
    pdf = tmp_path / "r.pdf"
    code, _out, err = run_cli(capsys, "report", "--sample", "vit-digits", "--no-quant", "-o", str(pdf), "--min-cosine", "0.99")
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and "min_cosine" in err
    assert not pdf.exists()


@pytest.mark.parametrize("target", ["missing-folder/r.pdf", "a-folder", "ok.pdf"])
def test_unwritable_output_is_exit_2_one_line_nothing_left(tmp_path, capsys, target) -> None:
    (tmp_path / "a-folder").mkdir()
    pdf = tmp_path / target
    argv = ["report", "--sample", "vit-digits", "--no-quant", "-o", str(pdf)]
    if target == "ok.pdf":  # the PDF could be written, the JSON cannot: neither is
        argv += ["--json", str(tmp_path / "missing-folder" / "r.json")]
    before = sorted(p.name for p in tmp_path.iterdir())
    code, _out, err = run_cli(capsys, *argv)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert "cannot write" in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert not (tmp_path / "ok.pdf").exists()


def test_failed_write_leaves_nothing_behind(tmp_path, monkeypatch, qapp) -> None:
    """A write that fails after the PDF was rendered (here: the JSON) raises ModelError and
    leaves no temporary file; the PDF, written first and complete, stays."""
    from engine import load_model
    from engine.deployment import deployment_document, npu_report_for
    from engine.errors import ModelError
    from engine.npu import load_profile
    from engine.samples import get_sample
    from inspector.report import write_report

    model = load_model(str(get_sample("cnn-digits").model))
    npu = npu_report_for(model, load_profile("journey5"))
    doc = deployment_document(model, None, npu)
    (tmp_path / "sub").mkdir()
    with pytest.raises(ModelError, match="cannot write"):
        write_report(tmp_path / "r.pdf", model, None, npu, doc, json_path=tmp_path / "sub")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.pdf", "sub"]
    assert list((tmp_path / "sub").iterdir()) == []


def test_large_model_report_pages_through_the_appendix(tmp_path, capsys, qapp) -> None:
    from benchmarks.models import bert_encoder

    proto = bert_encoder(layers=60, hidden=64, heads=2, ffn=128, seq=16, vocab=100)
    nodes = len(proto.graph.node)
    assert nodes > 2000
    path = tmp_path / "bert60.onnx"
    onnx.save(proto, str(path))
    pdf = tmp_path / "bert60.pdf"
    t0 = time.perf_counter()
    code, out, err = run_cli(capsys, "report", str(path), "--no-quant", "-o", str(pdf))
    seconds = time.perf_counter() - t0
    assert code == 0, err
    pages = _pages(pdf)
    with capsys.disabled():
        print(f"\n{nodes}-node model, --no-quant report: {seconds:.2f} s total ({out.strip()}), {pages} pages")
    # the appendix lists every node; its pages carry its name in the running header
    text = _pdftotext(pdf)
    appendix_pages = sum(1 for page in text.split("\f") if "Appendix: all layers" in "\n".join(page.splitlines()[:2]))
    assert appendix_pages >= nodes // 100
    assert re.search(rf"^\s*{nodes - 1}\s", text, re.MULTILINE), "the last node's row"
    assert f"Page {pages} of {pages}" in text


def test_write_report_on_a_worker_thread(tmp_path, qapp) -> None:
    """The GUI exports on a worker thread: only QPdfWriter/QPainter/QFont are used there."""
    from engine import load_model
    from engine.deployment import deployment_document, npu_report_for
    from engine.npu import load_profile
    from engine.samples import get_sample
    from inspector.report import write_report

    model = load_model(str(get_sample("cnn-digits").model))
    npu = npu_report_for(model, load_profile("journey5"))
    doc = deployment_document(model, None, npu)
    done: list[tuple[int, int]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            facts = write_report(tmp_path / "cnn.pdf", model, None, npu, doc, "Letter",
                                 progress=lambda d, t: done.append((d, t)))
            done.append((facts["pages"], -1))
        except BaseException as e:  # noqa: BLE001 (re-raised on the test thread)
            errors.append(e)

    thread = threading.Thread(target=work)
    thread.start()
    thread.join(120)
    assert not errors, errors
    pages = _pages(tmp_path / "cnn.pdf")
    assert done[-1] == (pages, -1)
    assert done[-2] == (pages, pages)  # progress counts painted pages
    assert "cnn-digits" in _pdftotext(tmp_path / "cnn.pdf")


def test_palette_matches_the_gui() -> None:
    from inspector import report
    from widgets import style

    assert report.LANE_COLORS == style.LANE_COLORS
    assert report.LANE_LABELS == style.LANE_LABELS
    assert report.SEVERITY_COLORS == style.SEVERITY_COLORS
    for key, color in report.SERIES.items():
        assert style.SERIES[key] == color, key
    assert (report.FOREGROUND, report.MUTED) == (style.FOREGROUND, style.MUTED)


def test_merge_intervals_and_ticks() -> None:
    from inspector.report import merge_intervals, nice_range, nice_ticks

    s = np.array([5.0, 0.0, 1.5, 10.0, 2.0])
    e = np.array([6.0, 1.0, 3.0, 11.0, 2.5])
    ms, me = merge_intervals(s, e, 0.6)  # 1.0 -> 1.5 joins (gap 0.5), 3.0 -> 5.0 does not
    assert ms.tolist() == [0.0, 5.0, 10.0] and me.tolist() == [3.0, 6.0, 11.0]
    ms, me = merge_intervals(s, e, 0.0)
    assert ms.tolist() == [0.0, 1.5, 5.0, 10.0] and me.tolist() == [1.0, 3.0, 6.0, 11.0]
    ticks, step = nice_ticks(0.0, 81.8, 10)  # 8.18 per tick -> 10
    assert step == 10.0 and ticks.tolist() == [0.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0]
    ticks, step = nice_ticks(-0.3, 0.3, 6)  # 0.1 per tick
    assert step == pytest.approx(0.1) and ticks[0] == pytest.approx(-0.3) and len(ticks) == 7
    assert nice_range(-0.3, 41.2, 6) == (-10.0, 50.0)


def test_cancel_stops_the_report_and_writes_nothing(tmp_path, qapp) -> None:
    from engine import load_model
    from engine.deployment import deployment_document, npu_report_for
    from engine.errors import Cancelled
    from engine.npu import load_profile
    from engine.samples import get_sample
    from inspector.report import write_report

    model = load_model(str(get_sample("cnn-digits").model))
    npu = npu_report_for(model, load_profile("journey5"))
    doc = deployment_document(model, None, npu)
    painted: list[int] = []
    with pytest.raises(Cancelled):
        write_report(tmp_path / "r.pdf", model, None, npu, doc, progress=lambda d, t: painted.append(d),
                     cancel=lambda: len(painted) >= 2, json_path=tmp_path / "r.json")
    assert painted == [1, 2]
    assert list(tmp_path.iterdir()) == []


def test_tick_labels_keep_the_step_precision() -> None:
    from inspector.report import _tick_label

    assert [_tick_label(v, 2.5) for v in (-7.5, -2.5, 0.0, 5.0)] == ["-7.5", "-2.5", "0", "5.0"]
    assert [_tick_label(v, 20.0) for v in (0.0, 40.0)] == ["0", "40"]
    assert _tick_label(0.25, 0.05) == "0.25"
    assert _tick_label(-1e-17, 0.1) == "0"
