"""engine.load_model: good models, every kind of bad file, external data, symbolic dims."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine import ModelError, load_model, load_model_bytes, run
from tests.builders import matmul_relu, reshape_by_shape, save, with_constant_weights


def test_loads_graph_objects(tmp_path) -> None:
    model = load_model(save(matmul_relu(), tmp_path / "m.onnx"))
    g = model.graph
    assert [n.op_type for n in g.nodes] == ["MatMul", "Add", "Relu"]
    assert g.input_names == ["x"] and g.output_names == ["y"]
    assert set(g.weights) == {"W", "b"}
    assert g.weights.info["W"].shape == (16, 8)
    assert model.opset == 17
    assert model.symbolic_dims == ["batch"]
    assert g.tensor("xw").shape == ("batch", 8)
    assert g.tensor("xw").dtype == np.float32


def test_binding_symbolic_dims_makes_every_shape_concrete(tmp_path) -> None:
    model = load_model(save(matmul_relu(), tmp_path / "m.onnx"), dims={"batch": 3})
    for name in ("x", "xw", "xwb", "y"):
        assert model.graph.tensor(name).shape == ((3, 16) if name == "x" else (3, 8))


def test_binding_dims_through_computed_reshape(tmp_path) -> None:
    model = load_model(save(reshape_by_shape(), tmp_path / "m.onnx"), dims={"seq": 5})
    assert model.graph.tensor("y").shape == (5, 16)


def test_unknown_dim_name_is_an_error(tmp_path) -> None:
    with pytest.raises(ModelError, match="no symbolic dimension named seq"):
        load_model(save(matmul_relu(), tmp_path / "m.onnx"), dims={"seq": 4})


def test_constant_node_weights_are_weights(tmp_path) -> None:
    model = load_model(save(with_constant_weights(), tmp_path / "c.onnx"))
    assert "W" in model.graph.weights
    assert [n.op_type for n in model.graph.nodes] == ["MatMul"]
    x = np.ones((2, 4), np.float32)
    y = run(model, {"x": x})["y"]
    np.testing.assert_allclose(y, x @ model.graph.weights["W"], rtol=1e-6)


# ---------------------------------------------------------------- bad input: one line naming the file


def _one_line(err: ModelError, path) -> str:
    text = str(err)
    assert "\n" not in text
    assert str(path) in text
    return text


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ModelError) as e:
        load_model(tmp_path / "nope.onnx")
    assert "no such file" in _one_line(e.value, tmp_path / "nope.onnx")


def test_folder(tmp_path) -> None:
    with pytest.raises(ModelError, match="is a folder"):
        load_model(tmp_path)


def test_empty_file(tmp_path) -> None:
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        load_model(p)


@pytest.mark.parametrize("content", [b"hello, this is text\n", b'{"a": 1}', b"PK\x03\x04zipzip"])
def test_not_onnx(tmp_path, content) -> None:
    p = tmp_path / "not.onnx"
    p.write_bytes(content)
    with pytest.raises(ModelError) as e:
        load_model(p)
    assert "not" in _one_line(e.value, p)


def test_truncated_protobuf(tmp_path) -> None:
    data = matmul_relu().SerializeToString()
    p = tmp_path / "trunc.onnx"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError) as e:
        load_model(p)
    _one_line(e.value, p)


def test_flipped_bytes_never_escape_as_other_errors(tmp_path) -> None:
    data = bytearray(matmul_relu().SerializeToString())
    rng = np.random.default_rng(1)
    p = tmp_path / "flip.onnx"
    for trial in range(40):
        mutated = bytearray(data)
        for i in rng.integers(0, len(mutated), size=4):
            mutated[i] ^= int(rng.integers(1, 256))
        p.write_bytes(bytes(mutated))
        try:
            load_model(p)
        except ModelError as e:
            _one_line(e, p)


def test_checker_failure(tmp_path) -> None:
    m = matmul_relu()
    m.graph.node[0].output[0] = "xwb"  # two nodes now write the same tensor
    p = save(m, tmp_path / "dup.onnx")
    with pytest.raises(ModelError, match="fails the ONNX checker"):
        load_model(p)


def test_unsupported_opset(tmp_path) -> None:
    m = matmul_relu()
    m.opset_import[0].version = 99
    with pytest.raises(ModelError, match="unsupported opset 99"):
        load_model(save(m, tmp_path / "o.onnx"))


def test_dangling_input_is_an_error() -> None:
    m = matmul_relu()
    m.graph.node[1].input[0] = "nowhere"
    with pytest.raises(ModelError):
        load_model_bytes(m.SerializeToString(), "dangling.onnx")


# ---------------------------------------------------------------- external data


def _external(tmp_path, location: str = "weights.bin") -> str:
    m = matmul_relu(k=64, n=32)
    path = tmp_path / "ext.onnx"
    onnx.save(m, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=location, size_threshold=0)
    return str(path)


def test_external_data_is_memory_mapped_not_read(tmp_path) -> None:
    path = _external(tmp_path)
    model = load_model(path, dims={"batch": 2})
    g = model.graph
    assert g.weights.external == {"W", "b"}
    assert g.weights._cache == {}  # nothing read at load time
    w = g.weights["W"]
    assert isinstance(w, np.memmap) and w.shape == (64, 32)
    ref = numpy_helper.to_array(matmul_relu(k=64, n=32).graph.initializer[0])
    np.testing.assert_array_equal(np.asarray(w), ref)
    x = np.ones((2, 64), np.float32)
    assert run(model, {"x": x})["y"].shape == (2, 32)


def test_missing_external_data_file(tmp_path) -> None:
    path = _external(tmp_path)
    os.remove(tmp_path / "weights.bin")
    with pytest.raises(ModelError) as e:
        load_model(path)
    assert "weights.bin" in _one_line(e.value, path) and "missing" in str(e.value)


def test_short_external_data_file(tmp_path) -> None:
    path = _external(tmp_path)
    with open(tmp_path / "weights.bin", "r+b") as f:
        f.truncate(100)
    with pytest.raises(ModelError, match="too short"):
        load_model(path)


def _retarget(path: str, location: str) -> None:
    m = onnx.load(path, load_external_data=False)
    for t in m.graph.initializer:
        for kv in t.external_data:
            if kv.key == "location":
                kv.value = location
    onnx.save(m, path)


@pytest.mark.parametrize("location", ["/etc/passwd", "../secret.bin", "sub/../../secret.bin"])
def test_external_location_outside_folder_refused(tmp_path, location) -> None:
    d = tmp_path / "model"
    d.mkdir()
    (tmp_path / "secret.bin").write_bytes(b"\0" * 100000)
    path = _external(d)
    _retarget(path, location)
    with pytest.raises(ModelError, match="refused"):
        load_model(path)


def test_external_symlink_escape_refused(tmp_path) -> None:
    d = tmp_path / "model"
    d.mkdir()
    path = _external(d)
    secret = tmp_path / "secret.bin"
    os.replace(d / "weights.bin", secret)
    os.symlink(secret, d / "weights.bin")
    with pytest.raises(ModelError, match="link out of the model's folder"):
        load_model(path)


def test_small_external_shape_tensors_still_give_shapes(tmp_path) -> None:
    """Reshape targets stored as external data (size_threshold=0) are read for shape inference."""
    path = tmp_path / "r.onnx"
    onnx.save(reshape_by_shape(), str(path), save_as_external_data=True, location="w.bin", size_threshold=0)
    model = load_model(path, dims={"seq": 3})
    assert model.graph.tensor("y").shape == (3, 16)


def test_a_read_weight_no_longer_holds_its_stored_tensor(tmp_path) -> None:
    """Once an embedded initializer was read (and cached), nothing in the store references its
    TensorProto any more: a parsed protobuf lives while any of its tensors is referenced, so
    a model that ran would otherwise keep its weights twice (protobuf and numpy)."""
    from engine.loader import load_model as load

    path = save(matmul_relu(), tmp_path / "m.onnx")
    model = load(path)
    store = model.graph.weights

    def holds_proto(fn) -> bool:
        cells = [c.cell_contents for c in (fn.__closure__ or ())]
        return any(isinstance(v, onnx.TensorProto) for v in list(fn.__defaults__ or ()) + cells)

    assert all(holds_proto(store._loaders[name]) for name in store)  # lazily loaded: not read yet
    arrays = {name: store[name] for name in store}
    assert not any(holds_proto(store._loaders[name]) for name in store)
    assert all(store[name] is arrays[name] for name in store)
