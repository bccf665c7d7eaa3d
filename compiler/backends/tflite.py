"""LiteRT (TensorFlow Lite) backend for Android: ONNX -> onnx2tf -> `.tflite`, in the pinned toolchain.

The graph is first folded with every input shape fixed (as for TVM: onnx2tf, like TVM's frontend,
fails on the Shape/Expand chains of a dynamic BERT export), then converted by onnx2tf inside the
'tflite' toolchain (compiler/toolchains/tflite.lock, created on first use), which also checks that
only LiteRT builtin ops remain. The target's precision picks the variant: fp32, fp16 (FP16
weights, FP32 compute and I/O) or int8 (full INT8 weights and activations calibrated on the
recipe's calibration data, FP32 I/O; for integer-input models such as token ids, INT8 weights
with float activations: see `int8_mode`). Verification runs the .tflite in LiteRT's interpreter, in
the toolchain, binding inputs and outputs by name (onnx2tf makes image inputs NHWC).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from compiler.backends.base import (
    Backend,
    CompiledGraph,
    CompileRequest,
    Execution,
    Feeds,
    Outputs,
    read_io_record,
    write_io_record,
)
from compiler.errors import UserError
from compiler.progress import step
from compiler.shipped import package_file
from compiler.toolchains import Toolchain

LOCK = package_file("compiler/toolchains/tflite.lock")  # onnx2tf's stack, pinned
TOOLCHAIN = Toolchain(LOCK.stem, lock_dir=LOCK.parent)
WORKER = package_file("compiler/toolchains/tflite_worker.py")
ARTIFACT_NAME = "model.tflite"
CONVERT_TIMEOUT_S = 1800
RUN_TIMEOUT_S = 1800


class LiteRtBackend(Backend):
    """`runtime = { name = "litert" }`: a .tflite converted by onnx2tf, run by LiteRT in its toolchain."""

    runtime: ClassVar[str] = "litert"
    tools: ClassVar[tuple[str, ...]] = ("onnxslim",)
    untimed_summary: ClassVar[str] = "LiteRT model: its speed is the phone's"
    bench_note: ClassVar[str] = (
        "latency: host LiteRT (XNNPACK) vs ORT FP32 in the toolchain process, not a phone figure"
    )
    times_off_host: ClassVar[bool] = True

    def time_against_ort(
        self, onnx_path: Path, artifacts: dict[str, Path], feeds: Feeds, repeats: int
    ) -> dict[str, float] | None:
        return time_against_ort(onnx_path, artifacts, feeds, repeats)

    def key_config(self, request: CompileRequest) -> dict[str, Any]:
        """The toolchain's lock, precision and shapes (the toolchain's pins are in its lock)."""
        return {
            "runtime": self.runtime,
            "toolchain": TOOLCHAIN.digest(),
            "precision": self.target.precision,
            "shapes": request.shapes,
        }

    def compile(self, request: CompileRequest, directory: Path) -> dict[str, Any]:
        calibration = request.calibration() if self.target.precision == "int8" else {}
        return compile_model(request.model, self.target.precision, request.shapes, calibration, directory)

    def execution(self, artifact: Path) -> Execution:
        return Execution("toolchain", "run by LiteRT in the pinned tflite toolchain")

    def outputs_for(self, artifact: Path, batches: list[Feeds]) -> Outputs:
        from compiler.backends.static_shapes import run_static

        io = read_io_record(artifact)
        return run_static(io["input_shapes"], batches, lambda padded: outputs_for(artifact, padded, io["onnx_outputs"]))

    def signature(self, compiled: CompiledGraph) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        return compiled.meta["inputs"], compiled.meta["outputs"]

    def not_timed(self, artifact: Path) -> str:
        return (
            "not measured at build time: LiteRT runs in its own toolchain process; a phone's latency "
            "can only be measured on the phone"
        )


def compile_model(
    model_path: Path, precision: str, shapes: dict[str, list[int]], calibration: dict[str, np.ndarray], directory: Path
) -> dict[str, Any]:
    """Write `directory/model.tflite` (+ io.json) and return the backend's meta."""
    from compiler.backends.static_shapes import fold_static

    if precision not in ("fp32", "fp16", "int8"):
        raise UserError(f"the LiteRT backend builds fp32, fp16 or int8 models, not '{precision}'")
    int8 = int8_mode(calibration) if precision == "int8" else None
    TOOLCHAIN.ensure()
    with tempfile.TemporaryDirectory(prefix="edgebuild-tflite-") as tmp:
        static = Path(tmp) / "static.onnx"
        fold_static(model_path, shapes, static)
        files = {}
        for name, array in calibration.items():
            files[name] = str(Path(tmp) / f"calibration-{name}.npy")
            np.save(files[name], array)
        step(f"litert: converting with onnx2tf ({precision}) in the pinned toolchain")
        result = TOOLCHAIN.run(
            WORKER,
            {
                "command": "convert",
                "onnx": str(static),
                "workdir": str(Path(tmp) / "work"),
                "precision": precision,
                "int8": int8,
                "calibration": files if int8 == "full-integer" else {},
                "output": str(directory / ARTIFACT_NAME),
            },
            timeout_s=CONVERT_TIMEOUT_S,
        )
    import onnx

    versions = TOOLCHAIN.versions()
    onnx_outputs = [o.name for o in onnx.load(str(model_path), load_external_data=False).graph.output]
    io = {"inputs": result["inputs"], "outputs": result["outputs"], "input_shapes": shapes}
    io["onnx_outputs"] = onnx_outputs  # the order the pipeline compares outputs in
    write_io_record(directory, io)
    return {
        "artifact": ARTIFACT_NAME,
        "runtime": "litert",
        "runtime_version": versions.get("ai-edge-litert", "unknown"),
        "converter": {
            "onnx2tf": versions.get("onnx2tf"),
            "tensorflow": versions.get("tensorflow"),
            "int8": int8,
        },
        "toolchain": {"name": TOOLCHAIN.name, "lock_sha256": TOOLCHAIN.digest()},
        "ops": result["ops"],
        "tensor_dtypes": result["tensor_dtypes"],
        "inputs": [{**t, "layout": _layout(t["shape"])} for t in result["inputs"]],
        "outputs": result["outputs"],
    }


