"""LiteRT on Linux AArch64 boards: the android .tflite, verified and counted on the board's CPU model.

A target with `runtime = { name = "litert" }`, `platform.os = "linux"` and `platform.arch =
"aarch64"` (on an x86 build host) gets this backend; an Android target (same runtime and ISA, os
"android") keeps LiteRtBackend. The artifact is the .tflite the android targets build (onnx2tf in
the pinned 'tflite' toolchain, same precision rules); the board runs it with the aarch64 wheel of
the same ai-edge-litert release (compiler/toolchains/arm64-litert.lock), whose default interpreter
applies the XNNPACK delegate.

Verification runs that wheel on the target's `platform.cpu` under qemu-aarch64, in the arm64
Debian userland of compiler/toolchains/arm64.py (its own site directory, the root filesystem the
ONNX Runtime board shares), on a spaced subset of the recipe's batches in one emulated process.
The build host cannot time it, so the artifact's cost is counted instead: instructions per
inference by class, beside ONNX Runtime FP32 on the imported model on the same emulated CPU
(`cost_summary`); the count also checks that XNNPACK took the graph (a DELEGATE node).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from compiler.backends import ort_aarch64
from compiler.backends.base import CompileRequest, Execution, Feeds, Outputs, read_io_record, reported_meta
from compiler.backends.emulated_board import EmulatedBoard
from compiler.backends.ort_aarch64 import COUNTED_CALLS, cost_summary
from compiler.backends.tflite import TOOLCHAIN, LiteRtBackend
from compiler.errors import ConfigError, UserError
from compiler.shipped import package_file
from compiler.toolchains.arm64 import CPU_MODELS, Userland, per_call

LOCK = package_file("compiler/toolchains/arm64-litert.lock")  # the board's LiteRT (verification)
WORKER = package_file("compiler/backends/litert_aarch64_worker.py")
RUNTIME = "ai-edge-litert"
DELEGATE = "DELEGATE"  # the interpreter node XNNPACK's partition of the graph becomes


def userland() -> Userland:
    """The arm64 userland with the board's LiteRT wheels (arm64-litert.lock)."""
    return Userland(lock=LOCK)


def run_worker(request: dict[str, Any], cpu: str, what: str, count_to: Path | None = None) -> dict[str, Any]:
    """Run litert_aarch64_worker.py on `request` in the LiteRT userland on `cpu`; its JSON result."""
    return ort_aarch64.run_worker(request, cpu, what, count_to, WORKER, userland())


def outputs_under_qemu(artifact: Path, batches: list[Feeds], output_names: list[str], cpu: str) -> Outputs:
    """Every batch's outputs (in `output_names` order) from the board's LiteRT, in one emulated process."""
    with tempfile.TemporaryDirectory(prefix="edgebuild-arm64-litert-") as tmp:
        inputs, out = Path(tmp) / "in", Path(tmp) / "out"
        inputs.mkdir()
        out.mkdir()
        for index, feeds in enumerate(batches):
            np.savez(inputs / f"{index}.npz", **feeds)
        request: dict[str, Any] = {"command": "outputs", "model": str(artifact), "inputs": str(inputs)}
        request.update({"out": str(out), "batches": len(batches), "output_names": output_names})
        run_worker(request, cpu, f"{artifact.name} ({len(batches)} batches, LiteRT)")
        results = []
        for index in range(len(batches)):
            with np.load(out / f"{index}.npz") as archive:
                results.append([archive[str(i)] for i in range(len(archive.files))])
    return results


def count_litert(
    artifact: Path, feeds: Feeds, cpu: str, calls: int = COUNTED_CALLS
) -> tuple[dict[str, int], dict[str, int]]:
    """Instructions per inference by class of the board's LiteRT running `artifact` on `feeds` (one
    warm-up call, then `calls` counted between two marks), and the interpreter's nodes by op."""
    with tempfile.TemporaryDirectory(prefix="edgebuild-arm64-litert-count-") as tmp:
        feeds_path, count_to = Path(tmp) / "feeds.npz", Path(tmp) / "counts.json"
        np.savez(feeds_path, **feeds)
        request = {"command": "count", "model": str(artifact), "feeds": str(feeds_path), "calls": calls}
        result = run_worker(request, cpu, f"counting instructions of {artifact.name} (LiteRT)", count_to)
        nodes: dict[str, int] = result["nodes"]
        return per_call(count_to, calls), nodes


