"""Per-layer error analysis: streaming metrics, both views, outputs, documents."""

from __future__ import annotations

import json
import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine import load_model
from engine.analysis import (
    ERR_HIST_BINS,
    ERR_HIST_STEPS,
    AnalysisConfig,
    ErrorAccumulator,
    analysis_document,
    energy,
    run_analysis,
)
from engine.calibrate import DataSpec, data_spec
from engine.errors import Cancelled
from engine.executor import executor_for
from engine.int8.executor import Int8Executor
from engine.quant.metrics import compare
from tests.builders import IR_VERSION, matmul_relu, save

REL = 1e-9
"""Streaming sums vs one-shot numpy: float64 rounding only."""


def test_streaming_error_equals_one_shot_compare() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((50, 40)) * 3
    test = ref + rng.standard_normal((50, 40)) * 0.1 + 0.05
    test[3, 4] = np.nan  # excluded pair
    acc = ErrorAccumulator()
    for start in (0, 7, 19, 20, 44):  # uneven batches
        stop = {0: 7, 7: 19, 19: 20, 20: 44, 44: 50}[start]
        acc.update(ref[start:stop], test[start:stop])
    got = acc.summary()
    want = compare(ref, test)
    assert got.n == want.n == 1999 and got.n_nonfinite == want.n_nonfinite == 1
    for key in ("cosine", "sqnr_db", "mse", "max_abs_err", "err_mean", "err_std", "err_skew", "err_kurtosis"):
        assert getattr(got, key) == pytest.approx(getattr(want, key), rel=REL), key


def test_float32_accumulators_sharing_work_buffers_agree_with_float64() -> None:
    """Interleaved accumulators of different tensor sizes reuse one thread's work buffers, and a
    reference energy given by the caller (``ref2``) changes nothing: each still matches the
    float64 one-shot comparison (tolerance: float32 partial sums over 4096-element chunks)."""
    rng = np.random.default_rng(1)
    shapes = [(64, 512), (7, 33), (128, 1024)]
    refs = [rng.standard_normal(s).astype(np.float32) * 2 for s in shapes]
    tests = [(r + rng.standard_normal(r.shape).astype(np.float32) * 0.05 + 0.01).astype(np.float32) for r in refs]
    accs = [ErrorAccumulator() for _ in shapes]
    given = [ErrorAccumulator() for _ in shapes]
    for _ in range(2):  # two batches each, interleaved across the accumulators
        for acc, with_energy, ref, test in zip(accs, given, refs, tests):
            acc.update(ref, test, step=0.02)
            with_energy.update(ref, test, step=0.02, ref2=energy(ref))
    for acc, with_energy, ref, test in zip(accs, given, refs, tests):
        got, other = acc.summary(), with_energy.summary()
        want = compare(np.concatenate([ref, ref]).astype(np.float64), np.concatenate([test, test]).astype(np.float64))
        for key in ("cosine", "sqnr_db", "mse", "max_abs_err", "err_mean", "err_std", "err_skew", "err_kurtosis"):
            assert getattr(got, key) == getattr(other, key), key
            assert getattr(got, key) == pytest.approx(getattr(want, key), rel=1e-4, abs=1e-9), key
        assert got.hist_counts == other.hist_counts


@pytest.mark.parametrize("bias", [0.0, 0.0015, 0.0018, 0.05, 5.0])
def test_error_moments_about_zero_or_centred_agree_with_float64(bias: float) -> None:
    """An error whose mean is within a tenth of its rms takes the moments about 0 (one pass
    fewer), a biased one the centred two-pass moments: both match the float64 one-shot
    comparison of the same float32 tensors, skewed and heavy-tailed errors included
    (tolerance: float32 partial sums); max |error| is exact (it comes from the squares)."""
    rng = np.random.default_rng(2)
    ref = (rng.standard_normal((96, 512)) * 2).astype(np.float32)
    noise = rng.standard_t(5, ref.shape) * 0.01 + rng.exponential(0.01, ref.shape) - 0.01
    test = (ref + noise + bias).astype(np.float32)
    acc = ErrorAccumulator()
    for half in (slice(0, 40), slice(40, 96)):
        acc.update(ref[half], test[half], step=0.02)
    got = acc.summary()
    want = compare(ref.astype(np.float64), test.astype(np.float64))
    for key in ("cosine", "sqnr_db", "mse", "err_mean", "err_std"):
        assert getattr(got, key) == pytest.approx(getattr(want, key), rel=1e-5), key
    for key in ("err_skew", "err_kurtosis"):
        assert getattr(got, key) == pytest.approx(getattr(want, key), rel=1e-4, abs=1e-4), key
    assert got.max_abs_err == float(np.abs(test - ref).max())


