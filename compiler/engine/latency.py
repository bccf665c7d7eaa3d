"""Side-by-side latency on the build host: runners timed round-robin, medians compared; and the
speed gate's measurement, candidate and reference alternately in rounds, by process CPU time.

The machine is shared and noisy, so models are timed interleaved (each repeat runs every model
once) and compared by median: ratios measured together are the figures to quote. The speed gate
needs more than one figure: whether a ratio above its threshold is a regression or noise. So
`measure_rounds` times the artifact and ONNX Runtime FP32 alternately (A B, then B A, ...) in
several rounds of blocks of calls, recording each block's per-call process CPU time
(`time.process_time`: what a shared box's load disturbs least) and wall time; the per-round ratios
give the figure (their median) and its measured spread (their quartiles and range).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from compiler.progress import progress_bar

if TYPE_CHECKING:
    from compiler.backends.base import Backend
    from compiler.engine.specs import TensorSpec

GATE_ROUNDS = 9
GATE_BLOCK_S = 0.05  # CPU seconds a block of calls should last: well above the clock's granularity
GATE_MAX_CALLS = 5000
GATE_THREADS = 1
GATE_INPUTS = "synthetic at the bench shapes: floats N(0, 1) (seed 0), integers and booleans 1"


def measure_latency(
    runners: Mapping[str, Callable[[], object]], repeats: int = 50, warmup: int = 5, label: str = "benchmarking"
) -> dict[str, float]:
    """Median wall seconds per call of each runner, measured interleaved."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    with progress_bar() as bar:
        task = bar.add_task(label, total=repeats)
        for _ in range(repeats):
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
            bar.advance(task)
    return {name: float(np.median(values)) for name, values in times.items()}


def _block(run: Callable[[], object], calls: int) -> tuple[float, float]:
    """(CPU seconds, wall seconds) per call over `calls` calls of `run`."""
    cpu, wall = time.process_time(), time.perf_counter()
    for _ in range(calls):
        run()
    return (time.process_time() - cpu) / calls, (time.perf_counter() - wall) / calls


def measure_rounds(
    candidate: Callable[[], object],
    reference: Callable[[], object],
    rounds: int = GATE_ROUNDS,
    block_s: float = GATE_BLOCK_S,
    warmup: int = 5,
    label: str = "speed gate",
) -> dict[str, Any]:
    """Per-call CPU and wall seconds of `candidate` and `reference`, one block of each per round,
    alternating which goes first (drift within a round then hits both alike)."""
    for run in (candidate, reference):
        for _ in range(warmup):
            run()
    slowest = max(_block(run, 3)[0] for run in (candidate, reference))
    calls = max(1, min(GATE_MAX_CALLS, math.ceil(block_s / max(slowest, 1e-7))))
    seconds: dict[str, list[float]] = {
        f"{who}_{clock}_s": [] for who in ("candidate", "reference") for clock in ("cpu", "wall")
    }
    order = (("candidate", candidate), ("reference", reference))
    with progress_bar() as bar:
        task = bar.add_task(f"{label}: {rounds} rounds of {calls} calls each", total=rounds)
        for index in range(rounds):
            for who, run in order if index % 2 == 0 else order[::-1]:
                cpu, wall = _block(run, calls)
                seconds[f"{who}_cpu_s"].append(cpu)
                seconds[f"{who}_wall_s"].append(wall)
            bar.advance(task)
    return {"rounds": rounds, "calls_per_round": calls, **seconds}


def spread(values: Sequence[float]) -> dict[str, float]:
    """Median, quartiles and range of `values`."""
    q1, median, q3 = (float(v) for v in np.percentile(values, [25, 50, 75]))
    return {"median": median, "q1": q1, "q3": q3, "min": float(min(values)), "max": float(max(values))}


def round_ratios(measured: Mapping[str, Any], clock: str) -> list[float]:
    """The candidate/reference ratio of each round, on `clock` ("cpu" or "wall")."""
    pairs = zip(measured[f"candidate_{clock}_s"], measured[f"reference_{clock}_s"], strict=True)
    return [c / r if r > 0 else math.inf for c, r in pairs]


def synthetic_feeds(inputs: Sequence[TensorSpec], shapes: Mapping[str, Sequence[int]]) -> dict[str, np.ndarray] | None:
    """Inputs at the bench `shapes` (see GATE_INPUTS); None when an input has no bench shape.
    Kernel times of these models do not depend on the values, only on shapes and types."""
    rng = np.random.default_rng(0)
    feeds = {}
    for spec in inputs:
        shape = shapes.get(spec.name)
        if shape is None:
            return None
        dtype = np.dtype(spec.dtype)
        if dtype.kind == "f":
            feeds[spec.name] = rng.standard_normal(list(shape)).astype(dtype)
        else:
            feeds[spec.name] = np.ones(list(shape), dtype=dtype)
    return feeds


def gate_timing(artifact: Path, reference: Path, backend: Backend, feeds: dict[str, np.ndarray]) -> dict[str, Any]:
    """The speed gate's figures for `artifact` against ORT FP32 on `reference`, through the host's
    measurement ledger (the same bytes on the same host reuse their first measurement, so the
    bundle stays byte-identical): per-round CPU and wall ratios, their spread, the per-call times."""
    from compiler.digests import sha256_bytes, sha256_file, tool_versions
    from compiler.engine.fingerprint import code_digest
    from compiler.engine.measurements import recall_or_measure
    from compiler.ort_session import predictor

    subject = {
        "what": "speed-gate",
        "models": [sha256_file(artifact), sha256_file(reference)],
        "inputs": {name: [list(a.shape), str(a.dtype), sha256_bytes(a.tobytes())] for name, a in feeds.items()},
        "threads": GATE_THREADS,
        "rounds": GATE_ROUNDS,
        "code": code_digest([__name__]) + backend.fingerprint(),
        "tools": tool_versions("onnxruntime", "numpy", *backend.tools),
    }

    def measure() -> dict[str, Any]:
        candidate = backend.predictor(artifact, threads=GATE_THREADS)
        fp32 = predictor(reference, GATE_THREADS)
        return measure_rounds(lambda: candidate(feeds), lambda: fp32(feeds), label="speed gate vs ORT FP32")

    measured = recall_or_measure(subject, measure)
    cpu, wall = round_ratios(measured, "cpu"), round_ratios(measured, "wall")
    return {
        "basis": f"per-call process CPU time ({GATE_THREADS} thread), artifact and ORT FP32 alternately in "
        f"{measured['rounds']} rounds of {measured['calls_per_round']} calls; wall time beside it",
        "inputs": GATE_INPUTS,
        "cpu_ratio": spread(cpu)["median"],
        "cpu_ratio_spread": spread(cpu),
        "cpu_ratio_rounds": cpu,
        "wall_ratio": spread(wall)["median"],
        "wall_ratio_spread": spread(wall),
        "wall_ratio_rounds": wall,
        "artifact_cpu_ms": 1000 * spread(measured["candidate_cpu_s"])["median"],
        "ort_fp32_cpu_ms": 1000 * spread(measured["reference_cpu_s"])["median"],
        "rounds": measured["rounds"],
        "calls_per_round": measured["calls_per_round"],
    }


__all__ = ["gate_timing", "measure_latency", "measure_rounds", "round_ratios", "spread", "synthetic_feeds"]
