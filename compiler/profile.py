"""Per-stage measurements for the build report: size, nodes, fidelity, latency vs ORT FP32.

Latency is measured side by side in one run (interleaved, median) at the recipe's benchmark
shape with one thread; the baseline is ONNX Runtime running the imported FP32 model. The whole
profile is one cache entry keyed by every stage's model digest, so a rebuild that changes
nothing measures nothing, and a change anywhere re-measures every row together. Timings go
through the host's measurement ledger (compiler/measurements.py): the same model bytes on the same
host reuse their first timing, so a rebuild from an empty cache records the same latency.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnx

from compiler.cache import Cache, sha256_bytes, sha256_file, sha256_tree, stage_key, tool_versions
from compiler.config import ROOT, ModelRecipe
from compiler.data import Dataset
from compiler.measurements import host_fingerprint, recall_or_measure
from compiler.progress import step
from compiler.runtime import is_coreml, is_emulated, measure_latency, predictor, runs_on_host

CODE = [ROOT / "compiler" / "profile.py", ROOT / "compiler" / "verify.py", ROOT / "compiler" / "runtime.py"]
THREADS = 1


def _node_count(path: Path) -> int | None:
    if path.suffix != ".onnx":
        return None  # a compiled library, not a graph
    return len(onnx.load(str(path), load_external_data=False).graph.node)


def profile_stages(
    recipe: ModelRecipe, dataset: Dataset, evaluate: Any, stages: list[dict[str, Any]], cache: Cache, data_digest: str
) -> dict[str, Any]:
    """Measure every stage's model; returns {"rows": [...], "latency": {...}, "artifact_latency_ratio": x}."""
    paths = [Path(row["path"]) for row in stages]
    key = stage_key(
        "profile",
        inputs={"models": [sha256_file(p) for p in paths], "data": data_digest},
        config={
            "metric": recipe.metric,
            "bench": recipe.bench,
            "threads": THREADS,
            "emulated_batches": evaluate.emulated_batches,
        },
        code=sha256_tree(CODE),
        tools=tool_versions("onnxruntime", "numpy"),
    )

    def measure(_: Path) -> dict[str, Any]:
        step(f"verifying {len(paths)} stage outputs on {len(dataset.verify)} batches")
        emulated = [p for p in paths if is_emulated(p)]
        if emulated:
            count = len(evaluate.batch_indices(emulated[-1]))
            where = "in the MIL reference interpreter" if is_coreml(emulated[-1]) else "under qemu-aarch64"
            step(f"running {emulated[-1].name} {where} on {count} of {len(dataset.verify)} batches")
        rows = [{"bytes": p.stat().st_size, "nodes": _node_count(p), "fidelity": evaluate(p).__dict__} for p in paths]
        shape = {name: list(array.shape) for name, array in dataset.bench.items()}

        # A library for another ISA ran under emulation to be verified; emulated time means nothing.
        timed = [i for i, p in enumerate(paths) if runs_on_host(p)]

        def time_models() -> dict[str, float]:
            predictors = {str(i): predictor(paths[i], threads=THREADS) for i in timed}
            runners = {key: (lambda run=run: run(dataset.bench)) for key, run in predictors.items()}
            return measure_latency(runners, label=f"timing {len(paths)} models at {shape}")

        subject = {
            "what": "ort-latency",
            "models": [sha256_file(paths[i]) for i in timed],
            "bench": {
                name: [list(a.shape), str(a.dtype), sha256_bytes(a.tobytes())] for name, a in dataset.bench.items()
            },
            "threads": THREADS,
            "code": sha256_tree(CODE[2:]),
            "tools": tool_versions("onnxruntime", "numpy"),
        }
        seconds = recall_or_measure(subject, time_models)
        baseline = seconds["0"]
        for i, row in enumerate(rows):
            measured = seconds.get(str(i))
            row["latency_ms"] = measured * 1000 if measured is not None else None
            row["latency_ratio"] = measured / baseline if measured is not None else None
        final = seconds.get(str(len(paths) - 1))
        return {
            "rows": rows,
            "latency": {
                "artifact_ms": final * 1000 if final is not None else None,
                "ort_fp32_ms": baseline * 1000,
                "ratio_vs_ort_fp32": final / baseline if final is not None else None,
                "threads": THREADS,
                "input_shapes": shape,
                "host": host_fingerprint()["cpu"] or "build host",
                "note": "first measurement of these model bytes on this host (shared, noisy: compare ratios)"
                if final is not None
                else _not_timed(paths[-1]),
            },
            "artifact_latency_ratio": final / baseline if final is not None else None,
        }

    return cache.get_or_build("profile", key, measure).meta


def _not_timed(artifact: Path) -> str:
    if is_coreml(artifact):
        return (
            "not measured: Core ML runs only on Apple devices; here the package was executed by a "
            "reference interpreter to be verified, and its time says nothing about an iPhone"
        )
    if artifact.suffix == ".tflite":
        return (
            "not measured at build time: LiteRT runs in its own toolchain process; a phone's latency "
            "can only be measured on the phone"
        )
    return (
        "not measured: the artifact is for another ISA and ran under qemu-aarch64 only to be "
        "verified; emulated timings say nothing about the device"
    )
