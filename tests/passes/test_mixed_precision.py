"""Sensitivity-driven mixed precision: through both quantize passes, and the search on its own."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest

from compiler.errors import PassError
from passes.base import Feeds, Fidelity, PassContext, apply_pass
from passes.mixed_precision import SearchSettings, search_exclusions
from passes.quantize_dynamic_int8 import QuantizeDynamicInt8
from passes.quantize_static_int8 import QuantizeStaticInt8
from tests.onnx_helpers import make_context, tiny_bert, tiny_cnn

Dynamic = QuantizeDynamicInt8.Config


@pytest.fixture(scope="module")
def bert() -> tuple[onnx.ModelProto, list[Feeds]]:
    model, feeds = tiny_bert()
    return model, feeds[:4]  # fewer batches: every search step evaluates on all of them


def float_nodes(model: onnx.ModelProto, names: list[str]) -> list[str]:
    """Those of `names` still present under their own name and original op type (not quantized)."""
    present = {(node.name, node.op_type) for node in model.graph.node}
    return [name for name in names if (name, "MatMul") in present or (name, "Gather") in present]


def test_tight_budget_leaves_the_most_sensitive_nodes_in_fp32(bert, tmp_path):
    model, feeds = bert
    ctx = make_context(model, feeds, tmp_path, "attention", min_cosine=0.99999)
    result = apply_pass(QuantizeDynamicInt8(Dynamic(mixed_precision=True)), model, ctx)
    search = result.stats["mixed_precision"]
    assert search["searched"] and search["budget_met"]
    assert search["excluded_nodes"], search
    assert result.stats["excluded_nodes"] == search["excluded_nodes"]
    assert float_nodes(result.model, search["excluded_nodes"]) == search["excluded_nodes"]
    assert search["fidelity_after"]["value"] > search["fidelity_before"]["value"]
    assert not search["fidelity_before"]["within_budget"] and search["fidelity_after"]["within_budget"]
    assert search["evaluations"] == 1 + search["candidates"] + len(search["excluded_nodes"]) + len(
        search["rejected_nodes"]
    )
    assert search["size_bytes_after"] > search["size_bytes_before"]  # the price of FP32 nodes
    assert ctx.evaluate(result.model).within_budget
    json.dumps(result.stats)


def test_no_search_when_already_within_budget(bert, tmp_path):
    model, feeds = bert
    ctx = make_context(model, feeds, tmp_path, "attention", min_cosine=0.99)
    plain = apply_pass(QuantizeDynamicInt8(), model, ctx).model
    result = apply_pass(QuantizeDynamicInt8(Dynamic(mixed_precision=True)), model, ctx)
    assert result.stats["mixed_precision"]["searched"] is False
    assert result.stats["mixed_precision"]["evaluations"] == 1
    assert result.model.SerializeToString() == plain.SerializeToString()


def test_target_fidelity_searches_past_the_budget(bert, tmp_path):
    model, feeds = bert
    ctx = make_context(model, feeds, tmp_path, "attention", min_cosine=0.9)
    config = Dynamic(mixed_precision=True, target_fidelity=0.99999, search_evaluations=4)
    search = apply_pass(QuantizeDynamicInt8(config), model, ctx).stats["mixed_precision"]
    assert search["searched"] and search["excluded_nodes"]
    assert search["granularity"] == "block"  # 15 candidates, 4 measurements: neighbours merged
    assert search["evaluations"] <= 1 + 4 + len(search["excluded_nodes"]) + len(search["rejected_nodes"])


def test_unreachable_budget_returns_best_model_and_says_so(bert, tmp_path):
    model, feeds = bert
    ctx = make_context(model, feeds, tmp_path, "attention", min_cosine=1.1)  # cannot be met
    config = Dynamic(mixed_precision=True, max_excluded=2, search_evaluations=11)
    result = apply_pass(QuantizeDynamicInt8(config), model, ctx)
    search = result.stats["mixed_precision"]
    assert search["granularity"] == "shared-input"  # 11 groups: Q/K/V share their input
    assert search["budget_met"] is False
    assert len(search["excluded_nodes"]) <= 2
    assert "budget not met" in search["message"] and "max_excluded" in search["message"]


def test_static_cnn_mixed_precision(tmp_path):
    model, feeds = tiny_cnn()
    ctx = make_context(model, feeds, tmp_path, "convolution", min_cosine=0.9999999)
    config = QuantizeStaticInt8.Config(mixed_precision=True, max_excluded=3)
    result = apply_pass(QuantizeStaticInt8(config), model, ctx)
    search = result.stats["mixed_precision"]
    assert search["searched"] and search["excluded_nodes"]
    assert search["fidelity_after"]["value"] > search["fidelity_before"]["value"]
    quantized = set(result.stats["quantized_nodes"])
    assert quantized, result.stats  # the rest is still INT8


def test_search_options_are_checked(bert, tmp_path):
    model, feeds = bert
    ctx = make_context(model, feeds, tmp_path, "attention", min_cosine=0.99999)
    with pytest.raises(PassError, match="max_excluded = 0 must be at least 1"):
        apply_pass(QuantizeDynamicInt8(Dynamic(mixed_precision=True, max_excluded=0)), model, ctx)


def test_search_excludes_the_most_sensitive_node_first(tmp_path: Path):
    """An accuracy metric (Fidelity.value is higher-is-better by contract): the biggest gain wins."""
    model = onnx.ModelProto()
    gains = {"a": 0.4, "b": 0.05, "c": -0.01}  # accuracy points that excluding each node recovers

    def quantize(excluded: tuple[str, ...]) -> onnx.ModelProto:
        candidate = onnx.ModelProto()
        candidate.doc_string = ",".join(excluded)
        return candidate

    def evaluate(candidate: onnx.ModelProto) -> Fidelity:
        excluded = [name for name in candidate.doc_string.split(",") if name]
        accuracy = 99.0 + sum(gains[name] for name in excluded)
        return Fidelity("top1_accuracy", accuracy, accuracy >= 99.35, f"accuracy {accuracy:.2f}")

    ctx = PassContext(tmp_path, "other", lambda: [], evaluate, "test")
    outcome = search_exclusions(model, quantize, quantize(()), ["a", "b", "c"], ctx, SearchSettings(max_excluded=2))
    assert outcome.stats["excluded_nodes"] == ["a"]
    assert outcome.stats["budget_met"] is True
    assert outcome.stats["evaluations"] == 1 + 3 + 1
    assert [entry["nodes"] for entry in outcome.stats["most_sensitive"]][:2] == [["a"], ["b"]]
