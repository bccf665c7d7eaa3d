"""Sensitivity-driven mixed precision, shared by the INT8 quantize passes (not a pass itself).

Also holds the little the two quantize passes share (`check_exclusions`, `quiet_preprocess_hint`).

A quantize pass hands over a `quantize(excluded)` function that rebuilds its quantized model with
some nodes left in FP32, the names of the nodes it quantized, and the first quantized model.
`search_exclusions` then:

1. evaluates the quantized model with the recipe's metric (`ctx.evaluate`); if it is within the
   budget (and reaches `target_fidelity`, when one is set) nothing else happens;
2. measures each candidate's sensitivity honestly, with the real metric: quantize everything but
   that candidate, evaluate, and record the fidelity gained. One quantize + evaluate per
   candidate, so the number of candidates is capped (`search_evaluations`): beyond it, nodes that
   read the same activation are measured together (they share its quantization error and its
   DynamicQuantizeLinear), then neighbouring groups in graph order are merged;
3. excludes the most sensitive candidates one at a time, re-evaluating after each, keeping an
   exclusion only if it helped, until the budget holds or `max_excluded` nodes are excluded.

If the budget cannot be met, the best model found is returned and the stats say so: the build's
verification gate then fails with its own message, which is where a budget failure belongs.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import onnx

from compiler import onnx_io
from compiler.errors import PassError, did_you_mean
from compiler.progress import progress_bar
from passes.base import Fidelity, PassContext

Quantize = Callable[[tuple[str, ...]], onnx.ModelProto]


@dataclass(frozen=True)
class MixedPrecisionOptions:
    """The options every quantize pass's Config inherits (they feed `search_if_enabled`)."""

    mixed_precision: bool = False  # keep the most sensitive nodes in float until the budget holds
    target_fidelity: float | None = None  # with mixed_precision: search until fidelity >= this
    max_excluded: int = 8  # at most this many nodes stay in float
    search_evaluations: int = 48  # at most this many sensitivity measurements


@dataclass(frozen=True)
class SearchSettings:
    """The mixed-precision options of a quantize pass's Config."""

    max_excluded: int = 8  # at most this many nodes stay in FP32
    search_evaluations: int = 48  # at most this many sensitivity measurements
    target_fidelity: float | None = None  # keep searching until fidelity reaches this

    def __post_init__(self) -> None:
        for option in ("max_excluded", "search_evaluations"):
            if getattr(self, option) < 1:
                raise PassError(f"option {option} = {getattr(self, option)} must be at least 1")


@dataclass
class SearchOutcome:
    """The chosen model and the JSON-serialisable account of how it was chosen."""

    model: onnx.ModelProto
    stats: dict[str, Any] = field(default_factory=dict)


def check_exclusions(model: onnx.ModelProto, names: Sequence[str]) -> None:
    """A misspelt node name in nodes_to_exclude would silently quantize that node: refuse it."""
    known = {node.name for node in model.graph.node}
    for name in names:
        if name not in known:
            raise PassError(
                f"nodes_to_exclude names '{name}', which is not a node of the model; {did_you_mean(name, known)[:500]}"
            )