def int8_mode(calibration: dict[str, np.ndarray]) -> str:
    """The LiteRT INT8 scheme for a model, by its inputs (the rule, measured on MiniLM 2026-11-29).

    Float inputs (images): "full-integer", INT8 weights and activations calibrated on the recipe's
    data (digits-cnn: no accuracy lost). Integer inputs (token ids): "dynamic-range", INT8 weights
    and float activations, since TFLiteConverter's full-integer MiniLM, calibrated on the recipe's
    sentences, scored mean cosine 0.20 against FP32 (0.60 with the mask fill bounded to -20; BUILD.md
    gives the steps); dynamic range: 0.9987.
    """
    if any(np.issubdtype(array.dtype, np.integer) for array in calibration.values()):
        return "dynamic-range"
    return "full-integer"


def _layout(shape: list[int]) -> str | None:
    return "NHWC" if len(shape) == 4 else None


def outputs_for(model: Path, batches: list[dict[str, np.ndarray]], output_names: list[str]) -> list[list[np.ndarray]]:
    """Outputs of the .tflite for every batch, in `output_names` order, run by LiteRT in the toolchain."""
    with tempfile.TemporaryDirectory(prefix="edgebuild-litert-") as tmp:
        arrays = {f"{index}/{name}": array for index, feeds in enumerate(batches) for name, array in feeds.items()}
        np.savez(Path(tmp) / "batches.npz", **arrays)
        TOOLCHAIN.run(
            WORKER,
            {
                "command": "run",
                "model": str(model),
                "batches": str(Path(tmp) / "batches.npz"),
                "count": len(batches),
                "output_names": output_names,
                "outputs": str(Path(tmp) / "outputs.npz"),
            },
            timeout_s=RUN_TIMEOUT_S,
        )
        with np.load(Path(tmp) / "outputs.npz") as produced:
            return [[produced[f"{i}/{k}"] for k in range(len(output_names))] for i in range(len(batches))]


def time_against_ort(
    onnx_path: Path, models: dict[str, Path], feeds: dict[str, np.ndarray], repeats: int
) -> dict[str, float]:
    """Median seconds per call at `feeds` of ONNX Runtime on `onnx_path` ("ort") and of each .tflite,
    interleaved in one toolchain process with one thread each: host figures, not phone figures."""
    with tempfile.TemporaryDirectory(prefix="edgebuild-litert-") as tmp:
        np.savez(Path(tmp) / "feeds.npz", **feeds)
        request = {"command": "time", "onnx": str(onnx_path), "models": {k: str(v) for k, v in models.items()}}
        request.update({"feeds": str(Path(tmp) / "feeds.npz"), "repeats": repeats})
        return TOOLCHAIN.run(WORKER, request, timeout_s=RUN_TIMEOUT_S)
