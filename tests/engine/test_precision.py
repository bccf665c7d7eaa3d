"""The precision a build achieved: weight bytes by dtype, quantized nodes, and the target's promise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from compiler.engine.precision import achieved_precision, onnx_weights, promise_warnings, tensor_bytes


def _model(nodes: list[onnx.NodeProto], initializers: list[onnx.TensorProto], opset: int = 21) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 64])],
        initializers,
    )
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)]
    return helper.make_model(graph, opset_imports=opsets)


def fp32_matmul() -> onnx.ModelProto:
    weight = numpy_helper.from_array(np.ones((64, 64), np.float32), "w")
    return _model([helper.make_node("MatMul", ["x", "w"], ["y"])], [weight])


def int8_qdq_matmul() -> onnx.ModelProto:
    """An INT8 weight dequantized before its MatMul (what static QDQ quantization writes)."""
    initializers = [
        numpy_helper.from_array(np.ones((64, 64), np.int8), "w_q"),
        numpy_helper.from_array(np.array(0.01, np.float32), "w_scale"),
        numpy_helper.from_array(np.array(0, np.int8), "w_zero"),
    ]
    nodes = [
        helper.make_node("DequantizeLinear", ["w_q", "w_scale", "w_zero"], ["w"]),
        helper.make_node("MatMul", ["x", "w"], ["y"]),
    ]
    return _model(nodes, initializers)


def int4_matmul_nbits() -> onnx.ModelProto:
    """MatMulNBits: 4-bit weights packed two to a byte in a uint8 tensor [N, blocks, block/2]."""
    initializers = [
        numpy_helper.from_array(np.zeros((64, 2, 16), np.uint8), "b_packed"),  # 2,048 bytes of 4-bit values
        numpy_helper.from_array(np.ones((64 * 2,), np.float32), "b_scales"),  # 512 bytes
    ]
    node = helper.make_node(
        "MatMulNBits", ["x", "b_packed", "b_scales"], ["y"], domain="com.microsoft", K=64, N=64, bits=4, block_size=32
    )
    return _model([node], initializers)


def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def test_fp32_model_is_all_float32_bytes_with_no_quantized_nodes() -> None:
    weights = onnx_weights(fp32_matmul())
    assert weights.bytes_by_dtype == {"float32": 64 * 64 * 4}
    assert weights.quantized_nodes == 0
    assert weights.share(("float32",)) == 1.0


def test_qdq_int8_weights_and_quantized_nodes_are_counted() -> None:
    weights = onnx_weights(int8_qdq_matmul())
    assert weights.bytes_by_dtype == {"float32": 4, "int8": 64 * 64 + 1}
    assert weights.quantized_ops == {"DequantizeLinear": 1}
    assert weights.share(("int8", "uint8")) == (64 * 64 + 1) / (64 * 64 + 5)


def test_matmul_nbits_packed_uint8_counts_as_int4() -> None:
    weights = onnx_weights(int4_matmul_nbits())
    assert weights.bytes_by_dtype == {"float32": 512, "int4": 2048}
    assert weights.quantized_ops == {"MatMulNBits": 1}


def test_constants_in_subgraphs_and_native_sub_byte_types() -> None:
    half = helper.make_tensor("c", TensorProto.FLOAT16, [8, 8], np.zeros(64, np.float16).view(np.uint16).tolist())
    branch = helper.make_graph(
        [helper.make_node("Constant", [], ["c"], value=half)],
        "then",
        [],
        [helper.make_tensor_value_info("c", TensorProto.FLOAT16, [8, 8])],
    )
    int4 = helper.make_tensor("n", TensorProto.INT4, [7], [1, 2, 3, 4, 5, 6, 7])
    nodes = [
        helper.make_node("Constant", [], ["n"], value=int4),
        helper.make_node("Constant", [], ["k"], value_floats=[1.0, 2.0, 3.0]),
        helper.make_node("If", ["cond"], ["y"], then_branch=branch, else_branch=branch),
        helper.make_node("QuickGelu", ["x"], ["q"], domain="com.microsoft"),  # starts with Q: not quantized
        helper.make_node("QLinearConv", ["x"] * 8, ["z"]),
    ]
    weights = onnx_weights(_model(nodes, []))
    assert tensor_bytes(int4) == 4  # 7 four-bit values round up to 4 bytes
    # Two branches of 64 float16 values each, 7 int4 values, 3 float32 values.
    assert weights.bytes_by_dtype == {"float16": 2 * 128, "float32": 12, "int4": 4}
    assert weights.quantized_ops == {"QLinearConv": 1}


def test_external_data_is_counted_without_loading_it(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(fp32_matmul(), str(path), save_as_external_data=True, location="model.onnx.data", size_threshold=0)
    assert path.stat().st_size < 1000  # the weights are in model.onnx.data
    weights = onnx_weights(path)
    assert weights.bytes_by_dtype == {"float32": 16384}
    assert weights.external_bytes == 16384


def test_int4_target_with_no_4_bit_weights_warns(tmp_path: Path) -> None:
    """The CNN case: desktop-int4's passes leave convolutions in FP32, the file ships unchanged."""
    artifact = save(fp32_matmul(), tmp_path / "a.onnx")
    size = artifact.stat().st_size
    figures = achieved_precision("desktop-int4", "int4", [(artifact, {})], True, fp32_size=size)
    assert not figures["promise_met"]
    [warning] = figures["warnings"]
    assert "desktop-int4 promises int4 but the shipped model has no int4 weights" in warning
    assert "100.0% of its 16,384 weight bytes are float32" in warning
    assert figures["summary"].startswith("int4 weights 0.0% of 16,384 weight bytes (float32 100.0%), 0 quantized")
    assert figures["weight_bytes"] == {"float32": 16384} and figures["quantized_nodes"] == 0


