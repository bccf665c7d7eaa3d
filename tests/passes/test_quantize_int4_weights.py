"""quantize-int4-weights: MatMulNBits on the tiny BERT, exclusions, options, refusals."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
import pytest

from compiler.errors import ConfigError, PassError
from passes.base import Feeds, apply_pass, config_from_options
from passes.quantize_int4_weights import QuantizeInt4Weights
from tests.onnx_helpers import assert_numerically_close, make_context, tiny_bert, tiny_cnn


@pytest.fixture(scope="module")
def bert() -> tuple[onnx.ModelProto, list[Feeds]]:
    return tiny_bert()


def quantize(model: onnx.ModelProto, feeds: list[Feeds], tmp_path: Path, **options: object) -> tuple:
    result = apply_pass(
        QuantizeInt4Weights(QuantizeInt4Weights.Config(**options)),
        model,
        make_context(model, feeds, tmp_path, "attention"),
    )
    return result.model, result.stats


def weight_matmuls(model: onnx.ModelProto) -> list[str]:
    weights = {init.name for init in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights]


def test_bert_matmul_weights_become_matmulnbits(bert: tuple, tmp_path: Path) -> None:
    model, feeds = bert
    before = model.SerializeToString()
    quantized, stats = quantize(model, feeds, tmp_path)
    ops = Counter(node.op_type for node in quantized.graph.node)
    assert ops["MatMulNBits"] == stats["matmuls_quantized"] == 12  # 6 Linear layers x 2 encoder layers
    assert weight_matmuls(quantized) == []  # the 4 MatMuls left are attention's Q.K and P.V
    assert stats["matmuls_left_float"] == 4
    node = next(n for n in quantized.graph.node if n.op_type == "MatMulNBits")
    assert {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}["block_size"] == 32
    assert stats["bytes_after"] < 0.5 * stats["bytes_before"]  # embeddings stay float32
    # Random-init BERT: measured min cosine 0.99999 (LayerNorm dominates the output).
    assert_numerically_close(model, quantized, feeds, min_cosine=0.9995, atol=0.05)
    assert model.SerializeToString() == before


def test_excluded_node_keeps_float_weight(bert: tuple, tmp_path: Path) -> None:
    model, feeds = bert
    excluded = weight_matmuls(model)[0]
    quantized, stats = quantize(model, feeds, tmp_path, nodes_to_exclude=(excluded,))
    assert stats["matmuls_quantized"] == 11
    assert weight_matmuls(quantized) == [excluded]


def test_asymmetric_with_accuracy_level(bert: tuple, tmp_path: Path) -> None:
    model, feeds = bert
    quantized, stats = quantize(model, feeds, tmp_path, symmetric=False, block_size=16, accuracy_level=4)
    node = next(n for n in quantized.graph.node if n.op_type == "MatMulNBits")
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attributes["block_size"] == 16 and attributes["accuracy_level"] == 4
    assert len(node.input) >= 4 and node.input[3]  # zero points present
    assert_numerically_close(model, quantized, feeds, min_cosine=0.9995, atol=0.05)


def test_model_without_matmul_weights_is_passed_on(tmp_path: Path) -> None:
    model, feeds = tiny_cnn()  # Conv and Gemm only
    quantized, stats = quantize(model, feeds, tmp_path)
    assert "no MatMul with a constant" in stats["nothing_to_do"] and "'Gemm': 1" in stats["nothing_to_do"]
    assert quantized.SerializeToString() == model.SerializeToString()


def test_unknown_excluded_node_is_refused(bert: tuple, tmp_path: Path) -> None:
    model, feeds = bert
    with pytest.raises(PassError, match="nodes_to_exclude names 'nope'"):
        quantize(model, feeds, tmp_path, nodes_to_exclude=("nope",))


def test_bad_block_size_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="block_size.*power of two"):
        config_from_options(QuantizeInt4Weights.Config, {"block_size": 24}, "targets/x.toml passes[1]")


def test_mixed_precision_keeps_sensitive_matmuls_in_float(bert: tuple, tmp_path: Path) -> None:
    model, feeds = bert
    plain = apply_pass(QuantizeInt4Weights(), model, make_context(model, feeds, tmp_path, "attention"))
    ctx = make_context(model, feeds, tmp_path, "attention", min_cosine=0.9999999)  # unreachable in 4 bits
    result = apply_pass(
        QuantizeInt4Weights(QuantizeInt4Weights.Config(mixed_precision=True, max_excluded=2)), model, ctx
    )
    search = result.stats["mixed_precision"]
    assert 1 <= len(search["excluded_nodes"]) <= 2 and result.stats["excluded"] == search["excluded_nodes"]
    assert result.stats["matmuls_quantized"] == 12 - len(search["excluded_nodes"])
    assert ctx.evaluate(result.model).value > ctx.evaluate(plain.model).value
