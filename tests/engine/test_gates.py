"""Verification gates: blame for the pass that broke the budget, and the speed gate."""

from __future__ import annotations

import pytest

from compiler.engine.gates import check_fidelity, check_integer_work, speed_decision, speed_verdict
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


def test_speed_gate_on_a_single_figure() -> None:
    """A family that measures one figure (no rounds): the gate compares it, and says there is no spread."""
    assert speed_verdict("warn", 1.0, "t", [0.5]) is None
    assert "1.40x the latency of ORT FP32 on this host (one interleaved measurement, no spread)" in str(
        speed_verdict("warn", 1.0, "t", [1.4])
    )
    assert speed_verdict("off", 1.0, "t", [7.0]) is None
    assert speed_verdict("warn", 1.0, "t", []) is None  # not measured here (a cross-compiled artifact)
    with pytest.raises(BudgetError, match="7.00x the latency"):
        speed_verdict("fail", 1.0, "t", [7.0])


# Per-round CPU-time ratios of an artifact as fast as ORT FP32 on a noisy host: the median is just
# over the 1.0x gate, but a third of the rounds are under it.
NOISE = [0.97, 1.04, 0.99, 1.06, 1.01, 1.03, 0.98, 1.05, 1.02]
REGRESSION = [1.31, 1.36, 1.29, 1.40, 1.33, 0.98, 1.35, 1.38, 1.30]  # one lucky round


def test_speed_gate_does_not_fire_on_noise_within_the_measured_spread() -> None:
    assert speed_decision(NOISE, 1.0) == "within spread"
    assert speed_verdict("warn", 1.0, "t", NOISE) is None
    speed_verdict("fail", 1.0, "t", NOISE)  # no BudgetError either
    assert speed_decision([0.52, 0.49, 0.55], 1.0) == "pass"


def test_speed_gate_fires_on_a_clear_regression_beyond_the_spread() -> None:
    assert speed_decision(REGRESSION, 1.0) == "slower"
    message = speed_verdict("warn", 1.0, "desktop-int8", REGRESSION, wall_ratios=[1.5] * 9)
    assert message is not None
    assert message.startswith("desktop-int8: the artifact takes 1.33x the CPU time per call of ORT FP32")
    assert "median of 9 alternating rounds, interquartile 1.30-1.36, range 0.98-1.40; wall time 1.50x" in message
    with pytest.raises(BudgetError, match=r"1\.33x the CPU time per call.*speed_gate = \"warn\""):
        speed_verdict("fail", 1.0, "t", REGRESSION)
    assert speed_decision(REGRESSION, 1.5) == "pass"  # a looser gate


def test_a_failure_at_import_gets_import_advice_not_pass_advice() -> None:
    bad = Fidelity("output_cosine", 0.0, False, "mean output cosine 0.0000 (min 0.0000); budget mean >= 0.99")
    seen = "outputs are all within 1e-09 of zero (largest |value| 3.20e-10): the weights look degenerate (...)"
    with pytest.raises(BudgetError) as raised:
        check_fidelity(
            "m", "after passes", bad, [("import", bad), ("fold-constants", bad)], import_outputs=lambda: seen
        )
    message = str(raised.value)
    assert "over budget already at import, before any pass ran" in message
    assert "The imported model's outputs are all within 1e-09 of zero" in message
    assert "after pass 'import'" not in message and "that pass's options" not in message
    advice = r"either the budget asks more than the unmodified model gives.*already differs from the"
    with pytest.raises(BudgetError, match=advice):
        check_fidelity("m", "after passes", bad, [("import", bad)], import_outputs=lambda: None)


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


def test_a_failure_only_after_compilation_blames_the_compilation_not_a_pass() -> None:
    good = Fidelity("output_cosine", 0.999, True, "mean output cosine 0.9990")
    bad = Fidelity("output_cosine", 0.5, False, "mean output cosine 0.5000; budget mean >= 0.99")
    with pytest.raises(BudgetError) as raised:
        check_fidelity("m", "after compilation", bad, [("import", good), ("quantize-static-int8", good)])
    message = str(raised.value)
    assert "the model after every pass was within budget, so the compilation lost it" in message
    assert "that pass's options" not in message
