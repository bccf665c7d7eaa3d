"""fuse: ORT's BERT fusions after folding, Conv+BatchNormalization folding with refusals."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import PassError
from passes.base import Feeds, apply_pass
from passes.fold_constants import FoldConstants
from passes.fuse import Fuse
from tests.onnx_helpers import assert_numerically_close, make_context, tiny_bert, tiny_cnn

SHAPE = {"num_heads": 4, "hidden_size": 64}


@pytest.fixture(scope="module")
def bert() -> tuple[onnx.ModelProto, list[Feeds]]:
    return tiny_bert()


def conv_bn_model() -> onnx.ModelProto:
    """conv1 -> bn1 -> relu (foldable); conv2 -> bn2, plus a residual from conv2 (not foldable)."""
    rng = np.random.default_rng(0)

    def tensor(name: str, values: np.ndarray) -> onnx.TensorProto:
        return numpy_helper.from_array(values.astype(np.float32), name)

    def bn_params(suffix: str) -> list[onnx.TensorProto]:
        return [
            tensor(f"gamma{suffix}", rng.uniform(0.5, 2.0, 8)),
            tensor(f"beta{suffix}", rng.normal(size=8)),
            tensor(f"mean{suffix}", rng.normal(size=8)),
            tensor(f"var{suffix}", rng.uniform(0.5, 2.0, 8)),
        ]

    initializers = [
        tensor("w1", rng.normal(size=(8, 3, 3, 3))),
        tensor("b1", rng.normal(size=8)),
        tensor("w2", rng.normal(size=(8, 8, 1, 1))),
        *bn_params("1"),
        *bn_params("2"),
    ]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node(
            "BatchNormalization", ["c1", "gamma1", "beta1", "mean1", "var1"], ["n1"], name="bn1", epsilon=1e-3
        ),
        helper.make_node("Relu", ["n1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2"),
        helper.make_node("BatchNormalization", ["c2", "gamma2", "beta2", "mean2", "var2"], ["n2"], name="bn2"),
        helper.make_node("Add", ["n2", "c2"], ["y"], name="residual"),
    ]
    graph = helper.make_graph(
        nodes,
        "conv_bn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 8, 8, 8])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model, full_check=True)
    return model


def conv_feeds() -> list[Feeds]:
    rng = np.random.default_rng(1)
    return [{"x": rng.normal(size=(2, 3, 8, 8)).astype(np.float32)} for _ in range(3)]


def test_fold_then_fuse_bert_finds_attention(bert: tuple, tmp_path: Path) -> None:
    model, feeds = bert
    ctx = make_context(model, feeds, tmp_path, "attention", transformer_shape=SHAPE)
    folded = apply_pass(FoldConstants(), model, ctx).model
    before = folded.SerializeToString()
    result = apply_pass(Fuse(), folded, ctx)
    fused = result.stats["fused"]
    assert fused["Attention"] == 2 and fused["BiasGelu"] == 2 and fused["SkipLayerNormalization"] == 4
    assert "EmbedLayerNormalization" not in fused  # kept apart by default for per-row INT8 embeddings
    with_embeddings = apply_pass(Fuse(Fuse.Config(embed_layer_norm=True)), folded, ctx)
    assert with_embeddings.stats["fused"]["EmbedLayerNormalization"] == 1
    ops = Counter(node.op_type for node in result.model.graph.node)
    assert ops["Attention"] == 2 and ops["Softmax"] == 0
    assert result.stats["nodes_after"] < result.stats["nodes_before"] / 3
    assert any(o.domain == "com.microsoft" for o in result.model.opset_import)
    assert_numerically_close(model, result.model, feeds, min_cosine=0.99999, atol=1e-4)
    assert folded.SerializeToString() == before


def test_conv_bn_is_folded_and_refusals_are_reported(tmp_path: Path) -> None:
    model, feeds = conv_bn_model(), conv_feeds()
    before = model.SerializeToString()
    result = apply_pass(Fuse(), model, make_context(model, feeds, tmp_path, "convolution"))
    ops = [node.op_type for node in result.model.graph.node]
    assert ops == ["Conv", "Relu", "Conv", "BatchNormalization", "Add"]  # bn1 gone, bn2 kept
    assert result.stats["conv_bn_folded"] == 1
    assert result.stats["refused"] == [
        {"conv": "conv2", "batch_norm": "bn2", "reason": "Conv output 'c2' is used by more than the BatchNormalization"}
    ]
    names = {init.name for init in result.model.graph.initializer}
    assert not names & {"w1", "b1", "gamma1", "beta1", "mean1", "var1"}  # replaced parameters dropped
    assert_numerically_close(model, result.model, feeds, min_cosine=0.999999, atol=1e-4)
    assert model.SerializeToString() == before


def test_non_constant_bn_parameters_are_refused(tmp_path: Path) -> None:
    model = conv_bn_model()
    model.graph.input.append(helper.make_tensor_value_info("gamma1", TensorProto.FLOAT, [8]))  # overridable
    ctx = make_context(model, [], tmp_path, "generic")
    result = apply_pass(Fuse(Fuse.Config(model_type="conv-bn")), model, ctx)
    assert result.stats["conv_bn_folded"] == 0
    assert "not constant initializers: ['gamma1']" in result.stats["refused"][0]["reason"]


def test_exported_cnn_has_bn_folded_already(tmp_path: Path) -> None:
    model, feeds = tiny_cnn()  # the TorchScript exporter folds BN in eval mode
    assert "BatchNormalization" not in {node.op_type for node in model.graph.node}
    result = apply_pass(Fuse(), model, make_context(model, feeds, tmp_path, "convolution"))
    assert result.stats["conv_bn_folded"] == 0 and result.stats["refused"] == []
    assert_numerically_close(model, result.model, feeds, min_cosine=0.999999, atol=0)


def test_transformer_without_shape_is_refused(bert: tuple, tmp_path: Path) -> None:
    model, feeds = bert
    with pytest.raises(PassError, match="fuse.*num_heads and hidden_size"):
        apply_pass(Fuse(), model, make_context(model, feeds, tmp_path, "attention"))
