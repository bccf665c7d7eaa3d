"""Latency of every row of a one-graph build that runs on this host, at the recipe's bench shape.

One thread; the baseline is ONNX Runtime running the imported FP32 model (row 0). Timings go
through the host's measurement ledger (compiler/engine/measurements.py): the same model bytes on
the same host reuse their first timing, so a rebuild from an empty cache records the same latency
and the bundle stays byte-identical.
"""

from __future__ import annotations

from typing import Any

from compiler.backends.base import Backend, Predict
from compiler.digests import sha256_bytes, sha256_file, tool_versions
from compiler.engine.fingerprint import code_digest
from compiler.engine.latency import measure_latency
from compiler.engine.measurements import host_fingerprint, recall_or_measure
from compiler.engine.record import StageRow
from compiler.families.single_graph.data import Dataset
from compiler.progress import step

THREADS = 1


def _predictor(row: StageRow, backend: Backend) -> Predict:
    if row.kind == "compile":
        return backend.predictor(row.path, threads=THREADS)
    from compiler.ort_session import predictor

    return predictor(row.path, THREADS)


def time_rows(rows: list[StageRow], dataset: Dataset, backend: Backend) -> dict[str, Any]:
    """Fill each row's latency (None where it does not run here) -> the record's metrics.latency."""
    timed = [i for i, row in enumerate(rows) if row.kind != "compile" or backend.execution(row.path).timed]
    shape = {name: list(array.shape) for name, array in dataset.bench.items()}

    def time_models() -> dict[str, float]:
        predictors = {str(i): _predictor(rows[i], backend) for i in timed}
        runners = {key: (lambda run=run: run(dataset.bench)) for key, run in predictors.items()}
        return measure_latency(runners, label=f"timing {len(rows)} models at {shape}")

    subject = {
        "what": "ort-latency",
        "models": [sha256_file(rows[i].path) for i in timed],
        "bench": {name: [list(a.shape), str(a.dtype), sha256_bytes(a.tobytes())] for name, a in dataset.bench.items()},
        "threads": THREADS,
        "code": code_digest([__name__]) + backend.fingerprint(),
        "tools": tool_versions("onnxruntime", "numpy", *backend.tools),
    }
    seconds = recall_or_measure(subject, time_models)
    baseline = seconds["0"]
    for i, row in enumerate(rows):
        measured = seconds.get(str(i))
        row.latency_ms = measured * 1000 if measured is not None else None
        row.latency_ratio = measured / baseline if measured is not None else None
    final = seconds.get(str(len(rows) - 1))
    latency: dict[str, Any] = {
        "artifact_ms": final * 1000 if final is not None else None,
        "ort_fp32_ms": baseline * 1000,
        "ratio_vs_ort_fp32": final / baseline if final is not None else None,
        "threads": THREADS,
        "input_shapes": shape,
        "host": host_fingerprint()["cpu"] or "build host",
        "note": "first measurement of these model bytes on this host (shared, noisy: compare ratios)"
        if final is not None
        else backend.not_timed(rows[-1].path),
    }
    if final is None:
        instructions = count_instructions(rows, dataset, backend)
        if instructions is not None:
            latency["instructions"] = instructions
    return latency


def count_instructions(rows: list[StageRow], dataset: Dataset, backend: Backend) -> dict[str, Any] | None:
    """The emulated artifact's instructions per inference at the bench shape, against ORT on the
    imported FP32 model on the same emulated CPU (deterministic: recorded once per model bytes)."""
    artifact, reference = rows[-1].path, rows[0].path
    subject = {
        "what": "emulated-instructions",
        "models": [sha256_file(artifact), sha256_file(reference)],
        "bench": {name: [list(a.shape), str(a.dtype), sha256_bytes(a.tobytes())] for name, a in dataset.bench.items()},
        "execution": backend.execution(artifact).how,
        "code": code_digest([__name__]) + backend.fingerprint(),
        "tools": tool_versions("numpy", *backend.tools),
    }
    if not backend.counts_instructions:
        return None
    shape = {name: list(array.shape) for name, array in dataset.bench.items()}

    def count() -> dict[str, Any]:
        step(f"counting instructions per inference at {shape} ({backend.execution(artifact).how.removeprefix('run ')})")
        return backend.instruction_cost(artifact, reference, dataset.bench) or {}

    cost = recall_or_measure(subject, count)
    return {**cost, "input_shapes": shape} if cost else None


__all__ = ["THREADS", "time_rows"]