@contextlib.contextmanager
def quiet_preprocess_hint() -> Iterator[None]:
    """Drop ORT's "Please consider to run pre-processing" warning while a quantize pass runs.

    The passes decide about pre-processing themselves (not needed for dynamic quantization of a
    fused model; done by quantize-static-int8 or its failure recorded), and the search would
    print the hint once per candidate.
    """

    def keep(record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Please consider to run pre-processing")

    root = logging.getLogger()  # ORT logs it with logging.warning, i.e. on the root logger
    root.addFilter(keep)
    try:
        yield
    finally:
        root.removeFilter(keep)


def search_exclusions(
    model: onnx.ModelProto,
    quantize: Quantize,
    quantized: onnx.ModelProto,
    candidates: Sequence[str],
    ctx: PassContext,
    settings: SearchSettings,
) -> SearchOutcome:
    """Leave the fewest, most sensitive of `candidates` in FP32 until the fidelity budget holds.

    `model` is the FP32 model `quantize` starts from (used only to group candidates by their
    input); `candidates` are node names of `model`, in graph order.
    """
    started = time.perf_counter()
    first = ctx.evaluate(quantized)
    stats: dict[str, Any] = {"fidelity_before": _describe(first), "size_bytes_before": onnx_io.tensor_bytes(quantized)}
    if _satisfied(first, settings):
        stats.update(
            {
                "searched": False,
                "budget_met": True,
                "excluded_nodes": [],
                "evaluations": 1,
                "seconds": round(time.perf_counter() - started, 2),
            }
        )
        return SearchOutcome(quantized, stats)

    units, granularity = _units(model, candidates, settings.search_evaluations)
    gains: list[tuple[float, tuple[str, ...]]] = []
    with progress_bar() as bar:
        task = bar.add_task("mixed precision: sensitivity", total=len(units))
        for unit in units:
            gains.append((ctx.evaluate(quantize(unit)).value - first.value, unit))
            bar.advance(task)
    evaluations = 1 + len(units)
    ranked = [unit for gain, unit in sorted(gains, key=lambda pair: -pair[0]) if gain > 0]

    best_model, best, excluded = quantized, first, ()
    rejected: list[str] = []
    capped = 0  # helpful candidates left out because of max_excluded
    with progress_bar() as bar:
        task = bar.add_task("mixed precision: excluding", total=settings.max_excluded)
        for unit in ranked:
            if _satisfied(best, settings):
                break
            if len(excluded) + len(unit) > settings.max_excluded:
                capped += 1
                continue
            trial = quantize(excluded + unit)
            fidelity = ctx.evaluate(trial)
            evaluations += 1
            if _rank(fidelity) > _rank(best):  # exclusions interact: keep one only if it still helps
                best_model, best, excluded = trial, fidelity, excluded + unit
                bar.update(task, completed=len(excluded))
            else:
                rejected.extend(unit)

    met = _satisfied(best, settings)
    top = sorted(gains, key=lambda pair: -pair[0])[:10]
    stats.update(
        {
            "searched": True,
            "budget_met": met,
            "excluded_nodes": list(excluded),
            "fidelity_after": _describe(best),
            "size_bytes_after": onnx_io.tensor_bytes(best_model),
            "granularity": granularity,
            "candidates": len(candidates),
            "evaluations": evaluations,
            "rejected_nodes": rejected,  # tried in rank order but did not improve the fidelity
            "most_sensitive": [{"nodes": list(unit), "gain": round(gain, 6)} for gain, unit in top],
            "seconds": round(time.perf_counter() - started, 2),
        }
    )
    if not met:
        advice = f"raise max_excluded ({capped} more candidates could help)" if capped else "no other exclusion helped"
        stats["message"] = (
            f"budget not met with {len(excluded)} of at most {settings.max_excluded} nodes "
            f"left in FP32 (best: {best.summary}); {advice}, or use a higher-precision target"
        )
    return SearchOutcome(best_model, stats)


def _units(model: onnx.ModelProto, candidates: Sequence[str], limit: int) -> tuple[list[tuple[str, ...]], str]:
    """Candidates as units of exclusion: single nodes if affordable, else groups, at most `limit`."""
    if len(candidates) <= limit:
        return [(name,) for name in candidates], "node"
    first_input = {node.name: node.input[0] for node in model.graph.node if node.input}
    groups: dict[str, list[str]] = {}
    for name in candidates:
        groups.setdefault(first_input.get(name, name), []).append(name)
    units = [tuple(group) for group in groups.values()]
    if len(units) <= limit:
        return units, "shared-input"
    # Still too many: merge neighbours in graph order into `limit` blocks of near-equal size.
    size, extra = divmod(len(units), limit)
    blocks, start = [], 0
    for index in range(limit):
        stop = start + size + (1 if index < extra else 0)
        blocks.append(tuple(name for unit in units[start:stop] for name in unit))
        start = stop
    return blocks, "block"


def _rank(fidelity: Fidelity) -> tuple[bool, float]:
    """Within budget beats outside it (a budget can have parts the headline value does not show,
    such as a minimum per example); then the better headline value wins."""
    return fidelity.within_budget, fidelity.value  # Fidelity.value is higher-is-better by contract


def _satisfied(fidelity: Fidelity, settings: SearchSettings) -> bool:
    if not fidelity.within_budget:
        return False
    if settings.target_fidelity is None:
        return True
    return fidelity.value >= settings.target_fidelity


def _describe(fidelity: Fidelity) -> dict[str, Any]:
    return {
        "metric": fidelity.metric,
        "value": round(fidelity.value, 6),
        "within_budget": fidelity.within_budget,
        "summary": fidelity.summary,
    }


def search_if_enabled(
    config: MixedPrecisionOptions,
    base: onnx.ModelProto,
    quantize: Quantize,
    quantized: onnx.ModelProto,
    candidates: list[str],
    ctx: PassContext,
) -> tuple[onnx.ModelProto, list[str], dict[str, Any]]:
    """Run the search when the pass's config asks for it (`mixed_precision`); returns the model, the
    nodes still quantized and the search's stats (empty when it did not run)."""
    if not config.mixed_precision:
        return quantized, candidates, {}
    settings = SearchSettings(config.max_excluded, config.search_evaluations, config.target_fidelity)
    outcome = search_exclusions(base, quantize, quantized, candidates, ctx, settings)
    kept = set(outcome.stats["excluded_nodes"])
    return outcome.model, [name for name in candidates if name not in kept], {"mixed_precision": outcome.stats}


def quantization_stats(
    base: onnx.ModelProto,
    original: onnx.ModelProto,
    quantized: onnx.ModelProto,
    candidates: list[str],
    user_excluded: Sequence[str],
    search: dict[str, Any],
) -> dict[str, Any]:
    """What a quantize pass reports: nodes quantized by op type, nodes left in float, sizes, plus
    `search` (the mixed-precision stats and anything else the pass recorded)."""
    op_type = {node.name: node.op_type for node in base.graph.node}
    size_before, size_after = onnx_io.tensor_bytes(original), onnx_io.tensor_bytes(quantized)
    return {
        "quantized_nodes": dict(sorted(Counter(op_type[name] for name in candidates).items())),
        "excluded_nodes": [*user_excluded, *search.get("mixed_precision", {}).get("excluded_nodes", [])],
        "size_bytes_before": size_before,
        "size_bytes_after": size_after,
        "size_ratio": round(size_after / size_before, 4),
        **search,
    }
