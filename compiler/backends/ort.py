"""ONNX Runtime backend: save the graph optimised offline, at a level not tied to this CPU.

ORT's "basic" and "extended" optimisations are portable across CPUs (constant folding, node
fusions into contrib ops); the "all" level adds layout transforms (NCHWc) chosen for the build
machine's ISA, so an artifact saved at that level could be wrong or slow on a device. The
target's `runtime.graph_optimization` picks basic or extended; the device still applies its own
layout optimisations at load time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import onnxruntime as ort

from compiler.backends.base import Backend, CompiledGraph, CompileRequest
from compiler.onnx_io import data_files
from compiler.progress import step

ARTIFACT_NAME = "model.onnx"
WEIGHTS_NAME = "model.onnx.data"  # the external weights of a model over 2 GB (the artifact names it)

_LEVELS = {
    "disabled": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
}


def signature_of(artifact: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Inputs and outputs as ONNX Runtime reports them (dtype "tensor(float)", symbolic dims kept)."""
    from compiler.ort_session import session

    sess = session(artifact)
    inputs = [{"name": i.name, "dtype": i.type, "shape": i.shape} for i in sess.get_inputs()]
    outputs = [{"name": o.name, "dtype": o.type, "shape": o.shape} for o in sess.get_outputs()]
    return inputs, outputs


class OrtBackend(Backend):
    """`runtime = { name = "onnxruntime" }`: an .onnx file, optimised offline at the target's level."""

    runtime: ClassVar[str] = "onnxruntime"
    tools: ClassVar[tuple[str, ...]] = ("onnxruntime", "onnx")
    capabilities: ClassVar[frozenset[str]] = frozenset({"stepwise"})
    graph_artifact: ClassVar[bool] = True

    def key_config(self, request: CompileRequest) -> dict[str, Any]:
        return {"runtime": self.runtime, "level": self.target.graph_optimization}

    def compile(self, request: CompileRequest, directory: Path) -> dict[str, Any]:
        """Write `directory/model.onnx`, optimised offline at the target's level."""
        level = self.target.graph_optimization
        step(f"compiling for {self.runtime} (graph optimisation: {level})")
        output = directory / ARTIFACT_NAME
        options = ort.SessionOptions()
        options.graph_optimization_level = _LEVELS[level]
        options.optimized_model_filepath = str(output)
        options.intra_op_num_threads = 1
        options.log_severity_level = 3
        external = bool(data_files(request.model))
        if external:  # weights past protobuf's limit: the saved graph keeps them in a file beside it
            options.add_session_config_entry("session.optimized_model_external_initializers_file_name", WEIGHTS_NAME)
            options.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "1024")
        ort.InferenceSession(str(request.model), options, providers=["CPUExecutionProvider"])
        meta: dict[str, Any] = {
            "artifact": ARTIFACT_NAME,
            "runtime": self.runtime,
            "runtime_version": ort.__version__,
            "graph_optimization": level,
        }
        if external:
            meta["extra_files"] = {WEIGHTS_NAME: "weights"}  # shipped beside the model under this name
        return meta

    def signature(self, compiled: CompiledGraph) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return signature_of(compiled.artifact)

    def compile_stats(self, meta: dict[str, Any]) -> dict[str, Any]:
        return {"graph_optimization": self.target.graph_optimization, "runtime_version": meta["runtime_version"]}

    def recorded_graph_optimization(self) -> str | None:
        return self.target.graph_optimization


__all__ = ["OrtBackend", "signature_of"]
