"""Apache TVM Relax: constant-folded ONNX with static shapes -> one `model.so` for a CPU target.

The Relax ONNX frontend imports the graph with every input dim fixed (tuning crashes on dynamic
shapes, so one artifact serves one shape); `DecomposeOpsForInference` plus the "zero" pipeline
legalise and fuse it (the default CPU pipeline does no fusion). MetaSchedule records from the
per-target database (see `tvm_tuning`) are applied before `tvm.compile`; workloads without
records compile to naive loops, which run far slower than ONNX Runtime, so an untuned build is
for correctness, not speed. Code and weights go into one shared library, linked by the host
compiler or, for a foreign ISA, by the `cross_compiler` the caller passes.
"""

from __future__ import annotations

import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from compiler import progress
from compiler.backends import tvm_tuning
from compiler.backends.host import host_arch
from compiler.errors import UserError

ARTIFACT_NAME = "model.so"

# A target's mcpu that any CPU of its ISA runs (anything else may use instructions the host lacks).
_GENERIC_CPUS = {"generic", "x86-64"}
_X86_ISA_PREFIXES = ("sse", "ssse3", "avx", "fma", "f16c", "bmi", "amx", "popcnt", "aes", "sha_ni", "vaes", "vpclmul")


class TvmError(UserError):
    """TVM cannot build this model for this target (unsupported op, bad shapes, failed tuning)."""


@dataclass(frozen=True)
class TvmTarget:
    """An LLVM CPU target; `mcpu` None means the build machine's CPU for a host triple."""

    kind: str
    mtriple: str
    mcpu: str | None
    mattr: tuple[str, ...]
    num_cores: int

    @property
    def arch(self) -> str:
        return self.mtriple.split("-", 1)[0]

    def resolved_mcpu(self) -> str | None:
        """The CPU name LLVM generates code for: None -> the host CPU (x86 host) or generic."""
        if self.mcpu is not None:
            return self.mcpu
        if self.arch == host_arch():
            from tvm.target import codegen

            return str(codegen.llvm_get_system_cpu())
        return None

    def as_dict(self) -> dict[str, Any]:
        """The dict for tvm.target.Target; JSON-able and complete, so it can key caches."""
        target: dict[str, Any] = {"kind": self.kind, "mtriple": self.mtriple, "num-cores": self.num_cores}
        mcpu = self.resolved_mcpu()
        if mcpu:
            target["mcpu"] = mcpu
        if self.mattr:
            target["mattr"] = list(self.mattr)
        return target

    def is_host(self) -> bool:
        """True when code built for this target runs on this machine."""
        if self.kind != "llvm" or self.arch != host_arch():
            return False
        host_cpu = TvmTarget(self.kind, self.mtriple, None, (), self.num_cores).resolved_mcpu()
        return self.mcpu is None or self.mcpu in _GENERIC_CPUS or self.mcpu == host_cpu


@dataclass(frozen=True)
class TuneOptions:
    """The tuning budget, and where candidates run: "local" (this host) or "rpc" (the devices
    registered under `key` at the TVM RPC tracker `tracker`, HOST:PORT)."""

    trials: int
    max_trials_per_task: int | None
    runner: str = "local"
    tracker: str | None = None
    key: str | None = None

    def rpc(self) -> tvm_tuning.RpcTracker | None:
        if self.runner == "local":
            return None
        if self.runner != "rpc":
            raise TvmError(f'TVM tuning runner \'{self.runner}\' is unknown; use "local" or "rpc"')
        if not self.tracker or not self.key:
            raise TvmError('[tune] runner = "rpc" needs tracker = "HOST:PORT" and key = "<device key>"')
        return tvm_tuning.RpcTracker.parse(self.tracker, self.key)


