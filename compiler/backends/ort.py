"""ONNX Runtime backend: save the graph optimised offline, at a level not tied to this CPU.

ORT's "basic" and "extended" optimisations are portable across CPUs (constant folding, node
fusions into contrib ops); the "all" level adds layout transforms (NCHWc) chosen for the build
machine's ISA, so an artifact saved at that level could be wrong or slow on a device. The
target's `runtime.graph_optimization` picks basic or extended; the device still applies its own
layout optimisations at load time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import onnxruntime as ort

from compiler.config import TargetSpec

TOOLS = ("onnxruntime", "onnx")
FINGERPRINT_FILES = (Path(__file__),)
ARTIFACT_NAME = "model.onnx"

_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
}


def compile_model(model_path: Path, target: TargetSpec, directory: Path) -> dict[str, Any]:
    """Write `directory/model.onnx`, optimised offline at the target's level."""
    output = directory / ARTIFACT_NAME
    options = ort.SessionOptions()
    options.graph_optimization_level = _LEVELS[target.graph_optimization]
    options.optimized_model_filepath = str(output)
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    return {
        "artifact": ARTIFACT_NAME,
        "runtime": "onnxruntime",
        "runtime_version": ort.__version__,
        "graph_optimization": target.graph_optimization,
    }