def test_int4_target_with_matmul_nbits_keeps_its_promise(tmp_path: Path) -> None:
    artifact = save(int4_matmul_nbits(), tmp_path / "a.onnx")
    figures = achieved_precision("desktop-int4", "int4", [(artifact, {})], True, fp32_size=100_000)
    assert figures["promise_met"], figures["warnings"]
    assert figures["summary"] == "int4 weights 80.0% of 2,560 weight bytes, 1 quantized nodes"


def test_int8_target_mostly_float32_warns_and_qdq_does_not(tmp_path: Path) -> None:
    fp32 = save(fp32_matmul(), tmp_path / "fp32.onnx")
    int8 = save(int8_qdq_matmul(), tmp_path / "int8.onnx")
    fp32_size = fp32.stat().st_size
    bad = achieved_precision("desktop-int8", "int8", [(fp32, {})], True, fp32_size)
    assert bad["warnings"] == [
        "desktop-int8 promises int8 but the shipped model has no int8 weights (100.0% of its 16,384 weight "
        "bytes are float32, 0 quantized nodes): the target's passes did not convert this model"
    ]
    good = achieved_precision("desktop-int8", "int8", [(int8, {})], True, fp32_size)
    assert good["promise_met"] and good["warnings"] == []
    assert good["summary"] == "int8 weights 99.9% of 4,101 weight bytes, 1 quantized nodes"
    # Some int8, but most bytes float32: the second rule.
    mixed = onnx_weights(int8_qdq_matmul())
    mixed.bytes_by_dtype["float32"] = 10_000
    [warning] = promise_warnings("t", "int8", mixed, None, size=1, fp32_size=2)
    assert "t promises int8 but 70.9% of the shipped model's 14,097 weight bytes are float32" in warning


def test_fp16_target_without_float16_and_a_quantized_artifact_larger_than_fp32(tmp_path: Path) -> None:
    artifact = save(fp32_matmul(), tmp_path / "a.onnx")
    size = artifact.stat().st_size
    figures = achieved_precision("desktop-fp16", "fp16", [(artifact, {})], True, fp32_size=size - 10)
    assert len(figures["warnings"]) == 2
    assert "no float16 weights" in figures["warnings"][0]
    assert f"is larger than the FP32 model ({size - 10:,} bytes" in figures["warnings"][1]
    # An FP32 target promises nothing about dtypes or size.
    assert achieved_precision("desktop-fp32", "fp32", [(artifact, {})], True, size - 10)["warnings"] == []


def test_non_onnx_artifacts_use_recorded_tensor_counts_or_say_not_measured(tmp_path: Path) -> None:
    library = tmp_path / "model.tflite"
    library.write_bytes(b"\0" * 100)
    float_only = achieved_precision("android-int8", "int8", [(library, {"tensor_dtypes": {"float32": 9}})], False, 1000)
    assert float_only["warnings"] == [
        "android-int8 promises int8 but the artifact holds no int8 tensors (tensor counts by dtype: float32 9)"
    ]
    quantized = {"tensor_dtypes": {"float32": 3, "int8": 5}}
    assert achieved_precision("android-int8", "int8", [(library, quantized)], False, 1000)["promise_met"]
    unknown = achieved_precision("arm64-int8", "int8", [(library, {})], False, fp32_size=50)
    assert unknown["method"].startswith("not measured")
    assert unknown["summary"].startswith("weights by dtype not measured")
    assert unknown["warnings"] == [
        "arm64-int8 promises int8 but the artifact (100 bytes) is larger than the FP32 model (50 bytes, 200.0%)"
    ]
