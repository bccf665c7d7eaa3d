"""fold-constants: folding on a real BERT export, dynamic axes kept, size limits, fallback, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.errors import DataError, PassError
from passes.base import Feeds, apply_pass
from passes.fold_constants import FoldConstants
from tests.onnx_helpers import assert_numerically_close, make_context, run_ort, tiny_bert

SHAPE = {"num_heads": 4, "hidden_size": 64}


@pytest.fixture(scope="module")
def bert() -> tuple[onnx.ModelProto, list[Feeds]]:
    return tiny_bert()


def fold(
    model: onnx.ModelProto, feeds: list[Feeds], tmp_path: Path, family: str = "attention", **options: object
) -> tuple[onnx.ModelProto, dict]:
    ctx = make_context(model, feeds, tmp_path, family, transformer_shape=SHAPE)
    result = apply_pass(FoldConstants(FoldConstants.Config(**options)), model, ctx)
    return result.model, result.stats


def io_dims(model: onnx.ModelProto) -> list[tuple[str, list]]:
    return [
        (v.name, [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
        for v in [*model.graph.input, *model.graph.output]
    ]


def constant_matmul(branches: int, rows: int) -> onnx.ModelProto:
    """x @ (sum of `branches` ConstantOfShape([rows, 1024]) tensors): folding creates rows*4 KB each."""
    shape = numpy_helper.from_array(np.array([rows, 1024], dtype=np.int64), "shape")
    # Distinct fill values, or onnxslim's common-subexpression elimination merges the branches.
    nodes = [
        helper.make_node(
            "ConstantOfShape",
            ["shape"],
            [f"c{i}"],
            name=f"fill{i}",
            value=numpy_helper.from_array(np.array([i + 0.5], dtype=np.float32)),
        )
        for i in range(branches)
    ]
    nodes += [helper.make_node("MatMul", ["x", f"c{i}"], [f"y{i}"], name=f"matmul{i}") for i in range(branches)]
    nodes.append(helper.make_node("Sum", [f"y{i}" for i in range(branches)], ["y"], name="sum"))
    graph = helper.make_graph(
        nodes,
        "constants",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", rows])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1024])],
        [shape],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_folds_bert_keeps_symbolic_axes_and_outputs(bert: tuple, tmp_path: Path) -> None:
    model, feeds = bert
    before = model.SerializeToString()
    folded, stats = fold(model, feeds, tmp_path)
    assert stats["backend"] == "onnxslim" and stats["level"] == "fold"
    assert stats["nodes_after"] < stats["nodes_before"] * 0.6  # 286 -> 139 on this export
    assert not any(node.op_type in ("Constant", "ConstantOfShape") for node in folded.graph.node)
    assert (
        io_dims(folded)
        == io_dims(model)
        == [
            ("input_ids", ["batch", "seq"]),
            ("attention_mask", ["batch", "seq"]),
            ("last_hidden_state", ["batch", "seq", 64]),
        ]
    )
    assert stats["check"] == {"feeds": "calibration", "batches": 4, "min_cosine": pytest.approx(1.0, abs=1e-6)}
    assert_numerically_close(model, folded, feeds, min_cosine=0.99999, atol=1e-5)
    # Dynamic axes really stay dynamic: another batch size and sequence length still run.
    other = {
        "input_ids": np.arange(14, dtype=np.int64).reshape(2, 7) % 200,
        "attention_mask": np.ones((2, 7), dtype=np.int64),
    }
    np.testing.assert_allclose(run_ort(folded, other)[0], run_ort(model, other)[0], atol=1e-5)
    assert model.SerializeToString() == before


def test_full_level_simplifies_further(bert: tuple, tmp_path: Path) -> None:
    model, feeds = bert
    folded, _ = fold(model, feeds, tmp_path)
    full, stats = fold(model, feeds, tmp_path, family="other")
    assert stats["level"] == "full"
    assert len(full.graph.node) < len(folded.graph.node)
    assert io_dims(full) == io_dims(model)
    assert_numerically_close(model, full, feeds, min_cosine=0.99999, atol=1e-5)


def test_tensor_size_limit_stops_folding(tmp_path: Path) -> None:
    model = constant_matmul(branches=1, rows=1024)  # folding makes one 4 MB tensor
    folded, stats = fold(model, [], tmp_path, family="other")
    assert "ConstantOfShape" not in {n.op_type for n in folded.graph.node}
    assert stats["bytes_after"] >= 4 << 20  # tensor bytes
    assert stats["check"]["feeds"] == "generated"  # no calibration batches: generated feeds
    limited, stats = fold(model, [], tmp_path, family="other", max_constant_mb=1.0)
    assert "ConstantOfShape" in {n.op_type for n in limited.graph.node}
    assert stats["bytes_after"] < 4096


def test_model_growth_limit_keeps_the_input(tmp_path: Path) -> None:
    model = constant_matmul(branches=2, rows=512)  # two 2 MB tensors: each under 3 MB, 4 MB in all
    folded, stats = fold(model, [], tmp_path, family="other", max_constant_mb=3.0)
    assert "grew the model by 4.0 MB" in stats["kept_input"]
    assert folded.SerializeToString() == model.SerializeToString()


def test_falls_back_to_onnxsim(bert: tuple, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import onnxslim

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("simulated onnxslim failure")

    monkeypatch.setattr(onnxslim, "slim", broken)
    model, feeds = bert
    folded, stats = fold(model, feeds, tmp_path)
    assert stats["backend"] == "onnxsim"
    assert "simulated onnxslim failure" in stats["onnxslim_error"]
    assert stats["nodes_after"] < stats["nodes_before"]
    assert io_dims(folded) == io_dims(model)
    assert_numerically_close(model, folded, feeds, min_cosine=0.99999, atol=1e-5)


def test_calibration_error_falls_back_to_generated_feeds(bert: tuple, tmp_path: Path) -> None:
    model, feeds = bert
    ctx = make_context(model, feeds, tmp_path, "attention")

    def no_data() -> list[Feeds]:
        raise DataError("no representative data")

    ctx.calibration = no_data
    stats = apply_pass(FoldConstants(), model, ctx).stats
    assert stats["check"]["feeds"] == "generated"


def test_unknown_op_is_refused_naming_it(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [
            helper.make_node("Mystery", ["x"], ["t"], name="mystery0", domain="com.example"),
            helper.make_node("Relu", ["t"], ["y"], name="relu"),
        ],
        "custom",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.example", 1)], ir_version=8
    )
    with pytest.raises(PassError, match=r"fold-constants.*cannot load the input model.*Mystery"):
        fold(model, [], tmp_path, family="other")


def invented_output_dim() -> onnx.ModelProto:
    """x[batch, 4] @ w[4, 3]: the output's second dim is 3, but the file names it as an exporter
    would ("MatMuly_dim_1"), as a ViT export names its sequence and hidden dims."""
    weights = numpy_helper.from_array(np.ones((4, 3), np.float32), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "invented",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "MatMuly_dim_1"])],
        [weights],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def fold_declared(model: onnx.ModelProto, tmp_path: Path, declared: frozenset[str] | None) -> dict:
    feeds = [{"x": np.ones((2, 4), np.float32)}]
    context = make_context(model, feeds, tmp_path, "other")
    context.dynamic_axes = declared
    result = apply_pass(FoldConstants(), model, context)
    return {"stats": result.stats, "dims": io_dims(result.model)}


def test_exporter_invented_output_dim_may_be_resolved(tmp_path: Path) -> None:
    folded = fold_declared(invented_output_dim(), tmp_path, frozenset({"batch"}))
    assert folded["stats"]["resolved_output_dims"] == {"y[1]: MatMuly_dim_1": 3}
    assert ("y", ["batch", 3]) in folded["dims"]  # the declared axis stays symbolic


def test_declared_output_axis_must_stay_symbolic(tmp_path: Path) -> None:
    with pytest.raises(PassError, match=r"dynamic axes must stay symbolic: declared \['MatMuly_dim_1', 'batch'\]"):
        fold_declared(invented_output_dim(), tmp_path, frozenset({"batch", "MatMuly_dim_1"}))
