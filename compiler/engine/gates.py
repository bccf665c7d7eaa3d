"""Verification gates: fidelity against the budget (after passes, after compilation), and speed.

A gate failure is a BudgetError naming the metric, the value, the budget, the first row over
budget and what to do; the speed gate compares the artifact's latency with ONNX Runtime FP32 on
this host (off, warn or fail, per target); an INT8 target whose emulated artifact executes no integer
multiply-accumulate instructions fails ("INT8 in name only").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from compiler.errors import BudgetError
from passes.base import Fidelity

ADVICE = (
    "Relax the recipe's [metric] budget, or change that pass's options (e.g. mixed_precision = true) in the target file"
)


def check_fidelity(
    model: str, stage: str, fidelity: Fidelity, per_pass: Sequence[tuple[str, Fidelity]], advice: str = ADVICE
) -> None:
    """Fail the build when over budget, naming the metric, value, budget and the pass that broke it."""
    if fidelity.within_budget:
        return
    culprit = next((name for name, f in per_pass if not f.within_budget), None)
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


def speed_verdict(gate: str, max_ratio: float, latency_ratio: float | None, target: str) -> str | None:
    """The speed gate: None when it passes or cannot be measured here (a cross-compiled artifact);
    a message to warn with; BudgetError when it must fail."""
    if gate == "off" or latency_ratio is None or latency_ratio <= max_ratio:
        return None
    message = (
        f"{target}: the artifact is {latency_ratio:.2f}x the latency of ORT FP32 on this host "
        f"(gate allows {max_ratio:.2f}x); this 'optimised' build is slower than doing nothing"
    )
    if gate == "fail":
        raise BudgetError(message + '. Change the target\'s passes or set verify.speed_gate = "warn"')
    return message