def test_error_histogram_is_in_steps() -> None:
    step = 0.25
    ref = np.zeros(6)
    test = np.array([0.0, 0.1, -0.1, 1.0, 100.0, -100.0])  # 0, 0.4, -0.4, 4 steps, beyond both ends
    acc = ErrorAccumulator()
    acc.update(ref, test, clipped=2, step=step)
    s = acc.summary()
    assert s.hist_under == 1 and s.hist_over == 1 and sum(s.hist_counts) == 4
    width = 2 * ERR_HIST_STEPS / ERR_HIST_BINS
    counts = np.asarray(s.hist_counts)
    assert counts[int((0.0 + ERR_HIST_STEPS) / width)] == 1
    assert counts[int((4.0 + ERR_HIST_STEPS) / width)] == 1
    assert counts[int(math.floor((-0.4 + ERR_HIST_STEPS) / width))] == 1
    assert s.clip_fraction == pytest.approx(2 / 6)
    assert s.err_mean_steps == pytest.approx(np.mean(test / step))


def _chain(tmp_path):
    """x -> MatMul -> Relu -> MatMul -> y (10 classes)."""
    rng = np.random.default_rng(1)
    w1 = numpy_helper.from_array((rng.standard_normal((16, 32)) / 4).astype(np.float32), "w1")
    w2 = numpy_helper.from_array((rng.standard_normal((32, 10)) / 6).astype(np.float32), "w2")
    nodes = [
        helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
        helper.make_node("Relu", ["h"], ["r"], name="relu"),
        helper.make_node("MatMul", ["r", "w2"], ["y"], name="fc2"),
    ]
    g = helper.make_graph(
        nodes,
        "chain",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 10])],
        [w1, w2],
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=IR_VERSION)
    onnx.checker.check_model(m)
    return load_model(save(m, tmp_path / "chain.onnx"))


def test_views_against_direct_computation(tmp_path) -> None:
    model = _chain(tmp_path)
    x = np.random.default_rng(2).standard_normal((24, 16)).astype(np.float32)
    labels = np.arange(24) % 10
    np.savez(tmp_path / "d.npz", x=x, labels=labels)
    spec = data_spec(str(tmp_path / "d.npz"))
    result = run_analysis(model, spec, config=AnalysisConfig(batch=24))
    plan = result.plan
    float_values = executor_for(model).run({"x": x}, intermediate=True)
    int8 = Int8Executor(model, plan)
    q = int8.run({"x": x}, intermediate=True)
    # accumulated view: the int8 run's tensors vs the float run's
    for name, tensor in (("fc1", "h"), ("relu", "r"), ("fc2", "y")):
        layer = result.layer(name)
        assert layer.accumulated.sqnr_db == pytest.approx(compare(float_values[tensor], q.values[tensor]).sqnr_db, rel=1e-9)
    # isolated view: run_node on the float model's own inputs
    node = model.graph.nodes[2]
    outs, _ = int8.run_node(node, [float_values["r"], None])
    iso = compare(float_values["y"], outs[0])
    assert result.layer("fc2").isolated.sqnr_db == pytest.approx(iso.sqnr_db, rel=1e-9)
    assert result.layer("fc2").isolated.cosine == pytest.approx(iso.cosine, rel=1e-9)
    # the first layer sees the same quantized input in both views
    assert result.layer("fc1").isolated.sqnr_db == pytest.approx(result.layer("fc1").accumulated.sqnr_db, rel=1e-12)
    # downstream the accumulated error is worse than the layer's own
    assert result.layer("fc2").accumulated.sqnr_db < result.layer("fc2").isolated.sqnr_db
    # outputs: top-1 agreement and accuracy from the labels inside the file
    out = result.outputs[0]
    pred_f = float_values["y"].argmax(-1)
    pred_q = q.values["y"].argmax(-1)
    assert out.top1_agreement == pytest.approx(np.mean(pred_f == pred_q))
    assert out.accuracy_float == pytest.approx(np.mean(pred_f == labels))
    assert out.accuracy_int8 == pytest.approx(np.mean(pred_q == labels))
    assert out.labelled == 24
    assert out.error.sqnr_db == pytest.approx(result.layer("fc2").accumulated.sqnr_db, rel=1e-12)