def host_isa_features() -> list[str]:
    """The host's SIMD/crypto ISA extensions from /proc/cpuinfo (x86 flags or ARM Features)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            return sorted({f for f in value.split() if f.startswith(_X86_ISA_PREFIXES)})
        if key.strip() == "Features":
            return sorted(set(value.split()))
    return []


def _ort_targets() -> str:
    """Names of the targets here (workspace and built-in) that run ONNX Runtime, for error messages."""
    from compiler import workspace

    names = set()
    for directory in workspace.search_dirs("targets"):
        for path in sorted(directory.glob("*.toml")):
            try:
                runtime = tomllib.loads(path.read_text()).get("runtime", {})
            except (OSError, tomllib.TOMLDecodeError):
                continue
            name = runtime.get("name") if isinstance(runtime, dict) else runtime
            if name == "onnxruntime":
                names.add(path.stem)
    return ", ".join(sorted(names)) if names else "a target with runtime onnxruntime"


def _tensor_specs(model: onnx.ModelProto, shapes: dict[str, list[int]]) -> list[dict[str, Any]]:
    initializers = {i.name for i in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        dtype = str(np.dtype(onnx.helper.tensor_dtype_to_np_dtype(value.type.tensor_type.elem_type)))
        if value.name not in shapes:
            raise TvmError(f"TVM needs a static shape for input '{value.name}'; got shapes for {sorted(shapes)}")
        shape = [int(d) for d in shapes[value.name]]
        rank = len(value.type.tensor_type.shape.dim)
        if len(shape) != rank or any(d <= 0 for d in shape):
            raise TvmError(f"input '{value.name}' has rank {rank}; shape {shape} must give {rank} positive dims")
        specs.append({"name": value.name, "dtype": dtype, "shape": shape})
    return specs


def _import(model: onnx.ModelProto, model_path: Path, inputs: list[dict[str, Any]]) -> Any:
    """ONNX -> Relax IRModule with static shapes; unsupported ops become one-line user errors."""
    import tvm
    from tvm.relax.frontend.onnx import from_onnx

    try:
        return from_onnx(
            model,
            shape_dict={i["name"]: i["shape"] for i in inputs},
            dtype_dict={i["name"]: i["dtype"] for i in inputs},
        )
    except tvm.error.OpNotImplemented as error:
        detail = str(error).strip().splitlines()[-1] if str(error).strip() else "unsupported op"
        raise TvmError(
            f"TVM's Relax ONNX frontend cannot import {model_path.name}: {detail}; "
            f"targets running ONNX Runtime ({_ort_targets()}) can build this model"
        ) from error
    except (RuntimeError, ValueError, KeyError, TypeError, AssertionError, IndexError) as error:
        # The frontend reports unsupported attribute/shape combinations as plain exceptions.
        lines = [line for line in str(error).splitlines() if line.strip()]
        detail = lines[-1] if lines else type(error).__name__
        raise TvmError(
            f"TVM's Relax ONNX frontend failed on {model_path.name} ({type(error).__name__}: {detail[:200]}); "
            f"fold constants first, or use an ONNX Runtime target ({_ort_targets()})"
        ) from error


def _output_specs(names: list[str], mod: Any) -> list[dict[str, Any]]:
    from tvm import relax

    info = mod["main"].ret_ty  # 0.27 renamed StructInfo to Type (ret_struct_info -> ret_ty)
    leaves = list(info.fields) if isinstance(info, relax.TupleType) else [info]
    specs = []
    for index, leaf in enumerate(leaves):
        shape = [int(d) for d in leaf.shape.values] if leaf.shape is not None else None
        name = names[index] if index < len(names) else f"output_{index}"
        specs.append({"name": name, "dtype": str(leaf.dtype), "shape": shape})
    return specs


def compile_model(
    model_path: Path,
    shapes: dict[str, list[int]],
    target: TvmTarget,
    tune: TuneOptions,
    database_dir: Path,
    directory: Path,
    cross_compiler: Callable[..., Any] | None = None,
) -> dict[str, Any]:
    """Write `directory/model.so` for `target`, tuned or from the database; return its meta.

    Needs: a constant-folded ONNX and a concrete shape for every graph input. Guarantees: the
    artifact loads with `relax.VirtualMachine` on a machine of the target's ISA; MetaSchedule runs
    only for a host target with trials > 0 and only on workloads the database does not cover.
    """
    import tvm
    from tvm import relax

    rpc = tune.rpc()
    if tune.trials < 0:
        raise TvmError(f"TVM tuning trials must be >= 0, got {tune.trials}")
    model = onnx.load(str(model_path))  # external weights next to the file load too
    inputs = _tensor_specs(model, shapes)
    tvm_target = tvm.target.Target(target.as_dict())

    started = time.perf_counter()
    mod = _import(model, model_path, inputs)
    outputs = _output_specs([o.name for o in model.graph.output], mod)
    del model  # the weights now live in the IRModule; big transformers would hold two copies
    with tvm_target:
        mod = tvm.transform.Sequential(
            [
                relax.transform.DecomposeOpsForInference(),
                relax.transform.CanonicalizeBindings(),
                relax.get_pipeline("zero"),
            ]
        )(mod)
    progress.step(f"tvm: imported and fused {model_path.name} ({time.perf_counter() - started:.1f} s)")

    with tvm_tuning.locked(database_dir):
        database, tuning = tvm_tuning.tune(
            mod,
            tvm_target,
            tune.trials,
            tune.max_trials_per_task,
            target.num_cores,
            database_dir,
            allow_tuning=target.is_host(),
            progress=progress.step,
            rpc=rpc,
        )
        with tvm_target, database:
            mod = relax.transform.MetaScheduleApplyDatabase(enable_warning=False)(mod)
    if tuning["new_trials"]:
        progress.step(f"tvm: tuned {tuning['new_trials']} trials ({tuning['wall_s']:.1f} s)")

    compiled = time.perf_counter()
    executable = tvm.compile(mod, target=tvm_target)
    output = directory / ARTIFACT_NAME
    executable.export_library(str(output), fcompile=cross_compiler)
    progress.step(
        f"tvm: compiled {ARTIFACT_NAME} for {target.arch} ({time.perf_counter() - compiled:.1f} s, "
        f"{tuning['source']}, {tuning['tasks_with_records']}/{len(tuning['tasks'])} tasks with records)"
    )
    return {
        "artifact": ARTIFACT_NAME,
        "runtime": "tvm",
        "runtime_version": tvm.__version__,
        "target": target.as_dict(),
        "input_shapes": {name: list(shape) for name, shape in shapes.items()},
        "inputs": inputs,
        "outputs": outputs,
        "tuning": tuning,
    }


def load_runner(
    artifact: Path, input_names: list[str], num_threads: int | None = None
) -> Callable[[dict[str, np.ndarray]], list[np.ndarray]]:
    """Load a host `model.so` into a Relax VM; the returned function maps named inputs to outputs.

    `num_threads` sets TVM's thread pool for the whole process (TVM has one pool per process).
    """
    import tvm
    from tvm import relax

    if num_threads is not None:
        # "runtime.config_threadpool"(mode, n): mode 1 = big cores, as TVM_NUM_THREADS would set it.
        tvm.get_global_func("runtime.config_threadpool")(1, int(num_threads))
    machine = relax.VirtualMachine(tvm.runtime.load_module(str(artifact)), tvm.cpu())
    main = machine["main"]

    def flatten(value: Any) -> list[np.ndarray]:
        if hasattr(value, "numpy"):
            return [value.numpy()]
        return [array for item in value for array in flatten(item)]

    def run(feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        missing = [n for n in input_names if n not in feeds]
        if missing:
            raise TvmError(f"missing inputs {missing} for {artifact.name}; it takes {input_names}")
        return flatten(main(*(tvm.runtime.tensor(np.ascontiguousarray(feeds[n])) for n in input_names)))

    return run
