"""fold_static: a graph folded at fixed shapes, and refused in one line if folding left it broken."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from compiler.backends.static_shapes import dangling_inputs, fold_static


def dynamic_reshape_model() -> onnx.ModelProto:
    """y = reshape(x, shape(x)[0], -1) * 2: a Shape chain that only folds when the batch is fixed."""
    nodes = [
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Gather", ["shape", "zero"], ["batch"], axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes"], ["batch1"]),
        helper.make_node("Concat", ["batch1", "minus_one"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["flat"]),
        helper.make_node("Mul", ["flat", "two"], ["y"]),
    ]
    initializers = [
        helper.make_tensor("zero", TensorProto.INT64, [], [0]),
        helper.make_tensor("axes", TensorProto.INT64, [1], [0]),
        helper.make_tensor("minus_one", TensorProto.INT64, [1], [-1]),
        helper.make_tensor("two", TensorProto.FLOAT, [], [2.0]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2, 3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializers,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_fold_static_removes_the_shape_chain_and_keeps_the_result(tmp_path: Path) -> None:
    source, dest = tmp_path / "dynamic.onnx", tmp_path / "static.onnx"
    onnx.save(dynamic_reshape_model(), str(source))
    fold_static(source, {"x": [4, 2, 3]}, dest)
    folded = onnx.load(str(dest))
    assert not dangling_inputs(folded)
    assert "Shape" not in {node.op_type for node in folded.graph.node}
    import onnxruntime as ort

    x = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    (y,) = ort.InferenceSession(str(dest), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(y, x.reshape(4, -1) * 2)


def test_dangling_inputs_names_what_nothing_produces() -> None:
    model = dynamic_reshape_model()
    assert dangling_inputs(model) == []
    del model.graph.node[0]  # "shape" now read by Gather, produced by nothing
    assert dangling_inputs(model) == ["shape"]
