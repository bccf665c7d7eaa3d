"""The one explicit catalogue of backends: runtime name (as a target file writes it) -> class.

Entries are "module:Class" strings, imported when a target uses them: loading TVM or coremltools
costs seconds, and a stage's cache key should hold the backend that runs, not every backend.
Adding a runtime is one module with a `Backend` subclass and one line here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from compiler.dotted import resolve
from compiler.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from compiler.backends.base import Backend
    from compiler.engine.specs import TargetSpec

CATALOGUE: dict[str, str] = {
    "onnxruntime": "compiler.backends.ort:OrtBackend",
    "onnxruntime-mobile": "compiler.backends.ort_mobile:OrtMobileBackend",
    "tvm": "compiler.backends.tvm:TvmBackend",
    "litert": "compiler.backends.tflite:LiteRtBackend",
    "coreml": "compiler.backends.coreml:CoreMlBackend",
}
RUNTIMES = tuple(CATALOGUE)
# (runtime, board OS, board ISA) -> the backend that builds for that runtime on a board of another
# ISA than this host's, verifying under emulation (TVM cross-compiles in its own backend). The OS
# tells a Linux board from a phone of the same ISA: android-* targets (litert, android, aarch64)
# keep their runtime's backend.
FOREIGN_BOARDS: dict[tuple[str, str, str], str] = {
    ("onnxruntime", "linux", "aarch64"): "compiler.backends.ort_aarch64:OrtAarch64Backend",
    ("litert", "linux", "aarch64"): "compiler.backends.litert_aarch64:LiteRtAarch64Backend",
}


def backend_class(runtime: str) -> type[Backend]:
    if runtime not in CATALOGUE:
        raise ConfigError(f"no backend for runtime '{runtime}'; {did_you_mean(runtime, RUNTIMES)}")
    cls: type[Backend] = resolve(CATALOGUE[runtime])
    return cls


def target_backend_class(target: TargetSpec) -> type[Backend]:
    """The class that builds for `target`: its runtime's, or that runtime's for a board of another ISA
    (by the target's platform.os and platform.arch)."""
    from compiler.backends.host import host_arch

    arch = target.platform.get("arch", host_arch())
    board = (target.runtime, target.platform.get("os", ""), arch)
    entry = FOREIGN_BOARDS.get(board) if arch != host_arch() else None
    if entry is None:
        return backend_class(target.runtime)
    cls: type[Backend] = resolve(entry)
    return cls


def backend_for(target: TargetSpec) -> Backend:
    """The backend of `target`'s runtime, checked against the target file."""
    backend = target_backend_class(target)(target)
    backend.check_target()
    return backend


__all__ = ["CATALOGUE", "FOREIGN_BOARDS", "RUNTIMES", "backend_class", "backend_for", "target_backend_class"]
