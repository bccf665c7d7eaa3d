"""Tensor metrics for one-graph models: a candidate's outputs against the FP32 reference's.

Fidelity is scored with the recipe's metric on the verification batches; every metric reports a
headline `value` where higher is better (mean cosine, top-1 accuracy), so searches and gates can
compare candidates without knowing the metric:

- `embedding_cosine`: mean-pooled (by attention mask), L2-normalised sentence embeddings;
  budget `min_mean` and `min_each` (the worst sentence);
- `top1_accuracy`: accuracy on the held-out labels; budget `max_drop` in percentage points
  below the FP32 reference's own accuracy;
- `output_cosine`: cosine of each raw output per batch, for models with no task metric;
  budget `min_mean`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from compiler.errors import ConfigError
from passes.base import Feeds, Fidelity

Outputs = list[list[np.ndarray]]  # per batch, per output


def _cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) + 1e-12)


def _mean_pool(hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
    weights = mask[..., None].astype(np.float64)
    return (hidden.astype(np.float64) * weights).sum(1) / np.maximum(weights.sum(1), 1e-9)


def score(
    metric: dict[str, Any], reference: Outputs, candidate: Outputs, feeds: Sequence[Feeds], labels: np.ndarray | None
) -> Fidelity:
    """Score `candidate` outputs against `reference` outputs with the recipe's metric and budget."""
    kind = metric["kind"]
    if kind == "embedding_cosine":
        mask_name = metric.get("mask_input", "attention_mask")
        index = int(metric.get("output_index", 0))
        scores = np.concatenate(
            [
                _cosine_rows(_mean_pool(ref[index], batch[mask_name]), _mean_pool(cand[index], batch[mask_name]))
                for ref, cand, batch in zip(reference, candidate, feeds, strict=True)
            ]
        )
        mean, worst = float(scores.mean()), float(scores.min())
        min_mean, min_each = float(metric.get("min_mean", 0.99)), float(metric.get("min_each", 0.0))
        return Fidelity(
            kind,
            mean,
            mean >= min_mean and worst >= min_each,
            f"mean cosine {mean:.4f} (min {worst:.4f}); budget mean >= {min_mean}, each >= {min_each}",
            {"mean_cosine": mean, "min_cosine": worst},
        )
    if kind == "top1_accuracy":
        if labels is None:
            raise ConfigError("metric 'top1_accuracy' needs labelled evaluation data (recipe [data] eval)")
        index = int(metric.get("output_index", 0))
        ref_pred = np.concatenate([np.argmax(r[index], axis=-1) for r in reference])
        cand_pred = np.concatenate([np.argmax(c[index], axis=-1) for c in candidate])
        ref_acc = float((ref_pred == labels).mean() * 100)
        acc = float((cand_pred == labels).mean() * 100)
        drop, max_drop = ref_acc - acc, float(metric.get("max_drop", 0.5))
        return Fidelity(
            kind,
            acc,
            drop <= max_drop + 1e-9,
            f"top-1 accuracy {acc:.2f}% (FP32 {ref_acc:.2f}%, drop {drop:.2f} points); budget drop <= {max_drop}",
            {
                "accuracy": acc,
                "reference_accuracy": ref_acc,
                "accuracy_drop": drop,
                "agreement": float((ref_pred == cand_pred).mean() * 100),
            },
        )
    if kind == "output_cosine":
        scores = np.array(
            [
                float(_cosine_rows(r.ravel()[None], c.ravel()[None])[0])
                for ref, cand in zip(reference, candidate, strict=True)
                for r, c in zip(ref, cand, strict=True)
            ]
        )
        mean, worst = float(scores.mean()), float(scores.min())
        min_mean = float(metric.get("min_mean", 0.99))
        return Fidelity(
            kind,
            mean,
            mean >= min_mean,
            f"mean output cosine {mean:.4f} (min {worst:.4f}); budget mean >= {min_mean}",
            {"mean_cosine": mean, "min_cosine": worst},
        )
    raise ConfigError(f"unknown metric kind '{kind}'")


__all__ = ["Outputs", "score"]
