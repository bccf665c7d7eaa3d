"""The compile stage for targets whose runtime is TVM: from a target file to `compile_model`'s inputs.

A target file says what to build for (`platform.triple`, `cpu`, `mattr`), how much to tune
(`[tune] trials`, `max_trials_per_task`, `runner`) and the pipeline gives the static shapes (the
recipe's benchmark shapes: one tuned artifact per shape). The tuning database lives in the cache,
one per hardware target (`cache/tuning/<sha256 of the full TVM target>`), so records are reused
by later builds and by other models with the same workloads, and never by another target.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from compiler.cache import canonical_json, sha256_bytes, sha256_tree
from compiler.config import TargetSpec
from compiler.errors import ConfigError
from compiler.runtime import IO_RECORD

THREADS_ENV = "TVM_NUM_THREADS"


def tvm_target(spec: TargetSpec) -> Any:
    """The backend's TvmTarget for a target file (platform.triple, cpu, mattr)."""
    from compiler.backends.tvm import TvmTarget

    platform = spec.platform
    triple = platform.get("triple") or f"{platform['arch']}-linux-gnu"
    if not triple.startswith(("x86_64", "aarch64")):
        raise ConfigError(f"{spec.path}: platform.triple '{triple}': the TVM backend builds x86_64 and aarch64 Linux")
    cpu = platform.get("cpu")
    mattr = platform.get("mattr", [])
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


def database_dir(cache_root: Path, target: Any) -> Path:
    """The tuning database of one hardware target (keyed by the full TVM target, not its name)."""
    return cache_root / "tuning" / sha256_bytes(canonical_json(target.as_dict()).encode())


def key_config(spec: TargetSpec, shapes: dict[str, list[int]], cache_root: Path) -> dict[str, Any]:
    """What the compile stage's cache key holds beyond the model: target, tuning budget, shapes.

    Untuned builds (trials = 0) use whatever the database holds, so its content is part of the key;
    a tuned build is identified by its budget (it adds records to the database as it runs).
    """
    target = tvm_target(spec)
    config: dict[str, Any] = {"runtime": "tvm", "target": target.as_dict(), "tune": spec.tune, "shapes": shapes}
    if spec.tune["trials"] == 0:
        database = database_dir(cache_root, target)
        config["database"] = sha256_tree([database]) if database.is_dir() else "empty"
    return config


def fold_static(model_path: Path, shapes: dict[str, list[int]], dest: Path) -> None:
    """Fold the graph again with every input shape fixed: TVM's Relax frontend cannot import the
    Shape/Range/Expand chains a dynamic-shape BERT export keeps (measured on MiniLM), and one tuned
    artifact serves one shape anyway."""
    import onnx
    import onnxslim

    spec = [f"{name}:{','.join(str(dim) for dim in shape)}" for name, shape in shapes.items()]
    onnx.save(onnxslim.slim(str(model_path), input_shapes=spec), str(dest))


def compile_for(
    spec: TargetSpec, model_path: Path, shapes: dict[str, list[int]], cache_root: Path, directory: Path
) -> dict[str, Any]:
    """Compile `model_path` for `spec` into `directory` (model.so + io.json); returns the backend's meta."""
    from compiler.backends import tvm as tvm_backend

    target = tvm_target(spec)
    tune = tvm_backend.TuneOptions(
        trials=spec.tune["trials"],
        max_trials_per_task=spec.tune.get("max_trials_per_task"),
        runner=spec.tune.get("runner", "local"),
        tracker=spec.tune.get("tracker"),
        key=spec.tune.get("key"),
    )
    cross, execution = None, None
    if not target.is_host():
        from compiler.backends import aarch64

        cross = aarch64.cross_compiler()
        tools = aarch64.ensure_cross_toolchain()
        execution = (
            f"cross-compiled with {tools['gxx_version']}; verified by executing it under "
            f"{tools['qemu_version']} (emulated: no timings)"
        )
    database = database_dir(cache_root, target)
    database.mkdir(parents=True, exist_ok=True)
    static = directory / "static.onnx"
    fold_static(model_path, shapes, static)
    try:
        meta: dict[str, Any] = tvm_backend.compile_model(static, shapes, target, tune, database, directory, cross)
    finally:
        static.unlink(missing_ok=True)
    io = {key: meta[key] for key in ("inputs", "outputs", "input_shapes", "target")}
    (directory / IO_RECORD).write_text(json.dumps(io, indent=1, sort_keys=True) + "\n")
    if target.mtriple.startswith("x86_64"):
        meta["isa_features"] = tvm_backend.host_isa_features()
    if execution:
        meta["execution"] = execution
    return meta
