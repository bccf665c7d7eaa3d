"""What a failed fidelity check saw, in words, and advice that fits the stage that failed.

A fidelity failure is blamed on the last thing that changed the model, but two cases are not that
thing's fault: outputs that are (almost) all zero or that ignore the input (degenerate weights:
constant, zeroed or never trained; cosine against a reference of ~1e-9 values is rounding noise)
and a failure already at the import row, before any pass ran (no pass option can fix it).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

NEAR_ZERO = 1e-6  # largest |output| below which outputs are rounding noise, not a model's answer
IMPORT_ADVICE = (
    "the imported FP32 model is over budget before any pass ran, so no pass option can fix it: either the "
    "budget asks more than the unmodified model gives (check [metric]), or the import already differs from the "
    "source model (a PyTorch recipe: the exported ONNX against PyTorch's outputs; an .onnx recipe: the imported "
    "graph against the file's own outputs under ONNX Runtime): check the recipe's [source], its inputs and [data]"
)
DEGENERATE = "the weights look degenerate (constant, zeroed or untrained)"


def degenerate_outputs(outputs: Sequence[np.ndarray]) -> str | None:
    """What is wrong with a model's float `outputs` on real or synthetic inputs when they are no
    answer at all, else None: all within NEAR_ZERO of zero, or the same for every sample of a batch."""
    floats = [np.asarray(o, dtype=np.float64) for o in outputs if np.asarray(o).dtype.kind == "f" and np.size(o)]
    if not floats:
        return None
    largest = max(float(np.abs(o).max()) for o in floats)
    if not math.isfinite(largest):
        return "outputs contain NaN or infinity: " + DEGENERATE
    if largest < NEAR_ZERO:
        bound = 10.0 ** math.ceil(math.log10(largest)) if largest > 0 else 0.0
        within = f"within {bound:.0e} of zero" if largest > 0 else "exactly zero"
        return f"outputs are all {within} (largest |value| {largest:.2e}): {DEGENERATE}"
    batched = [o for o in floats if o.ndim >= 1 and o.shape[0] > 1]
    if batched and all(np.array_equal(o, np.broadcast_to(o[:1], o.shape)) for o in batched):
        return f"outputs are identical for every sample of a {batched[0].shape[0]}-sample batch: {DEGENERATE}"
    return None


def import_failure_advice(seen: str | None) -> str:
    """Advice for a fidelity failure whose first row over budget is the import itself; `seen` is
    what `degenerate_outputs` said of the imported model's outputs (None: nothing wrong with them)."""
    if seen:
        return (
            f"The imported model's {seen}. Fix the source model (are its trained weights loaded?): no pass "
            "option or budget can make such a model pass"
        )
    return IMPORT_ADVICE[0].upper() + IMPORT_ADVICE[1:]


def export_mismatch_message(model: str, worst_cosine: float, threshold: float, expected: Sequence[np.ndarray]) -> str:
    """The export check's failure ("exported ONNX disagrees with PyTorch"), saying what was seen:
    degenerate PyTorch outputs are the model's fault, not the exporter's."""
    seen = degenerate_outputs(expected)
    head = f"{model}: exported ONNX disagrees with PyTorch (cosine {worst_cosine:.5f} < {threshold})"
    if seen:
        return (
            f"{head}, but PyTorch's own {seen}; cosine between such outputs is rounding noise, not an export "
            "error: check the recipe's [source] (trained weights loaded?)"
        )
    return f"{head}; PyTorch's outputs look like a real answer, so the exporter may mis-translate an op of this model"


__all__ = ["degenerate_outputs", "export_mismatch_message", "import_failure_advice"]
