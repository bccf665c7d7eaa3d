"""prune-magnitude: exact sparsity, smallest weights zeroed, honest size figures, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from compiler.errors import ConfigError, PassError
from passes.base import Feeds, apply_pass, config_from_options
from passes.prune_magnitude import PruneMagnitude
from tests.onnx_helpers import assert_numerically_close, make_context, tiny_bert, tiny_cnn


@pytest.fixture(scope="module")
def cnn() -> tuple[onnx.ModelProto, list[Feeds]]:
    return tiny_cnn()


def prune(model: onnx.ModelProto, feeds: list[Feeds], tmp_path: Path, **options: object) -> tuple:
    result = apply_pass(
        PruneMagnitude(PruneMagnitude.Config(**options)), model, make_context(model, feeds, tmp_path, "convolution")
    )
    return result.model, result.stats


def arrays(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {init.name: numpy_helper.to_array(init) for init in model.graph.initializer}


def test_per_tensor_sparsity_zeroes_the_smallest_weights(cnn: tuple, tmp_path: Path) -> None:
    model, feeds = cnn
    before = model.SerializeToString()
    pruned, stats = prune(model, feeds, tmp_path, sparsity=0.5, min_size=100)
    assert stats["tensors_pruned"] == 3  # both conv weights and the Gemm weight; no biases
    assert stats["sparsity_achieved"] == pytest.approx(0.5, abs=0.01)
    old, new = arrays(model), arrays(pruned)
    for name, sparsity in stats["per_tensor_sparsity"].items():
        assert sparsity == pytest.approx(0.5, abs=0.01)
        zeroed = new[name] == 0
        assert np.abs(old[name][zeroed]).max() <= np.abs(old[name][~zeroed]).min()
        np.testing.assert_array_equal(new[name][~zeroed], old[name][~zeroed])
    for name in set(old) - set(stats["per_tensor_sparsity"]):  # biases untouched
        np.testing.assert_array_equal(new[name], old[name])
    # The honest part: the dense file does not shrink, only its compressed form does.
    assert stats["raw_bytes_after"] == stats["raw_bytes_before"]
    assert stats["zlib_bytes_after"] < 0.8 * stats["zlib_bytes_before"]
    assert "only compressed size shrinks" in stats["note"]
    # No fine-tuning: outputs move, but stay close on this model (measured min cosine 0.988).
    assert_numerically_close(model, pruned, feeds, min_cosine=0.98)
    assert model.SerializeToString() == before


def test_global_scope_hits_the_target_overall(cnn: tuple, tmp_path: Path) -> None:
    model, feeds = cnn
    pruned, stats = prune(model, feeds, tmp_path, sparsity=0.5, min_size=100, scope="global")
    assert stats["sparsity_achieved"] == pytest.approx(0.5, abs=0.01)
    per_tensor = stats["per_tensor_sparsity"]
    assert max(per_tensor.values()) - min(per_tensor.values()) > 0.05  # layers differ under one threshold
    assert_numerically_close(model, pruned, feeds, min_cosine=0.98)  # measured 0.9975


def test_zero_sparsity_is_the_identity(cnn: tuple, tmp_path: Path) -> None:
    model, feeds = cnn
    pruned, stats = prune(model, feeds, tmp_path, sparsity=0.0, min_size=100)
    assert stats["sparsity_achieved"] == 0.0
    assert_numerically_close(model, pruned, feeds, min_cosine=0.999999, atol=0)


def test_default_min_size_skips_small_tensors_on_bert(tmp_path: Path) -> None:
    model, feeds = tiny_bert()
    pruned, stats = prune(model, feeds, tmp_path)
    assert stats["tensors_pruned"] == 12  # the 12 Linear weights (64x64 and up); embeddings are Gathers
    assert stats["sparsity_achieved"] == pytest.approx(0.5, abs=0.01)
    assert stats["raw_bytes_after"] == stats["raw_bytes_before"]
    assert_numerically_close(model, pruned, feeds, min_cosine=0.999)


def test_nothing_large_enough_is_refused(cnn: tuple, tmp_path: Path) -> None:
    model, feeds = cnn
    with pytest.raises(
        PassError,
        match=r"prune-magnitude.*no Conv/ConvTranspose/MatMul/Gemm weight.*"
        r"min_size=100000",
    ):
        prune(model, feeds, tmp_path, min_size=100_000)


def test_full_sparsity_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="sparsity.*\\[0, 1\\)"):
        config_from_options(PruneMagnitude.Config, {"sparsity": 1.0}, "targets/x.toml passes[1]")
