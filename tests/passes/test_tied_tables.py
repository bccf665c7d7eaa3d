"""Tied tables (a weight that a MatMul and a Gather both read, as Whisper's token embedding is also
its output projection) keep ONE quantized copy: quantize-dynamic-int8 and quantize-int4-weights
point the Gather at the MatMul's quantized weights, drop the float table, and the gathered rows
equal the weights the MatMul computes with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.ort_session import session
from passes.base import apply_pass
from passes.quantize_dynamic_int8 import QuantizeDynamicInt8
from passes.quantize_int4_weights import QuantizeInt4Weights
from tests.onnx_helpers import make_context

K, N = 64, 96


def tied_model() -> onnx.ModelProto:
    """y = x @ W (logits), e = Gather(W, ids, axis=1) (the embedding of ids, as columns)."""
    weights = np.random.default_rng(0).standard_normal((K, N)).astype(np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "W"], ["y"], name="logits"),
            helper.make_node("Gather", ["W", "ids"], ["e"], name="lookup", axis=1),
        ],
        "tied",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, K]),
            helper.make_tensor_value_info("ids", TensorProto.INT64, [3]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, N]),
            helper.make_tensor_value_info("e", TensorProto.FLOAT, [K, 3]),
        ],
        [numpy_helper.from_array(weights, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def effective_weights(model: onnx.ModelProto) -> tuple[np.ndarray, np.ndarray]:
    """The MatMul's weights as it computes (x = rows of the identity) and the gathered columns."""
    sess = session(model)
    ids = np.array([0, 7, N - 1])
    # Dynamic INT8 also quantizes x; one-hot rows quantize exactly (scale 1/255, zero point 0).
    rows = [sess.run(None, {"x": np.eye(K, dtype=np.float32)[i : i + 1], "ids": ids}) for i in range(K)]
    matmul = np.concatenate([row[0] for row in rows])
    return matmul[:, ids], rows[0][1]


def floats(model: onnx.ModelProto) -> list[str]:
    return [i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT and len(i.dims) == 2]


def test_dynamic_int8_gathers_from_the_matmuls_int8_weights(tmp_path: Path) -> None:
    model = tied_model()
    pass_ = QuantizeDynamicInt8(QuantizeDynamicInt8.Config())
    quantized = apply_pass(pass_, model, make_context(model, [], tmp_path, "other")).model
    assert "W" not in floats(quantized)  # the float table is gone
    int8 = [i for i in quantized.graph.initializer if i.data_type == TensorProto.INT8 and len(i.dims) == 2]
    assert len(int8) == 1  # one INT8 copy serves both
    expected, gathered = effective_weights(quantized)
    np.testing.assert_allclose(gathered, expected, rtol=1e-5, atol=1e-6)


def test_int4_gathers_from_the_matmulnbits_blocks(tmp_path: Path) -> None:
    model = tied_model()
    pass_ = QuantizeInt4Weights(QuantizeInt4Weights.Config(block_size=32))
    result = apply_pass(pass_, model, make_context(model, [], tmp_path, "other"))
    assert result.stats["tied_tables_shared"] == 1 and "W" not in floats(result.model)
    assert any(node.op_type == "GatherBlockQuantized" for node in result.model.graph.node)
    expected, gathered = effective_weights(result.model)
    np.testing.assert_array_equal(gathered, expected)
    original = numpy_helper.to_array(model.graph.initializer[0])[:, [0, 7, N - 1]]
    assert 0 < np.abs(gathered - original).max() < 0.5  # 4-bit rounding, not garbage
