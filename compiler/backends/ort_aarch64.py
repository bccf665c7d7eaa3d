"""ONNX Runtime on Linux AArch64 boards: the same .onnx as on the desktop, verified on the board's CPU model.

A target with `runtime = { name = "onnxruntime" }` and `platform.arch = "aarch64"` (on an x86
build host) gets this backend. The artifact is the graph saved by this host's ONNX Runtime at the
target's portable optimisation level (as OrtBackend does); the board runs it with the aarch64 wheel
of the same ONNX Runtime release, whose MLAS kernels for QDQ/MatMulInteger models are integer
ones (SMULL/SADALP on a Cortex-A72, SDOT on an A76: it picks them from the CPU's HWCAPs).

Verification runs that wheel on the target's `platform.cpu` under qemu-aarch64, in an arm64
Debian userland (compiler/toolchains/arm64.py), on a spaced subset of the recipe's batches. The
build host cannot time it, so the artifact's cost is counted instead: instructions per inference
by class, for the artifact and for the FP32 model on the same emulated CPU.
"""

from __future__ import annotations

import io
import json
import subprocess
import tempfile
import weakref
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from compiler.backends.base import CompileRequest, Execution, Feeds, Outputs, Predict
from compiler.backends.emulated_board import EmulatedBoard
from compiler.backends.ort import OrtBackend
from compiler.errors import ConfigError
from compiler.progress import LOG_EVERY_S, step
from compiler.shipped import package_file
from compiler.toolchains.arm64 import (
    CPU_MODELS,
    INTEGER_MAC,
    BatchProgress,
    Userland,
    emulation_versions,
    guest_failure,
    per_call,
)

WORKER = package_file("compiler/backends/ort_aarch64_worker.py")
OPERATORS = "operators.txt"
COUNTED_CALLS = 3  # inferences counted after one warm-up (counts repeat to ~0.01%; more only cost time)
TIMEOUT_S = 7200


def operator_list(model: Path) -> list[str]:
    """'domain:OpType count' for every operator of `model` (the ops the board's build must have)."""
    import onnx

    graph = onnx.load(str(model), load_external_data=False).graph
    counts = Counter(f"{node.domain or 'ai.onnx'}:{node.op_type}" for node in graph.node)
    return [f"{op} {count}" for op, count in sorted(counts.items())]


def run_worker(
    request: dict[str, Any],
    cpu: str,
    what: str,
    count_to: Path | None = None,
    worker: Path = WORKER,
    userland: Userland | None = None,
) -> dict[str, Any]:
    """Run `worker` (ort_aarch64_worker.py, or another runtime's guest worker with the same request
    protocol) on `request` in `userland` (default: ONNX Runtime's) on `cpu`; its JSON result. A
    request with "batches" reports how far it is (BatchProgress) in the periodic progress line."""
    with tempfile.TemporaryDirectory(prefix="edgebuild-arm64-request-") as tmp:
        request_path, result_path = Path(tmp) / "request.json", Path(tmp) / "result.json"
        progress = Path(tmp) / "progress"
        request_path.write_text(json.dumps({**request, "result": str(result_path), "progress": str(progress)}))
        status = BatchProgress(progress, request["batches"]) if "batches" in request else None
        (userland or Userland()).run_python(cpu, worker, [str(request_path)], what, TIMEOUT_S, count_to, status)
        loaded: dict[str, Any] = json.loads(result_path.read_text())
    return loaded


def count_onnx_runtime(model: Path, feeds: Feeds, cpu: str, calls: int = COUNTED_CALLS) -> dict[str, int]:
    """Instructions per inference by class of the board's ONNX Runtime running `model` on `feeds`
    (one warm-up call, then `calls` counted between two marks)."""
    with tempfile.TemporaryDirectory(prefix="edgebuild-arm64-count-") as tmp:
        feeds_path, count_to = Path(tmp) / "feeds.npz", Path(tmp) / "counts.json"
        np.savez(feeds_path, **feeds)
        request = {"command": "count", "model": str(model), "feeds": str(feeds_path), "calls": calls}
        run_worker(request, cpu, f"counting instructions of {model.name}", count_to)
        return per_call(count_to, calls)


def cost_summary(cpu: str, artifact: dict[str, int], reference: Path, feeds: Feeds) -> dict[str, Any]:
    """The record's `instructions` entry: the artifact's counts beside ONNX Runtime FP32's on `reference`
    (same emulated CPU, same inputs), the ratio and the integer multiply-accumulate share."""
    fp32 = count_onnx_runtime(reference, feeds, cpu)
    integer = sum(artifact[name] for name in INTEGER_MAC)
    return {
        "cpu": cpu,
        "artifact": artifact,
        "ort_fp32": fp32,
        "ratio_vs_ort_fp32": artifact["total"] / fp32["total"],
        "integer_mac": integer,
        "integer_mac_share": integer / artifact["total"],
        "calls": COUNTED_CALLS,
        "emulator": emulation_versions(cpu),
        "note": "instructions per inference under qemu (one core, no caches or latencies modelled): not a time",
    }