class LiteRtAarch64Backend(EmulatedBoard, LiteRtBackend):
    """LiteRT's aarch64 wheel (XNNPACK) on a board, verified and counted under qemu with its CPU model."""

    times_off_host: ClassVar[bool] = False  # a board's artifact: host timings of it mean nothing

    def userland(self) -> Userland:
        return userland()

    def time_against_ort(
        self, onnx_path: Path, artifacts: dict[str, Path], feeds: Feeds, repeats: int
    ) -> dict[str, float] | None:
        return None

    def compile(self, request: CompileRequest, directory: Path) -> dict[str, Any]:
        """The android targets' .tflite (LiteRtBackend); the board's runtime is the lock's aarch64 wheel."""
        board, host = userland().versions(), TOOLCHAIN.versions()
        if board.get(RUNTIME) != host.get(RUNTIME):
            raise ConfigError(
                f"the board's {RUNTIME} ({board.get(RUNTIME)}, compiler/toolchains/{LOCK.name}) differs from "
                f"the tflite toolchain's ({host.get(RUNTIME)}, compiler/toolchains/{TOOLCHAIN.lock.name}): "
                "the board must run the LiteRT release the model was converted and inspected with"
            )
        meta = super().compile(request, directory)
        model = CPU_MODELS[self.cpu]
        return {
            **meta,
            "runtime_version": board[RUNTIME],
            "device_wheels": board,
            "execution": (
                f"verified with {RUNTIME} {board[RUNTIME]} (aarch64 wheel, default XNNPACK delegate, 1 thread) "
                f"under qemu-aarch64 -cpu {model.name} ({model.board}) in an arm64 Debian userland"
            ),
        }

    def compile_stats(self, meta: dict[str, Any]) -> dict[str, Any]:
        extra = {key: meta[key] for key in ("runtime_version", "device_wheels") if key in meta}
        return {**reported_meta(meta), **extra}

    def execution(self, artifact: Path) -> Execution:
        return Execution("emulated", f"run under qemu-aarch64 -cpu {self.cpu}")

    def outputs_for(self, artifact: Path, batches: list[Feeds]) -> Outputs:
        """Every batch's outputs from the board's LiteRT, padded to the compiled shapes, in one process."""
        from compiler.backends.static_shapes import run_static

        io = read_io_record(artifact)
        return run_static(
            io["input_shapes"],
            batches,
            lambda padded: outputs_under_qemu(artifact, padded, io["onnx_outputs"], self.cpu),
        )

    def instruction_cost(self, artifact: Path, reference: Path, feeds: Feeds) -> dict[str, Any] | None:
        """Instructions per inference by class on the board's CPU model of LiteRT (XNNPACK, 1 thread)
        on the artifact, beside ONNX Runtime FP32 on `reference` (same emulated CPU, same inputs)."""
        from compiler.backends.static_shapes import pad

        padded, _ = pad(feeds, read_io_record(artifact)["input_shapes"])
        counts, nodes = count_litert(artifact, padded, self.cpu)
        if nodes.get(DELEGATE, 0) == 0:
            raise UserError(
                f"{artifact.name}: LiteRT's default interpreter under qemu-aarch64 -cpu {self.cpu} delegated no "
                f"part of the model to XNNPACK (nodes: {', '.join(f'{op} {n}' for op, n in nodes.items())}); this "
                "target's kernels are XNNPACK's: build the model for arm64-int8 (ONNX Runtime) instead"
            )
        summary = cost_summary(self.cpu, counts, reference, feeds)
        # The interpreter's node list holds the model's own nodes and the DELEGATE node(s) XNNPACK
        # replaced its partitions with (LiteRT's Python API does not expose the execution plan).
        litert = {"version": userland().versions()[RUNTIME], "threads": 1, "interpreter_nodes": nodes}
        return {**summary, "litert": litert}

    def not_timed(self, artifact: Path) -> str:
        return (
            f"not timed: the artifact ran in LiteRT under qemu-aarch64 -cpu {self.cpu} to be verified; its cost "
            "is counted in instructions per inference (no caches or latencies are modelled: not a time)"
        )


__all__ = ["LOCK", "LiteRtAarch64Backend", "count_litert", "outputs_under_qemu", "userland"]
