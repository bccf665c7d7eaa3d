"""ONNX files with external data: loaded whole, saved beside the graph when large, hashed together."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler import onnx_io
from compiler.errors import ModelError


def linear(weights: np.ndarray) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, weights.shape[0]])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, weights.shape[1]])],
        [numpy_helper.from_array(weights, "w")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def test_small_model_is_saved_self_contained(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    assert onnx_io.save(linear(np.ones((4, 4), np.float32)), path) == []
    assert onnx_io.data_files(path) == []


def test_model_over_the_limit_goes_to_a_data_file_and_loads_back(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(onnx_io, "EXTERNAL_ABOVE", 1000)  # stands in for protobuf's 2 GB
    weights = np.arange(64 * 64, dtype=np.float32).reshape(64, 64)
    model = linear(weights)
    path = tmp_path / "model.onnx"
    assert onnx_io.save(model, path) == [tmp_path / "model.onnx.data"]
    assert numpy_helper.to_array(model.graph.initializer[0]).sum() == weights.sum()  # the caller's model is intact
    assert path.stat().st_size < 1000 and (tmp_path / "model.onnx.data").stat().st_size >= weights.nbytes
    loaded = onnx_io.load(path)
    assert np.array_equal(numpy_helper.to_array(loaded.graph.initializer[0]), weights)


def test_digest_covers_the_external_weights(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx_io.save(linear(np.ones((64, 64), np.float32)), path, external=True)
    before = onnx_io.digest(path)
    data = tmp_path / "model.onnx.data"
    changed = bytearray(data.read_bytes())
    changed[0] ^= 0xFF
    data.write_bytes(bytes(changed))
    assert onnx_io.digest(path) != before  # the .onnx itself did not change


def test_missing_data_file_is_one_line_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx_io.save(linear(np.ones((64, 64), np.float32)), path, external=True)
    (tmp_path / "model.onnx.data").unlink()
    with pytest.raises(ModelError, match=r"model\.onnx\.data, which is not next to it.*copy the \.onnx together"):
        onnx_io.load(path)


def test_size_on_disk_counts_the_external_weights(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx_io.save(linear(np.ones((64, 64), np.float32)), path, external=True)
    assert onnx_io.size_on_disk(path) == path.stat().st_size + (tmp_path / "model.onnx.data").stat().st_size
    not_onnx = tmp_path / "model.tflite"
    not_onnx.write_bytes(b"TFL3" * 10)
    assert onnx_io.size_on_disk(not_onnx) == 40
