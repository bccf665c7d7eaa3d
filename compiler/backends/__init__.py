"""Compilation backends: ONNX -> the runtime artifact a target ships.

Each backend exposes `compile_model(...) -> meta` writing its artifact into a directory, plus
`FINGERPRINT_FILES` and `TOOLS` for its cache key: ONNX Runtime (`ort.py`: the graph optimised
offline) and Apache TVM (`tvm.py`: a compiled library, tuned with MetaSchedule; `tvm_build.py`
maps a target file onto it; `aarch64.py` cross-compiles and runs ARM64 code under qemu) and LiteRT
(`tflite.py`: onnx2tf in its own pinned toolchain) ONNX Runtime Mobile (`ort_mobile.py`: the ORT
format) and Core ML (`coreml.py`: from the PyTorch model; `mil_interpreter.py` runs it on Linux).
"""

from __future__ import annotations

from types import ModuleType

from compiler.errors import ConfigError, did_you_mean


def backend_for(runtime: str) -> ModuleType:
    names = ("onnxruntime", "onnxruntime-mobile", "tvm", "litert", "coreml")
    if runtime not in names:
        raise ConfigError(f"no backend for runtime '{runtime}'; {did_you_mean(runtime, names)}")
    if runtime == "tvm":  # imported only when used: TVM takes seconds to load
        from compiler.backends import tvm

        return tvm
    if runtime == "litert":
        from compiler.backends import tflite

        return tflite
    if runtime == "coreml":
        from compiler.backends import coreml

        return coreml
    if runtime == "onnxruntime-mobile":
        from compiler.backends import ort_mobile

        return ort_mobile
    from compiler.backends import ort

    return ort