def _count_measurements(monkeypatch) -> list[int]:
    """A list that grows by one at every ErrorAccumulator.update (a pair measured)."""
    import engine.analysis as analysis

    measured: list[int] = []
    real_update = analysis.ErrorAccumulator.update

    def counting(self, *args, **kwargs):
        measured.append(1)
        return real_update(self, *args, **kwargs)

    monkeypatch.setattr(analysis.ErrorAccumulator, "update", counting)
    return measured


def test_a_node_reading_only_graph_inputs_is_measured_once(tmp_path, monkeypatch) -> None:
    """fc1 reads the graph input and a weight: both views run it on the same quantized
    input, so its isolated view takes the accumulated measurement (equal, not close):
    per batch 3 accumulated + 2 isolated (relu, fc2) + 1 output measurement."""
    model = _chain(tmp_path)
    np.savez(tmp_path / "d.npz", x=np.random.default_rng(3).standard_normal((24, 16)).astype(np.float32))
    measured = _count_measurements(monkeypatch)
    result = run_analysis(model, data_spec(str(tmp_path / "d.npz")), config=AnalysisConfig(batch=8, findings=False))
    assert len(measured) == 3 * (3 + 2 + 1)
    fc1 = result.layer("fc1")
    assert fc1.isolated == fc1.accumulated
    assert result.layer("fc2").isolated != result.layer("fc2").accumulated


def test_document_is_json_and_complete(tmp_path) -> None:
    model = load_model(save(matmul_relu(k=16, n=8), tmp_path / "m.onnx"))
    result = run_analysis(model, DataSpec("synthetic", samples=8))
    doc = analysis_document(result, extra={"cost": {"est_ns": 1}})
    text = json.dumps(doc, allow_nan=False)
    back = json.loads(text)
    assert back["cost"] == {"est_ns": 1}
    assert back["calibration"]["synthetic"] is True and back["calibration"]["samples"] == 8
    assert [l["name"] for l in back["layers"]] == ["matmul", "bias", "relu"]
    for layer in back["layers"]:
        for key in ("name", "op_type", "cosine", "sqnr_db", "mse", "max_abs_err", "clip_fraction", "cosine_isolated", "sqnr_db_isolated"):
            assert key in layer
    act = back["activations"]["xw"]
    assert sum(act["counts"]) == 8 * 8 and len(act["edges"]) == len(act["counts"]) + 1
    scale = act["qparams"]["scale"]
    assert act["hi"] == pytest.approx(127 * scale) and act["lo"] == pytest.approx(-127 * scale)
    w = back["weights"]["W"]
    assert w["axis"] == 1 and len(w["min"]) == 8
    assert np.all(np.asarray(w["max"]) >= np.asarray(w["min"]))


def test_progress_and_cancel(tmp_path) -> None:
    model = load_model(save(matmul_relu(k=16, n=8), tmp_path / "m.onnx"))
    seen: list[tuple[int, int]] = []
    run_analysis(model, DataSpec("synthetic", samples=10), config=AnalysisConfig(batch=4), progress=lambda d, t: seen.append((d, t)))
    dones = [d for d, _ in seen]
    assert dones == sorted(dones) and seen[-1][0] == seen[-1][1]
    calls = [0]

    def cancel() -> bool:
        calls[0] += 1
        return calls[0] > 3

    with pytest.raises(Cancelled):
        run_analysis(model, DataSpec("synthetic", samples=10), config=AnalysisConfig(batch=2), cancel=cancel)


