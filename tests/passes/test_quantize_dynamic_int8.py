"""quantize-dynamic-int8 on a real (tiny) BERT: structure, numerics, options and errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compiler.errors import ConfigError, PassError
from passes.base import Feeds, PassResult, apply_pass, check_order, model_digest
from passes.quantize_dynamic_int8 import QuantizeDynamicInt8
from passes.quantize_static_int8 import QuantizeStaticInt8
from tests.onnx_helpers import assert_numerically_close, make_context, tiny_bert, tiny_cnn

Config = QuantizeDynamicInt8.Config


@pytest.fixture(scope="module")
def bert() -> tuple[onnx.ModelProto, list[Feeds]]:
    return tiny_bert()


def quantize(bert: tuple[onnx.ModelProto, list[Feeds]], workdir: Path, **options: object) -> PassResult:
    model, feeds = bert
    ctx = make_context(model, feeds, workdir, "attention")
    return apply_pass(QuantizeDynamicInt8(Config(**options)), model, ctx)  # type: ignore[arg-type]


def weight_matmuls(model: onnx.ModelProto) -> list[str]:
    constants = {init.name for init in model.graph.initializer}
    return [node.name for node in model.graph.node if node.op_type == "MatMul" and node.input[1] in constants]


def test_matmuls_become_integer_ops_with_int8_weights(bert, tmp_path):
    model, _ = bert
    result = quantize(bert, tmp_path)
    ops = Counter(node.op_type for node in result.model.graph.node)
    assert ops["MatMulInteger"] == len(weight_matmuls(model)) == 12
    assert ops["DynamicQuantizeLinear"] > 0
    assert weight_matmuls(result.model) == []  # every weight MatMul was quantized
    int8 = [init for init in result.model.graph.initializer if init.data_type == onnx.TensorProto.INT8]
    assert len(int8) >= 12
    assert result.model.ByteSize() < 0.6 * model.ByteSize()
    assert result.stats["quantized_nodes"] == {"Gather": 3, "MatMul": 12}
    assert result.stats["size_bytes_after"] < result.stats["size_bytes_before"]
    json.dumps(result.stats)


def test_outputs_stay_close_and_input_is_untouched(bert, tmp_path):
    model, feeds = bert
    before = model_digest(model)
    result = quantize(bert, tmp_path)
    assert model_digest(model) == before
    assert_numerically_close(model, result.model, feeds, min_cosine=0.995)


def test_embedding_tables_are_int8_per_row(bert, tmp_path):
    model, _ = bert
    table = "inner.embeddings.word_embeddings.weight"
    result = quantize(bert, tmp_path)
    initializers = {init.name: init for init in result.model.graph.initializer}
    assert table not in initializers
    values = numpy_helper.to_array(initializers[f"{table}_int8"])
    scale = numpy_helper.to_array(initializers[f"{table}_row_scale"])
    assert values.dtype == np.int8 and scale.shape == (values.shape[0], 1)
    original = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == table))
    # per-row rounding error is at most half a step of that row
    assert np.all(np.abs(values * scale - original) <= scale / 2 + 1e-7)


def test_per_tensor_embeddings_use_ort_gather_quantization(bert, tmp_path):
    result = quantize(bert, tmp_path, embedding_quantization="per-tensor")
    names = {init.name for init in result.model.graph.initializer}
    assert "inner.embeddings.word_embeddings.weight_quantized" in names
    assert result.stats["quantized_nodes"]["Gather"] == 3


def test_per_tensor_weights_and_matmul_only(bert, tmp_path):
    model, feeds = bert
    result = quantize(bert, tmp_path, per_channel=False, op_types=("MatMul",))
    assert result.stats["quantized_nodes"] == {"MatMul": 12}
    assert result.stats["embedding_quantization"] == "none"
    assert_numerically_close(model, result.model, feeds, min_cosine=0.99)


def test_excluded_node_stays_float(bert, tmp_path):
    model, _ = bert
    first = weight_matmuls(model)[0]
    result = quantize(bert, tmp_path, nodes_to_exclude=(first,))
    assert weight_matmuls(result.model) == [first]
    assert result.stats["quantized_nodes"]["MatMul"] == 11
    assert result.stats["excluded_nodes"] == [first]


def test_misspelt_exclusion_is_refused_with_a_suggestion(bert, tmp_path):
    first = weight_matmuls(bert[0])[0]
    with pytest.raises(PassError, match="did you mean"):
        quantize(bert, tmp_path, nodes_to_exclude=(first + "x",))


def test_model_without_quantizable_ops_is_passed_on_naming_the_ops(tmp_path):
    model, feeds = tiny_cnn()  # Conv and Gemm only: Conv is not in the defaults, Gemm unsupported
    ctx = make_context(model, feeds, tmp_path, "convolution")
    result = apply_pass(QuantizeDynamicInt8(), model, ctx)
    assert "Conv" in result.stats["nothing_to_do"] and "MatMul" in result.stats["nothing_to_do"]
    assert result.model.SerializeToString() == model.SerializeToString()


def test_target_fidelity_needs_mixed_precision(bert, tmp_path):
    with pytest.raises(PassError, match="needs mixed_precision"):
        quantize(bert, tmp_path, target_fidelity=0.999)


def test_declared_conflicts():
    catalogue = {p.name: p for p in (QuantizeDynamicInt8, QuantizeStaticInt8)}
    with pytest.raises(ConfigError, match="cannot be combined"):
        check_order(["quantize-dynamic-int8", "quantize-static-int8"], catalogue, "targets/x.toml")
    for other in ("convert-fp16", "quantize-int4-weights"):
        assert other in QuantizeDynamicInt8.conflicts_with
    assert QuantizeDynamicInt8.tools == ("onnx", "onnxruntime")
