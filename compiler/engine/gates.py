"""Verification gates: fidelity against the budget (after passes, after compilation), and speed.

A gate failure is a BudgetError naming the metric, the value, the budget, the first row over
budget and what to do (a failure already at the import row gets the import stage's advice, not a
pass's); the speed gate compares the artifact with ONNX Runtime FP32 on this host (off, warn or
fail, per target) by per-round CPU-time ratios and fires only when the ratio is over the threshold
beyond their measured spread; an INT8 target whose emulated artifact executes no integer
multiply-accumulate instructions fails ("INT8 in name only").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np

from compiler.engine.diagnosis import import_failure_advice
from compiler.errors import BudgetError
from passes.base import Fidelity

IMPORT_STAGE = "import"  # the import row's stage name, in every family
ADVICE = (
    "Relax the recipe's [metric] budget, or change that pass's options (e.g. mixed_precision = true) in the target file"
)


def check_fidelity(
    model: str,
    stage: str,
    fidelity: Fidelity,
    per_pass: Sequence[tuple[str, Fidelity]],
    advice: str = ADVICE,
    import_outputs: Callable[[], str | None] | None = None,
) -> None:
    """Fail the build when over budget, naming the metric, value, budget and the pass that broke it.

    When the first row over budget is the import itself (row "import"), no pass is to blame: the
    message says so, with what `import_outputs()` saw of the imported model's outputs (called only
    then; None: nothing degenerate), instead of the pass advice."""
    if fidelity.within_budget:
        return
    culprit = next((name for name, f in per_pass if not f.within_budget), None)
    if culprit == IMPORT_STAGE:
        seen = import_outputs() if import_outputs is not None else None
        raise BudgetError(
            f"{model}: {stage} fidelity over budget: {fidelity.summary}; over budget already at import, before "
            f"any pass ran. {import_failure_advice(seen)}"
        )
    if culprit is None and per_pass and stage == "after compilation":
        raise BudgetError(
            f"{model}: {stage} fidelity over budget: {fidelity.summary}; the model after every pass was within "
            "budget, so the compilation lost it (the runtime's conversion, not a pass option): build it for "
            "another precision or runtime of this board, or relax the recipe's [metric] budget"
        )
    blame = f"; first over budget after pass '{culprit}'" if culprit else ""
    raise BudgetError(f"{model}: {stage} fidelity over budget: {fidelity.summary}{blame}. {advice}")


def check_integer_work(target: str, precision: str, instructions: dict[str, Any] | None) -> None:
    """Fail an INT8 target whose artifact, counted under emulation, executed no integer
    multiply-accumulate instructions: its "INT8" is floating-point work on integer-looking weights."""
    if precision != "int8" or not instructions or instructions.get("integer_mac", 0) > 0:
        return
    counts = instructions["artifact"]
    raise BudgetError(
        f"{target}: INT8 in name only: per inference under qemu -cpu {instructions['cpu']} the artifact executed "
        f"{counts['total']:,} instructions, none of them integer multiply-accumulate (SDOT/UDOT, SMULL/SMLAL, "
        f"SADALP) and {counts['fmla']:,} FMLA: its arithmetic is floating point. Give the target a pass list and "
        "runtime that run integer kernels (e.g. quantize-static-int8 on ONNX Runtime), or call its precision fp32"
    )


SpeedDecision = Literal["pass", "within spread", "slower"]


def speed_decision(ratios: Sequence[float], max_ratio: float) -> SpeedDecision:
    """Judge per-round artifact/ORT FP32 ratios against the gate's `max_ratio`: "pass" when their
    median is within it, "within spread" when the median is over it but the lower quartile is not
    (the excess is no larger than the measured noise), "slower" when even the lower quartile is over
    (at least three rounds in four). One ratio (a family that measures no rounds) has no spread."""
    q1, median = (float(v) for v in np.percentile(ratios, [25, 50]))
    if median <= max_ratio:
        return "pass"
    return "within spread" if q1 <= max_ratio else "slower"


def speed_verdict(
    gate: str, max_ratio: float, target: str, ratios: Sequence[float], wall_ratios: Sequence[float] = ()
) -> str | None:
    """The speed gate on per-round CPU-time ratios (`ratios`; none: not measured here, e.g. a
    cross-compiled artifact): None when it passes; a message to warn with; BudgetError when it must fail."""
    if gate == "off" or not ratios or speed_decision(ratios, max_ratio) != "slower":
        return None
    q1, median, q3 = (float(v) for v in np.percentile(ratios, [25, 50, 75]))
    if len(ratios) == 1:
        figure = f"{median:.2f}x the latency of ORT FP32 on this host (one interleaved measurement, no spread)"
    else:
        wall = f"; wall time {float(np.median(wall_ratios)):.2f}x" if wall_ratios else ""
        figure = (
            f"{median:.2f}x the CPU time per call of ORT FP32 on this host (median of {len(ratios)} alternating "
            f"rounds, interquartile {q1:.2f}-{q3:.2f}, range {min(ratios):.2f}-{max(ratios):.2f}{wall})"
        )
    message = (
        f"{target}: the artifact takes {figure}; the gate allows {max_ratio:.2f}x and the excess is beyond the "
        "measured spread: this 'optimised' build is slower than doing nothing"
    )
    if gate == "fail":
        raise BudgetError(message + '. Change the target\'s passes or set verify.speed_gate = "warn"')
    return message
