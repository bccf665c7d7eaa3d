"""Verification gates: each metric's value and budget, blame for the pass that broke it, speed gate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compiler.engine.specs import ModelRecipe
from compiler.errors import BudgetError
from compiler.engine.gates import check_fidelity, score, speed_verdict
from passes.base import Fidelity


def test_embedding_cosine_pools_by_mask() -> None:
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((1, 4, 8)).astype(np.float32)
    noisy_padding = hidden.copy()
    noisy_padding[0, 3] += 100  # a padded position: must not count
    feeds = [{"attention_mask": np.array([[1, 1, 1, 0]])}]
    fidelity = score(
        {"kind": "embedding_cosine", "min_mean": 0.99, "min_each": 0.95}, [[hidden]], [[noisy_padding]], feeds, None
    )
    assert fidelity.value == pytest.approx(1.0) and fidelity.within_budget
    fidelity = score({"kind": "embedding_cosine", "min_mean": 0.99}, [[hidden]], [[-hidden]], feeds, None)
    assert fidelity.value == pytest.approx(-1.0) and not fidelity.within_budget


def test_top1_accuracy_budget_is_a_drop_in_points() -> None:
    labels = np.array([0, 1, 2, 3])
    reference = [[np.eye(4)]]  # 100 %
    one_wrong = np.eye(4)
    one_wrong[3] = [1, 0, 0, 0]  # 75 %
    fidelity = score({"kind": "top1_accuracy", "max_drop": 0.5}, reference, [[one_wrong]], [{}], labels)
    assert fidelity.value == 75.0 and fidelity.detail["accuracy_drop"] == 25.0 and not fidelity.within_budget
    assert "drop 25.00 points" in fidelity.summary
    assert score({"kind": "top1_accuracy", "max_drop": 30}, reference, [[one_wrong]], [{}], labels).within_budget


def test_over_budget_names_metric_value_budget_and_pass(tmp_path: Path) -> None:
    recipe = ModelRecipe("m", "1", "", None, "cnn", "onnx", "x", (), (), {}, {"kind": "top1_accuracy"}, {})
    good = Fidelity("top1_accuracy", 99.0, True, "ok")
    bad = Fidelity("top1_accuracy", 90.0, False, "top-1 accuracy 90.00% (drop 9.00 points); budget drop <= 0.5")
    check_fidelity(recipe, "after passes", good, [("import", good)])
    with pytest.raises(
        BudgetError,
        match=r"after passes fidelity over budget: top-1 accuracy 90\.00%.*budget drop "
        r"<= 0\.5; first over budget after pass 'quantize-static-int8'",
    ):
        check_fidelity(recipe, "after passes", bad, [("import", good), ("quantize-static-int8", bad), ("x", bad)])


def test_speed_gate() -> None:
    assert speed_verdict("warn", 1.0, 0.5, "t") is None
    assert "1.40x the latency of ORT FP32" in speed_verdict("warn", 1.0, 1.4, "t")
    assert speed_verdict("off", 1.0, 7.0, "t") is None
    with pytest.raises(BudgetError, match="7.00x the latency"):
        speed_verdict("fail", 1.0, 7.0, "t")
