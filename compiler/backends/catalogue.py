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


def backend_class(runtime: str) -> type[Backend]:
    if runtime not in CATALOGUE:
        raise ConfigError(f"no backend for runtime '{runtime}'; {did_you_mean(runtime, RUNTIMES)}")
    cls: type[Backend] = resolve(CATALOGUE[runtime])
    return cls


def backend_for(target: TargetSpec) -> Backend:
    """The backend of `target`'s runtime, checked against the target file."""
    backend = backend_class(target.runtime).for_target(target)(target)
    backend.check_target()
    return backend


__all__ = ["CATALOGUE", "RUNTIMES", "backend_class", "backend_for"]
