"""quantize-static-int8 on a real (tiny) CNN and BERT: QDQ structure, numerics, calibration data."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

import passes.quantize_static_int8 as static_module
from compiler.errors import DataError
from passes.base import Feeds, PassContext, PassResult, apply_pass, model_digest
from passes.quantize_static_int8 import QuantizeStaticInt8
from tests.onnx_helpers import assert_numerically_close, make_context, tiny_bert, tiny_cnn

Config = QuantizeStaticInt8.Config


@pytest.fixture(scope="module")
def cnn() -> tuple[onnx.ModelProto, list[Feeds]]:
    return tiny_cnn()


def quantize(model: onnx.ModelProto, ctx: PassContext, **options: object) -> PassResult:
    return apply_pass(QuantizeStaticInt8(Config(**options)), model, ctx)  # type: ignore[arg-type]


def test_qdq_nodes_int8_per_channel_weights_uint8_activations(cnn, tmp_path):
    model, feeds = cnn
    result = quantize(model, make_context(model, feeds, tmp_path, "convolution"))
    ops = Counter(node.op_type for node in result.model.graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0
    initializers = {init.name: numpy_helper.to_array(init) for init in result.model.graph.initializer}
    conv_weights = [name for name in initializers if name.endswith("_quantized") and initializers[name].ndim == 4]
    assert conv_weights and all(initializers[name].dtype == np.int8 for name in conv_weights)
    # per channel: one scale per output channel of the second Conv (32)
    assert any(
        value.shape == (32,) and value.dtype == np.float32
        for name, value in initializers.items()
        if name.endswith("_scale")
    )
    activations = [node for node in result.model.graph.node if node.op_type == "QuantizeLinear"]
    zero_points = [initializers[node.input[2]] for node in activations]
    assert all(zero_point.dtype == np.uint8 for zero_point in zero_points)
    assert result.stats["quantized_nodes"]["Conv"] == 2
    assert result.stats["preprocess"] == "done"
    assert result.stats["size_bytes_after"] < result.stats["size_bytes_before"]
    json.dumps(result.stats)


def test_outputs_stay_close_and_input_is_untouched(cnn, tmp_path):
    model, feeds = cnn
    before = model_digest(model)
    result = quantize(model, make_context(model, feeds, tmp_path, "convolution"))
    assert model_digest(model) == before
    assert_numerically_close(model, result.model, feeds, min_cosine=0.99)


def test_calibration_is_limited_to_calibration_samples(cnn, tmp_path, monkeypatch):
    model, feeds = cnn
    seen: list[Feeds] = []
    original = static_module._FeedReader.get_next

    def counting(self: static_module._FeedReader) -> Feeds | None:
        feed = original(self)
        if feed is not None:
            seen.append(feed)
        return feed

    monkeypatch.setattr(static_module._FeedReader, "get_next", counting)
    ctx = make_context(model, feeds, tmp_path, "convolution")
    result = quantize(model, ctx, calibration_samples=3, calibrate_method="percentile")
    assert len(seen) == 3
    assert result.stats["calibration_samples"] == 3
    assert result.stats["calibrate_method"] == "percentile"


def test_empty_calibration_data_is_a_data_error(cnn, tmp_path):
    model, feeds = cnn
    ctx = make_context(model, feeds, tmp_path, "convolution")
    ctx.calibration = lambda: []
    with pytest.raises(DataError, match="needs calibration data.*representative is empty"):
        quantize(model, ctx)


def test_missing_calibration_data_propagates(cnn, tmp_path):
    model, feeds = cnn
    ctx = make_context(model, feeds, tmp_path, "convolution")

    def no_data() -> list[Feeds]:
        raise DataError("the recipe has no data.representative")

    ctx.calibration = no_data
    with pytest.raises(DataError, match="no data.representative"):
        quantize(model, ctx)


def test_calibration_batches_lacking_an_input_are_a_data_error(cnn, tmp_path):
    model, feeds = cnn
    ctx = make_context(model, feeds, tmp_path, "convolution")
    ctx.calibration = lambda: [{"pixels": feed["image"]} for feed in feeds]
    with pytest.raises(DataError, match="lacks model input.*image"):
        quantize(model, ctx)


def test_failed_preprocessing_is_recorded_and_skipped(cnn, tmp_path, monkeypatch):
    model, feeds = cnn

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("symbolic shape inference gave up")

    monkeypatch.setattr(static_module, "quant_pre_process", broken)
    result = quantize(model, make_context(model, feeds, tmp_path, "convolution"))
    assert result.stats["preprocess"].startswith("skipped: RuntimeError: symbolic shape inference")
    assert_numerically_close(model, result.model, feeds, min_cosine=0.99)


def test_excluded_conv_keeps_float_weights(cnn, tmp_path):
    model, feeds = cnn
    conv = next(node for node in model.graph.node if node.op_type == "Conv")
    result = quantize(model, make_context(model, feeds, tmp_path, "convolution"), nodes_to_exclude=(conv.name,))
    kept = next(node for node in result.model.graph.node if node.name == conv.name)
    constants = {init.name: init for init in result.model.graph.initializer}
    assert constants[kept.input[1]].data_type == onnx.TensorProto.FLOAT
    assert result.stats["quantized_nodes"]["Conv"] == 1
    assert result.stats["excluded_nodes"] == [conv.name]


def test_transformer_with_restricted_op_types(tmp_path: Path):
    model, feeds = tiny_bert()
    result = quantize(model, make_context(model, feeds, tmp_path, "attention"), op_types_to_quantize=("MatMul",))
    assert result.stats["quantized_nodes"] == {"MatMul": 16}  # weights and attention MatMuls alike
    assert_numerically_close(model, result.model, feeds, min_cosine=0.99)
