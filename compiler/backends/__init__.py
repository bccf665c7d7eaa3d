"""Compilation backends: ONNX -> the runtime artifact a target ships.

Each backend exposes `compile_model(model_path, target, directory) -> meta` writing its artifact
into `directory`, plus `FINGERPRINT_FILES` and `TOOLS` for its cache key. Only ONNX Runtime exists
so far; TVM, TFLite and Core ML arrive with their own issues.
"""

from __future__ import annotations

from types import ModuleType

from compiler.errors import ConfigError, did_you_mean


def backend_for(runtime: str) -> ModuleType:
    from compiler.backends import ort

    backends = {"onnxruntime": ort}
    if runtime not in backends:
        raise ConfigError(f"no backend for runtime '{runtime}'; {did_you_mean(runtime, backends)}")
    return backends[runtime]