def test_int16_and_float_layers_are_better(tmp_path) -> None:
    model = _chain(tmp_path)
    spec = DataSpec("synthetic", samples=32)
    base = run_analysis(model, spec, config=AnalysisConfig(findings=False))
    wide = run_analysis(model, spec, config=AnalysisConfig(findings=False, int16_ops=["fc1"]))
    kept = run_analysis(model, spec, config=AnalysisConfig(findings=False, float_ops=["fc2"]))
    # A16W8: the int16 output removes the output rounding noise; the int8 input and weight
    # noise stay (deterministic data: 37.9 -> 40.7 dB measured), so ask for part of it
    assert wide.plan.activations["h"].dtype == "int16"
    assert wide.layer("fc1").isolated.sqnr_db > base.layer("fc1").isolated.sqnr_db + 1.5
    assert wide.layer("fc1").isolated.err_std_steps > 100 * base.layer("fc1").isolated.err_std_steps
    # kept in float: weights and output exact, only its int8 input remains (37.5 -> 42.4 dB measured)
    assert kept.layer("fc2").path == "float" and "y" not in kept.plan.activations
    assert kept.layer("fc2").isolated.hist_counts is None  # no output step to measure in
    assert kept.layer("fc2").isolated.sqnr_db > base.layer("fc2").isolated.sqnr_db + 3


def test_values_outside_the_quantized_range() -> None:
    from engine.analysis import values_outside
    from engine.quant.qparams import qparams_from_range

    qp = qparams_from_range(-1.0, 1.0)  # symmetric int8: step 1/127, range [-1, 1]
    half = 0.5 / 127
    x = np.array([-1.2, -1.0 - 0.9 * half, 0.0, 1.0 + 1.1 * half, 1.2], dtype=np.float32)
    assert values_outside(x, qp) == 3
    assert values_outside(x[1:4], qp) == 1 and values_outside(x[2:3], qp) == 0  # one side crossed; none
    assert values_outside(np.array([np.nan, 2.0, 0.0], np.float32), qp) == 1  # NaN is not counted
    assert values_outside(np.zeros(0, np.float32), qp) == 0
    per_channel = qparams_from_range(np.array([-1.0, -2.0]), np.array([1.0, 2.0]), axis=0)
    assert values_outside(x, per_channel) is None and values_outside(x, None) is None


def test_two_evaluation_workers_give_the_same_result_as_one() -> None:
    """Sharded evaluation merges to the one-process statistics (float64 rounding of the
    merge: 1e-9 relative), counts exactly."""
    from engine.samples import get_sample
    from engine.shards import fork_is_safe

    if not fork_is_safe():
        pytest.skip("fork is not safe in this process")
    sample = get_sample("cnn-digits")
    model = load_model(sample.model)
    spec = data_spec(str(sample.calib), limit=48)
    one = run_analysis(model, spec, config=AnalysisConfig(batch=8, workers=1, findings=False))
    two = run_analysis(model, spec, config=AnalysisConfig(batch=8, workers=2, findings=False))
    assert [l.name for l in one.layers] == [l.name for l in two.layers]
    for a, b in zip(one.layers, two.layers):
        assert a.path == b.path and a.outside_fraction == b.outside_fraction
        for view in ("isolated", "accumulated"):
            sa, sb = getattr(a, view), getattr(b, view)
            assert (sa is None) == (sb is None), (a.name, view)
            if sa is None:
                continue
            assert sa.n == sb.n and sa.hist_counts == sb.hist_counts and sa.max_abs_err == sb.max_abs_err
            for key in ("cosine", "sqnr_db", "mse", "err_mean", "err_std", "err_skew", "err_kurtosis"):
                assert getattr(sb, key) == pytest.approx(getattr(sa, key), rel=1e-9, abs=1e-12), (a.name, view, key)
    for a, b in zip(one.outputs, two.outputs):
        assert a.top1_agreement == b.top1_agreement and a.accuracy_float == b.accuracy_float
        assert b.error.sqnr_db == pytest.approx(a.error.sqnr_db, rel=1e-9)


