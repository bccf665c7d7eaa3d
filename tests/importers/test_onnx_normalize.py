"""Import-time normalization of ONNX files from any exporter (compiler/importers/onnx_normalize.py)."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.importers.onnx_normalize import TARGET_OPSET, default_opset, normalize, runtime_max_ir
from tests.cli.test_onnx_files import embedding_model, old_gemm_model
from tests.conformance.zoo import LIGHT


def run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, feeds)


def test_ir3_opset6_gemm_becomes_a_model_onnx_runtime_runs() -> None:
    model, notes = normalize(old_gemm_model(), "old.onnx")
    assert [value.name for value in model.graph.input] == ["x"]  # the weights are weights again
    assert default_opset(model) == TARGET_OPSET and model.ir_version >= 8
    assert any("opset 6 upgraded" in note for note in notes) and any("graph inputs" in note for note in notes)
    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    weights = numpy_helper.to_array(next(t for t in model.graph.initializer if t.name == "w"))
    assert np.allclose(run(model, {"x": x})[0], x @ weights, atol=1e-5)


def test_per_channel_prelu_slopes_keep_their_channel_axis() -> None:
    slope = numpy_helper.from_array(np.array([0.1, 0.2, 0.3], np.float32), "slope")
    graph = helper.make_graph(
        [helper.make_node("PRelu", ["x", "slope"], ["y"])],
        "prelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 2, 2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 2, 2])],
        [slope],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)])
    model.ir_version = 3
    normalized, _ = normalize(model, "prelu.onnx")
    x = -np.ones((1, 3, 2, 2), np.float32)
    assert np.allclose(run(normalized, {"x": x})[0][0, :, 0, 0], [-0.1, -0.2, -0.3])


def test_weights_made_by_constant_of_shape_are_stored() -> None:
    path = next(path for path in LIGHT if "squeezenet" in path.name)
    model, notes = normalize(onnx.load(str(path)), "squeezenet")
    assert not [node for node in model.graph.node if node.op_type == "ConstantOfShape"]
    assert model.ByteSize() > 100 * path.stat().st_size and any("ConstantOfShape" in note for note in notes)


def test_ir_newer_than_the_runtime_reads_is_lowered() -> None:
    model = embedding_model()
    assert model.ir_version > runtime_max_ir()  # onnx's helper writes a newer IR than ORT reads
    normalized, notes = normalize(model, "embed.onnx")
    assert normalized.ir_version == runtime_max_ir() and any("lowered" in note for note in notes)
    run(normalized, {"ids": np.zeros((1, 8), np.int64)})


def test_unnamed_nodes_get_unique_names() -> None:
    model = embedding_model()
    model.graph.node[1].name = "Gather_0"  # a name the scheme would pick for node 0 is taken
    normalized, notes = normalize(model, "embed.onnx")
    assert [node.name for node in normalized.graph.node] == ["Gather_0_1", "Gather_0"]
    assert any("1 unnamed nodes named" in note for note in notes)


def test_current_model_is_left_alone() -> None:
    model = embedding_model()
    model.ir_version = 8
    for index, node in enumerate(model.graph.node):
        node.name = f"node{index}"
    before = model.SerializeToString()
    normalized, notes = normalize(model, "embed.onnx")
    assert notes == [] and normalized.SerializeToString() == before


@pytest.mark.parametrize("path", LIGHT[:1], ids=lambda p: p.stem)
def test_zoo_file_runs_after_normalizing(path) -> None:
    model, _ = normalize(onnx.load(str(path)), str(path))
    x = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    assert run(model, {model.graph.input[0].name: x})[0].shape[-1] == 1000
