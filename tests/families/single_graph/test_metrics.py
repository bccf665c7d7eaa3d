"""Tensor metrics of one-graph models: each metric's value and budget."""

from __future__ import annotations

import numpy as np
import pytest

from compiler.families.single_graph.metrics import score


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