def test_permutation_nodes_take_their_inputs_statistics(tmp_path, monkeypatch) -> None:
    """Reshape/Transpose nodes whose output keeps the input's QParams take both views'
    statistics from their input's (the same values rearranged) instead of measuring them:
    every statistic equals measuring each node (float32 chunk sums of another order:
    1e-5 relative), counts exactly; only the step histogram is another strided subset of
    the same values (same total). Transpose after Reshape reuses the Reshape's isolated
    record; a Reshape whose output has other QParams is measured."""
    import engine.analysis as analysis
    from benchmarks.models import bert_encoder, bert_feeds

    model_path = save(bert_encoder(layers=1, hidden=64, heads=2, ffn=128, seq=32), tmp_path / "bert.onnx")
    model = load_model(model_path)
    feeds = [bert_feeds(seq=32, masked=4, seed=i) for i in range(6)]
    np.savez(tmp_path / "c.npz", **{k: np.concatenate([f[k] for f in feeds]) for k in feeds[0]})
    spec = data_spec(str(tmp_path / "c.npz"))
    measured = _count_measurements(monkeypatch)
    fast = run_analysis(model, spec, config=AnalysisConfig(findings=False))
    fast_count = len(measured)
    same_value_nodes = analysis._same_value_nodes
    reused = same_value_nodes(model.graph, fast.plan, {})
    perm = {n.name for n in model.graph.nodes if n.op_type in ("Reshape", "Transpose")}
    assert len(reused) >= 6 and set(reused) <= perm
    monkeypatch.setattr(analysis, "_same_value_nodes", lambda *a: {})
    measured.clear()
    slow = run_analysis(model, spec, config=AnalysisConfig(findings=False))
    # per batch: every reused node's accumulated view, and the isolated view of each one
    # reading another reused node's output (a Transpose after a Reshape)
    chained = sum(1 for x in reused.values() if x in {o for n in model.graph.nodes if n.name in reused for o in n.outputs})
    batches = fast.evaluation["samples"]  # batch 1: one run per sample
    assert len(measured) - fast_count == batches * (len(reused) + chained)
    for a, b in zip(slow.layers, fast.layers):
        assert a.name == b.name and a.path == b.path and a.outside_fraction == b.outside_fraction
        for view in ("isolated", "accumulated"):
            sa, sb = getattr(a, view), getattr(b, view)
            assert (sa is None) == (sb is None), (a.name, view)
            if sa is None:
                continue
            assert (sa.n, sa.n_nonfinite, sa.clip_fraction, sa.max_abs_err) == (sb.n, sb.n_nonfinite, sb.clip_fraction, sb.max_abs_err)
            for key in ("cosine", "sqnr_db", "mse", "err_mean", "err_std", "err_skew", "err_kurtosis", "err_mean_steps", "err_std_steps"):
                assert getattr(sb, key) == pytest.approx(getattr(sa, key), rel=1e-5, abs=1e-12), (a.name, view, key)
            assert sum(sa.hist_counts) + sa.hist_under + sa.hist_over == sum(sb.hist_counts) + sb.hist_under + sb.hist_over
            if a.name not in reused:
                assert sa.hist_counts == sb.hist_counts, (a.name, view)
    # the records are shared only where the QParams agree
    plan = fast.plan
    name, x = next(iter(reused.items()))
    y = next(n for n in model.graph.nodes if n.name == name).outputs[0]
    from engine.quant.qparams import qparams_from_range

    other = dict(plan.activations)
    other[y] = qparams_from_range(-1.0, 1.0)
    import dataclasses

    changed = same_value_nodes(model.graph, dataclasses.replace(plan, activations=other), {})
    readers = {n.name for n in model.graph.nodes if n.name in reused and reused[n.name] == y}
    assert name not in changed and readers and not readers & set(changed)
    assert len(changed) == len(reused) - 1 - len(readers)
