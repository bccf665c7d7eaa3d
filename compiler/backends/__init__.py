"""Compilation backends: a graph -> the runtime artifact a target ships, and how that artifact runs.

base.py is the interface (`Backend`), catalogue.py the one list of runtimes. ONNX Runtime
(`ort.py`: the graph optimised offline), ONNX Runtime Mobile (`ort_mobile.py`: the ORT format),
Apache TVM (`tvm.py`: a compiled library; `tvm_relax.py` imports, fuses and compiles,
`tvm_tuning.py` tunes with MetaSchedule, `aarch64.py` cross-compiles and runs ARM64 code under
qemu), LiteRT (`tflite.py`: onnx2tf in its own pinned toolchain) and Core ML (`coreml.py`: from
the PyTorch model; `mil_interpreter.py` runs it on Linux). static_shapes.py serves the backends
whose artifacts have fixed input shapes.
"""
