"""Apache TVM backend: a target file -> one tuned `model.so` per graph, run natively or under qemu.

A target file says what to build for (`platform.triple`, `cpu`, `mattr`), how much to tune
(`[tune] trials`, `max_trials_per_task`, `runner`); the build gives the static shapes (the
recipe's benchmark shapes: one tuned artifact per shape). The tuning database lives in the cache,
one per hardware target (`cache/tuning/<sha256 of the full TVM target>`), so records are reused
by later builds and by other models with the same workloads, and never by another target.
A library for the host's ISA runs in this process (TVM's Relax VM); one for AArch64 is
cross-compiled and runs under qemu-aarch64 (aarch64.py), untimed. tvm_relax.py does the compiling.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any, ClassVar

from compiler.backends.base import (
    Backend,
    CompiledGraph,
    CompileRequest,
    Execution,
    Feeds,
    Outputs,
    Predict,
    Shipped,
    read_io_record,
    write_io_record,
)
from compiler.backends.host import host_arch
from compiler.digests import canonical_json, sha256_bytes, sha256_tree, tool_versions
from compiler.engine.specs import TargetSpec
from compiler.errors import ConfigError, UserError

THREADS_ENV = "TVM_NUM_THREADS"


def tvm_target(spec: TargetSpec) -> Any:
    """The TvmTarget for a target file (platform.triple, cpu, mattr)."""
    from compiler.backends.tvm_relax import TvmTarget

    platform_table = spec.platform
    triple = platform_table.get("triple") or f"{platform_table['arch']}-linux-gnu"
    if not triple.startswith(("x86_64", "aarch64")):
        raise ConfigError(f"{spec.path}: platform.triple '{triple}': the TVM backend builds x86_64 and aarch64 Linux")
    cpu = platform_table.get("cpu")
    mattr = platform_table.get("mattr", [])
    if not isinstance(mattr, list) or not all(isinstance(a, str) for a in mattr):
        raise ConfigError(f"{spec.path}: field 'platform.mattr' must be a list such as [\"+neon\"]")
    cores = int(os.environ.get(THREADS_ENV, "0")) or os.cpu_count() or 1
    return TvmTarget(
        kind="llvm",
        mtriple=triple,
        mcpu=None if cpu in (None, "generic", "native") else cpu,
        mattr=tuple(mattr),
        num_cores=cores,
    )


def with_trials(spec: TargetSpec, trials: int | None) -> TargetSpec:
    """`spec` with `[tune] trials` overridden (`--tune-trials`); unchanged when None."""
    if trials is None:
        return spec
    if trials < 0:
        raise ConfigError(f"--tune-trials must be 0 (untuned) or more, got {trials}")
    return replace(spec, tune={**spec.tune, "trials": trials})


def with_rpc(spec: TargetSpec, tracker: str | None, key: str | None) -> TargetSpec:
    """`spec` tuned through a TVM RPC tracker (`--rpc-tracker HOST:PORT --rpc-key KEY`); unchanged
    when neither is given."""
    if tracker is None and key is None:
        return spec
    if not tracker or not key:
        raise ConfigError("--rpc-tracker HOST:PORT and --rpc-key KEY go together")
    from compiler.backends.tvm_tuning import RpcTracker

    RpcTracker.parse(tracker, key)  # a malformed address fails here, before any build work
    return replace(spec, tune={**spec.tune, "runner": "rpc", "tracker": tracker, "key": key})


def strip_debug_info(library: Path, triple: str) -> bool:
    """Remove the DWARF sections LLVM leaves in an exported library (the symbols loaders need stay):
    a device gets no use of them and they cost bytes. True when stripped."""
    from compiler.toolchains.apt import ensure_programs

    if triple.startswith("aarch64") and host_arch() != "aarch64":
        tool = ensure_programs({"strip": "aarch64-linux-gnu-strip"}, ("binutils-aarch64-linux-gnu",), "AArch64 strip")
    else:
        tool = ensure_programs({"strip": "strip"}, ("binutils",), "strip (binutils)")
    result = subprocess.run([tool["strip"], "--strip-debug", str(library)], capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"strip --strip-debug {library.name} failed: {result.stderr.strip()[-300:]}")
    return True


def database_dir(cache_root: Path, target: Any) -> Path:
    """The tuning database of one hardware target (keyed by the full TVM target, not its name)."""
    return cache_root / "tuning" / sha256_bytes(canonical_json(target.as_dict()).encode())


class TvmBackend(Backend):
    """`runtime = { name = "tvm" }`: a Relax library compiled (and tuned) for the target's CPU."""

    runtime: ClassVar[str] = "tvm"
    tools: ClassVar[tuple[str, ...]] = ("apache-tvm", "apache-tvm-ffi")
    capabilities: ClassVar[frozenset[str]] = frozenset({"stepwise"})
    untimed_summary: ClassVar[str] = "cross-compiled; verified under emulation"
    tunable: ClassVar[bool] = True
    counts_instructions: ClassVar[bool] = True  # AArch64 libraries, under emulation

    @classmethod
    def tuned(
        cls, target: TargetSpec, trials: int | None, tracker: str | None = None, key: str | None = None
    ) -> TargetSpec:
        return with_rpc(with_trials(target, trials), tracker, key)

    def check_target(self) -> None:
        target = tvm_target(self.target)  # triple and mattr are checked before any work
        if not target.is_host():
            self.board_cpu  # noqa: B018 - an emulated board needs a CPU model qemu knows

    @property
    def board_cpu(self) -> str:
        """The qemu CPU model of the target's board (platform.cpu): what emulation runs the library on."""
        from compiler.toolchains.arm64 import cpu_model

        return cpu_model(self.target.platform.get("cpu"), str(self.target.path)).name

    def key_config(self, request: CompileRequest) -> dict[str, Any]:
        """Target, tuning budget and shapes. Untuned builds (trials = 0) use whatever the database
        holds, so its content is part of the key; a tuned build is identified by its budget (it
        adds records to the database as it runs)."""
        spec = self.target
        target = tvm_target(spec)
        config: dict[str, Any] = {
            "runtime": "tvm",
            "target": target.as_dict(),
            "tune": spec.tune,
            "shapes": request.shapes,
        }
        if spec.tune["trials"] == 0:
            database = database_dir(request.cache_root, target)
            config["database"] = sha256_tree([database]) if database.is_dir() else "empty"
        config["onnxslim"] = tool_versions("onnxslim")
        return config

    def compile(self, request: CompileRequest, directory: Path) -> dict[str, Any]:
        """`model.so` + io.json for the target; the graph is folded again at the static shapes first."""
        from compiler.backends import tvm_relax
        from compiler.backends.static_shapes import fold_static

        spec, shapes = self.target, request.shapes
        target = tvm_target(spec)
        tune = tvm_relax.TuneOptions(
            trials=spec.tune["trials"],
            max_trials_per_task=spec.tune.get("max_trials_per_task"),
            runner=spec.tune.get("runner", "local"),
            tracker=spec.tune.get("tracker"),
            key=spec.tune.get("key"),
        )
        cross, execution = None, None
        if not target.is_host():
            from compiler.backends import aarch64
            from compiler.toolchains.arm64 import qemu_tools

            cross = aarch64.cross_compiler()
            tools = aarch64.ensure_cross_toolchain()
            execution = (
                f"cross-compiled with {tools['gxx_version']}; verified by executing it under "
                f"{qemu_tools()['qemu_version']} -cpu {self.board_cpu} (emulated: no timings)"
            )
        database = database_dir(request.cache_root, target)
        database.mkdir(parents=True, exist_ok=True)
        static = directory / "static.onnx"
        fold_static(request.model, shapes, static)
        try:
            meta: dict[str, Any] = tvm_relax.compile_model(static, shapes, target, tune, database, directory, cross)
        finally:
            static.unlink(missing_ok=True)
        meta["debug_info_stripped"] = strip_debug_info(directory / meta["artifact"], target.mtriple)
        write_io_record(directory, {key: meta[key] for key in ("inputs", "outputs", "input_shapes", "target")})
        if target.mtriple.startswith("x86_64"):
            meta["isa_features"] = tvm_relax.host_isa_features()
        if execution:
            meta["execution"] = execution
        return meta

    def execution(self, artifact: Path) -> Execution:
        triple = read_io_record(artifact)["target"]["mtriple"]
        return (
            Execution("host")
            if triple.split("-")[0] == host_arch()
            else Execution("emulated", f"run under qemu-aarch64 -cpu {self.board_cpu}")
        )

    def predictor(self, artifact: Path, threads: int = 1) -> Predict:
        """The library in TVM's Relax VM at the static shapes of its io.json."""
        from compiler.backends import tvm_relax
        from compiler.backends.static_shapes import pad_to_static

        io = read_io_record(artifact)
        names = [entry["name"] for entry in io["inputs"]]
        return pad_to_static(tvm_relax.load_runner(artifact, names), io["input_shapes"])

    def outputs_for(self, artifact: Path, batches: list[Feeds]) -> Outputs:
        if self.execution(artifact).where == "host":
            return super().outputs_for(artifact, batches)
        from compiler.backends import aarch64
        from compiler.backends.static_shapes import run_static

        io = read_io_record(artifact)
        names = [entry["name"] for entry in io["inputs"]]  # main's parameter order

        def under_qemu(padded: list[Feeds]) -> Outputs:
            # Positional arguments: io.json's input_shapes keys are sorted, not in main's order.
            feeds = [{n: full[n] for n in names} for full in padded]
            return aarch64.run_batches_under_qemu(artifact, feeds, self.board_cpu)

        return run_static(io["input_shapes"], batches, under_qemu)

    def instruction_cost(self, artifact: Path, reference: Path, feeds: Feeds) -> dict[str, Any] | None:
        """An AArch64 library's instructions per inference on the board's CPU model: the runner called
        1 + N times minus called once (start-up and loading cancel out), against ONNX Runtime FP32."""
        if self.execution(artifact).where == "host":
            return None
        import tempfile

        from compiler.backends import aarch64
        from compiler.backends.ort_aarch64 import COUNTED_CALLS, cost_summary
        from compiler.backends.static_shapes import run_static
        from compiler.toolchains.arm64 import CLASSES, exit_counts

        io = read_io_record(artifact)
        names = [entry["name"] for entry in io["inputs"]]
        totals = {}
        with tempfile.TemporaryDirectory(prefix="edgebuild-tvm-count-") as tmp:
            for calls in (1, 1 + COUNTED_CALLS):
                count_to = Path(tmp) / f"{calls}.json"

                def counted(padded: list[Feeds], count_to: Path = count_to) -> Outputs:
                    batches = [{n: full[n] for n in names} for full in padded]
                    return aarch64.run_batches_under_qemu(
                        artifact, batches, self.board_cpu, count_instructions=count_to
                    )

                run_static(io["input_shapes"], [feeds] * calls, counted)
                totals[calls] = exit_counts(count_to)
        many, once = totals[1 + COUNTED_CALLS], totals[1]
        per_inference = {name: round((many[name] - once[name]) / COUNTED_CALLS) for name in CLASSES}
        return cost_summary(self.board_cpu, per_inference, reference, feeds)

    def run_program(self, artifact: Path, source: Path, arguments: list[str], timeout_s: int) -> None:
        """Build `source` against the TVM runtime for AArch64 and run it under qemu-aarch64."""
        from compiler.backends import aarch64

        if self.execution(artifact).where == "host":
            raise ConfigError(f"{artifact.name} runs on this host: call it through predictor(), not a native program")
        runner = aarch64.build_runner(source=source)
        aarch64.run_runner(self.board_cpu, runner, artifact, artifact.parent, artifact.parent, timeout_s, arguments)

    def ship(self, compiled: CompiledGraph, name: str, prefix: str = "") -> dict[str, Shipped]:
        """The library, and for a board the TVM runtime + the C++ loader sources it needs."""
        files = super().ship(compiled, name, prefix)
        if self.execution(compiled.artifact).where != "host":
            from compiler.backends import aarch64

            files.update({n: Shipped(path, role) for n, (path, role) in sorted(aarch64.device_files().items())})
        return files

    def not_timed(self, artifact: Path) -> str:
        return (
            "not measured: the artifact is for another ISA and ran under qemu-aarch64 only to be "
            "verified; emulated timings say nothing about the device"
        )


__all__ = ["THREADS_ENV", "TvmBackend", "database_dir", "tvm_target", "with_rpc", "with_trials"]
