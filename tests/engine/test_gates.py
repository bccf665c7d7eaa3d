"""Verification gates: blame for the pass that broke the budget, and the speed gate."""

from __future__ import annotations

import pytest

from compiler.engine.gates import check_fidelity, check_integer_work, speed_verdict
from compiler.errors import BudgetError
from passes.base import Fidelity


def test_over_budget_names_metric_value_budget_and_pass() -> None:
    recipe = "m"
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


def _counted(integer: int, fmla: int) -> dict:
    artifact = {"total": 1_000_000, "sdot_udot": 0, "smull_smlal": integer, "sadalp": 0, "fmla": fmla, "scalar_fp": 5}
    return {"cpu": "cortex-a72", "artifact": artifact, "integer_mac": integer}


def test_int8_in_name_only() -> None:
    check_integer_work("arm64-int8", "int8", _counted(integer=400_000, fmla=0))
    check_integer_work("arm64-fp32", "fp32", _counted(integer=0, fmla=600_000))  # FP32 targets promise no integers
    check_integer_work("desktop-int8", "int8", None)  # not counted (runs on this host): nothing to judge
    with pytest.raises(
        BudgetError, match=r"arm64-int8: INT8 in name only: .*cortex-a72.*1,000,000 instructions.*600,000 FMLA"
    ):
        check_integer_work("arm64-int8", "int8", _counted(integer=0, fmla=600_000))