class GuestSession:
    """Calls to one ONNX Runtime session living in an emulated arm64 process (ort_aarch64_worker "serve")."""

    def __init__(self, artifact: Path, cpu: str) -> None:
        self.what, self.cpu = f"{artifact.name} (session)", cpu
        self._tmp = tempfile.TemporaryDirectory(prefix="edgebuild-arm64-session-")
        request, self._stderr_path = Path(self._tmp.name) / "request.json", Path(self._tmp.name) / "stderr"
        result = Path(self._tmp.name) / "result.json"
        request.write_text(json.dumps({"command": "serve", "model": str(artifact), "result": str(result)}))
        command = Userland().python_command(cpu, WORKER, [str(request)])
        self._stderr = self._stderr_path.open("wb")
        self._process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr)
        self._finalizer = weakref.finalize(self, GuestSession._close, self._process, self._stderr, self._tmp)

    def __call__(self, feeds: Feeds) -> list[np.ndarray]:
        buffer = io.BytesIO()
        np.savez(buffer, **feeds)
        process = self._process
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(len(buffer.getvalue()).to_bytes(8, "little") + buffer.getvalue())
            process.stdin.flush()
            header = process.stdout.read(8)
        except BrokenPipeError:
            header = b""
        if len(header) < 8:
            code = process.wait()
            self._stderr.flush()
            raise guest_failure(self.cpu, self.what, code, self._stderr_path.read_text(errors="replace"))
        data = process.stdout.read(int.from_bytes(header, "little"))
        with np.load(io.BytesIO(data)) as archive:
            return [archive[str(i)] for i in range(len(archive.files))]

    def close(self) -> None:
        self._finalizer()

    @staticmethod
    def _close(process: subprocess.Popen[bytes], stderr: Any, tmp: tempfile.TemporaryDirectory[str]) -> None:
        if process.poll() is None:
            try:
                assert process.stdin is not None
                process.stdin.write((0).to_bytes(8, "little"))
                process.stdin.close()
                process.wait(timeout=60)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait()
        stderr.close()
        tmp.cleanup()


class OrtAarch64Backend(EmulatedBoard, OrtBackend):
    """ONNX Runtime's aarch64 build on a board, verified and counted under qemu with its CPU model."""

    capabilities: ClassVar[frozenset[str]] = frozenset({"stepwise"})  # predictor(): a session in a guest process
    remote_predictor: ClassVar[bool] = True

    def compile(self, request: CompileRequest, directory: Path) -> dict[str, Any]:
        """The portable .onnx (OrtBackend) and its operator list; the board's runtime is the lock's wheel."""
        meta = super().compile(request, directory)
        host_version, board = meta["runtime_version"], Userland().versions()
        if board["onnxruntime"] != host_version:
            raise ConfigError(
                f"the board's onnxruntime ({board['onnxruntime']}, compiler/toolchains/arm64-userland.lock) differs "
                f"from this host's ({host_version}): the saved graph must load in the release the board runs"
            )
        ops = operator_list(directory / meta["artifact"])
        (directory / OPERATORS).write_text("\n".join(ops) + "\n")
        model = CPU_MODELS[self.cpu]
        return {
            **meta,
            "runtime_version": board["onnxruntime"],
            "device_wheels": board,
            "ops": [line.split(" ")[0] for line in ops],
            "extra_files": {OPERATORS: "operators"},
            "execution": (
                f"verified with onnxruntime {board['onnxruntime']} (aarch64 wheel) under qemu-aarch64 -cpu "
                f"{model.name} ({model.board}) in an arm64 Debian userland"
            ),
        }

    def compile_stats(self, meta: dict[str, Any]) -> dict[str, Any]:
        keys = ("graph_optimization", "runtime_version", "device_wheels", "ops", "execution")
        return {key: meta[key] for key in keys if key in meta}

    def execution(self, artifact: Path) -> Execution:
        return Execution("emulated", f"run under qemu-aarch64 -cpu {self.cpu}")

    def predictor(self, artifact: Path, threads: int = 1) -> Predict:
        """A session in a long-lived emulated process (one ORT session on the board's CPU): what a
        generation loop calls step by step. Not for timing: the process is emulated."""
        return GuestSession(artifact, self.cpu)

    def outputs_for(self, artifact: Path, batches: list[Feeds]) -> Outputs:
        """Every batch's outputs from the board's ONNX Runtime, in one emulated process."""
        with tempfile.TemporaryDirectory(prefix="edgebuild-arm64-") as tmp:
            inputs, out = Path(tmp) / "in", Path(tmp) / "out"
            inputs.mkdir()
            out.mkdir()
            for index, feeds in enumerate(batches):
                np.savez(inputs / f"{index}.npz", **feeds)
            request: dict[str, Any] = {
                "command": "outputs",
                "model": str(artifact),
                "inputs": str(inputs),
                "out": str(out),
            }
            request["batches"] = len(batches)
            step(f"emulated: a progress line with the time left every {LOG_EVERY_S:.0f} s ({len(batches)} batches)")
            run_worker(request, self.cpu, f"{artifact.name} ({len(batches)} batches)")
            results = []
            for index in range(len(batches)):
                with np.load(out / f"{index}.npz") as archive:
                    results.append([archive[str(i)] for i in range(len(archive.files))])
        return results

    def instruction_cost(self, artifact: Path, reference: Path, feeds: Feeds) -> dict[str, Any] | None:
        """Instructions per inference by class on the board's CPU model, for the artifact and for the
        FP32 `reference` (ONNX Runtime FP32 on the same emulated CPU), with the artifact's ratio."""
        return cost_summary(self.cpu, count_onnx_runtime(artifact, feeds, self.cpu), reference, feeds)

    def not_timed(self, artifact: Path) -> str:
        return (
            f"not timed: the artifact ran under qemu-aarch64 -cpu {self.cpu} to be verified; its cost is "
            "counted in instructions per inference (no caches or latencies are modelled: not a time)"
        )


__all__ = [
    "COUNTED_CALLS",
    "run_worker",
    "OPERATORS",
    "GuestSession",
    "OrtAarch64Backend",
    "cost_summary",
    "count_onnx_runtime",
    "operator_list",
]
