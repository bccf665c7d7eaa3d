"""convert-fp16: float16 weights on the tiny CNN and BERT, float32 I/O by default, block lists."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto

from compiler.errors import PassError
from passes.base import Feeds, apply_pass
from passes.convert_fp16 import ConvertFp16
from tests.onnx_helpers import assert_numerically_close, make_context, tiny_bert, tiny_cnn


@pytest.fixture(scope="module")
def cnn() -> tuple[onnx.ModelProto, list[Feeds]]:
    return tiny_cnn()


def convert(model: onnx.ModelProto, feeds: list[Feeds], tmp_path: Path, **options: object) -> tuple:
    result = apply_pass(
        ConvertFp16(ConvertFp16.Config(**options)), model, make_context(model, feeds, tmp_path, "convolution")
    )
    return result.model, result.stats


def initializer_types(model: onnx.ModelProto) -> Counter:
    return Counter(TensorProto.DataType.Name(init.data_type) for init in model.graph.initializer)


def io_types(model: onnx.ModelProto) -> list[int]:
    return [v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.output]]


def test_cnn_weights_become_float16_io_stays_float32(cnn: tuple, tmp_path: Path) -> None:
    model, feeds = cnn
    before = model.SerializeToString()
    converted, stats = convert(model, feeds, tmp_path)
    assert initializer_types(converted) == {"FLOAT16": 6}
    assert io_types(converted) == [TensorProto.FLOAT, TensorProto.FLOAT]
    assert stats["bytes_after"] < 0.6 * stats["bytes_before"]
    assert stats["cast_nodes_added"] == 2  # one at the input, one at the output
    assert_numerically_close(model, converted, feeds, min_cosine=0.9999, atol=1e-3)
    assert model.SerializeToString() == before


def test_bert_converts_with_small_error(tmp_path: Path) -> None:
    model, feeds = tiny_bert()
    converted, stats = convert(model, feeds, tmp_path)
    assert stats["initializers_float32"] == 0 and stats["initializers_float16"] > 0
    assert io_types(converted) == io_types(model)  # int64 ids and mask, float32 output
    # float16 keeps ~3 digits; LayerNorm outputs of order 1-4 differ by a few 1e-3.
    assert_numerically_close(model, converted, feeds, min_cosine=0.9999, atol=2e-2)


def test_block_list_and_float16_io(cnn: tuple, tmp_path: Path) -> None:
    model, feeds = cnn
    converted, stats = convert(model, feeds, tmp_path, keep_io_types=False, op_block_list=("Gemm",))
    assert io_types(converted) == [TensorProto.FLOAT16, TensorProto.FLOAT16]
    assert initializer_types(converted) == {"FLOAT16": 4, "FLOAT": 2}  # Gemm's weight and bias stay
    gemm = next(node for node in converted.graph.node if node.op_type == "Gemm")
    assert all(init.data_type == TensorProto.FLOAT for init in converted.graph.initializer if init.name in gemm.input)


def test_already_float16_model_is_passed_on_with_nothing_to_do(cnn: tuple, tmp_path: Path) -> None:
    model, feeds = cnn
    converted, _ = convert(model, feeds, tmp_path)
    again, stats = convert(converted, feeds, tmp_path)
    assert "no float32 initializer" in stats["nothing_to_do"] and "FLOAT16" in stats["nothing_to_do"]
    assert again.SerializeToString() == converted.SerializeToString()


def test_unknown_block_list_node_is_refused(cnn: tuple, tmp_path: Path) -> None:
    model, feeds = cnn
    with pytest.raises(PassError, match="not in the graph.*'/head/Gem'"):
        convert(model, feeds, tmp_path, node_block_list=("/head/Gem",))
