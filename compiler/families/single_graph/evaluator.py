"""Run a candidate over the verification batches and score it against the FP32 reference.

A candidate is an ONNX graph (a pass's output, or an in-memory model a sensitivity search tries),
run on ONNX Runtime here, or a compiled artifact, run by its backend where it runs. An artifact
verified slowly (under qemu, or in the MIL interpreter) is scored on `emulated_batches` evenly
spaced batches (all of them when there are fewer); its fidelity summary says how many and how.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx

from compiler.engine.specs import ModelRecipe
from compiler.families.single_graph.data import Dataset
from compiler.families.single_graph.metrics import Outputs, score
from compiler.ort_session import run_batches, session
from passes.base import Fidelity

if TYPE_CHECKING:
    from compiler.backends.base import Backend


class Evaluator:
    """The recipe's metric over its verification batches, for any candidate."""

    def __init__(
        self, recipe: ModelRecipe, dataset: Dataset, reference: Outputs, emulated_batches: int | None = None
    ) -> None:
        self.recipe, self.dataset, self.reference = recipe, dataset, reference
        self.emulated_batches = emulated_batches

    def batch_indices(self, slow: bool) -> list[int]:
        total = len(self.dataset.verify)
        limit = self.emulated_batches
        if not slow or limit is None or total <= limit:
            return list(range(total))
        return sorted({round(float(i)) for i in np.linspace(0, total - 1, limit)})

    def _labels(self, indices: list[int]) -> np.ndarray | None:
        labels = self.dataset.labels
        if labels is None or len(indices) == len(self.dataset.verify):
            return labels
        sizes = [len(next(iter(batch.values()))) for batch in self.dataset.verify]
        starts = np.cumsum([0, *sizes])
        return np.concatenate([labels[starts[i] : starts[i + 1]] for i in indices])

    def __call__(self, model: onnx.ModelProto | Path, backend: Backend | None = None) -> Fidelity:
        """Score an ONNX candidate (on ONNX Runtime), or an artifact of `backend` where it runs."""
        execution = backend.execution(model) if backend is not None and isinstance(model, Path) else None
        indices = self.batch_indices(execution is not None and execution.slow)
        batches = [self.dataset.verify[i] for i in indices]
        if backend is None or not isinstance(model, Path):
            outputs = run_batches(session(model), batches)
        else:
            outputs = backend.outputs_for(model, batches)
        fidelity = score(
            self.recipe.metric, [self.reference[i] for i in indices], outputs, batches, self._labels(indices)
        )
        total = len(self.dataset.verify)
        if len(indices) == total or execution is None:
            return fidelity
        return replace(
            fidelity,
            summary=f"{fidelity.summary} (on {len(indices)} of {total} batches, {execution.how})",
            detail={**fidelity.detail, "verified_batches": len(indices), "total_batches": total},
        )


__all__ = ["Evaluator"]
