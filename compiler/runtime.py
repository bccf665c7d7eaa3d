"""ONNX Runtime sessions and side-by-side latency measurement on the build host.

Latency figures are ratios measured in one run, interleaved: the machine is shared and noisy, so
models are timed round-robin (each repeat runs every model once) and compared by median.
`predictor` runs any artifact the build makes on this host: ONNX through ONNX Runtime, a TVM
`model.so` through TVM's Relax VM (with its static shapes, see `pad_to_static`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort

from compiler.errors import ModelError
from compiler.progress import progress_bar

Feeds = dict[str, np.ndarray]
Predict = Callable[[Feeds], list[np.ndarray]]
IO_RECORD = "io.json"  # beside a compiled artifact that is not ONNX: its inputs, outputs, static shapes


def session(
    model: onnx.ModelProto | Path | bytes,
    threads: int = 1,
    level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
) -> ort.InferenceSession:
    """A CPU session with a fixed thread count (latency is reported per thread count)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = level
    options.log_severity_level = 3
    if isinstance(model, Path) and model.suffix == ".ort":  # as on the phone: replay recorded optimisations
        options.add_session_config_entry("session.enable_saved_runtime_optimizations", "1")
    source: str | bytes
    if isinstance(model, onnx.ModelProto):
        source = model.SerializeToString()
    elif isinstance(model, Path):
        source = str(model)
    else:
        source = model
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises bare RuntimeError subclasses for unloadable graphs
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelError(f"ONNX Runtime cannot load the model: {first}") from error


def predictor(model: onnx.ModelProto | Path, threads: int = 1) -> Predict:
    """A function from named inputs to outputs for `model`, run on this host.

    A TVM `.so` (compiled for this host) is run by TVM's VM at the static shapes in its
    `io.json`; anything else must be ONNX and runs on ONNX Runtime.
    """
    if isinstance(model, Path) and model.suffix == ".so":
        from compiler.backends import tvm as tvm_backend

        io = _io_record(model)
        names = [entry["name"] for entry in io["inputs"]]
        return pad_to_static(tvm_backend.load_runner(model, names), io["input_shapes"])
    sess = session(model, threads)
    names = [i.name for i in sess.get_inputs()]
    return lambda feeds: sess.run(None, {n: feeds[n] for n in names})


def is_coreml(model: onnx.ModelProto | Path) -> bool:
    """A zipped Core ML package, which only our MIL reference interpreter runs here."""
    return isinstance(model, Path) and model.name.endswith(".mlpackage.zip")


def runs_on_host(model: Path) -> bool:
    """False for what this process does not time: a library compiled for another ISA (executed
    under emulation), a .tflite (run by LiteRT in its own toolchain process) and a Core ML package
    (run by a reference interpreter)."""
    if model.suffix == ".tflite" or is_coreml(model):
        return False
    if model.suffix != ".so":
        return True
    import platform

    triple = _io_record(model)["target"]["mtriple"]
    return triple.split("-")[0] == platform.machine()


def is_emulated(model: onnx.ModelProto | Path) -> bool:
    """True for what is verified slowly on a subset of batches: an AArch64 library under
    qemu-aarch64, and a Core ML package in the MIL reference interpreter."""
    return is_coreml(model) or (isinstance(model, Path) and model.suffix == ".so" and not runs_on_host(model))


def outputs_for(model: onnx.ModelProto | Path, batches: list[Feeds]) -> list[list[np.ndarray]]:
    """Outputs for every batch: on this host, for an AArch64 library under qemu-aarch64 (all
    batches in one emulated process), or for a .tflite in LiteRT in its toolchain; static-shape
    artifacts get each batch padded to the compiled shapes and the outputs cut back."""
    if isinstance(model, Path) and model.suffix == ".tflite":
        from compiler.backends import tflite

        onnx_outputs = _io_record(model)["onnx_outputs"]
        return _run_static(model, batches, lambda padded: tflite.outputs_for(model, padded, onnx_outputs))
    if isinstance(model, Path) and is_coreml(model):
        from compiler.backends import coreml

        onnx_outputs = _io_record(model)["onnx_outputs"]
        return _run_static(model, batches, lambda padded: coreml.outputs_for(model, padded, onnx_outputs))
    if isinstance(model, Path) and not runs_on_host(model):
        from compiler.backends import aarch64

        names = [entry["name"] for entry in _io_record(model)["inputs"]]  # main's parameter order

        def under_qemu(padded: list[Feeds]) -> list[list[np.ndarray]]:
            # Positional arguments: io.json's input_shapes keys are sorted, not in main's order.
            return aarch64.run_batches_under_qemu(model, [{n: full[n] for n in names} for full in padded])

        return _run_static(model, batches, under_qemu)
    predict = predictor(model)
    return [predict(feeds) for feeds in batches]


def _io_record(model: Path) -> dict[str, Any]:
    return json.loads(model.with_name(IO_RECORD).read_text())


def _run_static(
    model: Path, batches: list[Feeds], run: Callable[[list[Feeds]], list[list[np.ndarray]]]
) -> list[list[np.ndarray]]:
    """`run` on every batch zero-padded to the artifact's compiled shapes, outputs cut back: the
    all-batches-at-once form of `pad_to_static`, for runners in another process (qemu, LiteRT)."""
    shapes = _io_record(model)["input_shapes"]
    padded = [_pad(feeds, shapes) for feeds in batches]
    results = run([full for full, _ in padded])
    return [_cut(outputs, resized) for outputs, (_, resized) in zip(results, padded, strict=True)]


def _pad(feeds: Feeds, shapes: dict[str, list[int]]) -> tuple[Feeds, dict[int, int]]:
    """Inputs zero-padded to `shapes` (in the order of `shapes`) and {padded size: real size}."""
    resized: dict[int, int] = {}
    full = {}
    for name, shape in shapes.items():
        array = feeds[name]
        if list(array.shape) == list(shape):
            full[name] = array
            continue
        if array.ndim != len(shape) or any(have > want for have, want in zip(array.shape, shape, strict=True)):
            raise ModelError(f"input '{name}' has shape {list(array.shape)}; the artifact was compiled for {shape}")
        for have, want in zip(array.shape, shape, strict=True):
            if have != want:
                resized[want] = have
        full[name] = np.pad(array, [(0, want - have) for have, want in zip(array.shape, shape, strict=True)])
    return full, resized


def _cut(outputs: list[np.ndarray], resized: dict[int, int]) -> list[np.ndarray]:
    return [out[tuple(slice(0, resized.get(size, size)) for size in out.shape)] for out in outputs]


def pad_to_static(run: Predict, shapes: dict[str, list[int]]) -> Predict:
    """Feed a static-shape model smaller batches or sequences: zero-pad every input up to its
    compiled shape, run, and cut each output axis whose compiled size was padded back to the real
    size. Right for what recipes feed: padded batch rows are independent, and padded tokens carry
    attention mask 0 (so real tokens' outputs are unchanged up to float rounding)."""

    def padded(feeds: Feeds) -> list[np.ndarray]:
        full, resized = _pad(feeds, shapes)
        return _cut(run(full), resized)

    return padded


def run_batches(sess: ort.InferenceSession, batches: list[Feeds]) -> list[list[np.ndarray]]:
    """Outputs for every batch, feeding only the inputs the session declares."""
    names = [i.name for i in sess.get_inputs()]
    return [sess.run(None, {n: feeds[n] for n in names}) for feeds in batches]


def measure_latency(
    runners: Mapping[str, Callable[[], object]], repeats: int = 50, warmup: int = 5, label: str = "benchmarking"
) -> dict[str, float]:
    """Median seconds per call of each runner, measured interleaved."""
    for run in runners.values():
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    with progress_bar() as bar:
        task = bar.add_task(label, total=repeats)
        for _ in range(repeats):
            for name, run in runners.items():
                start = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - start)
            bar.advance(task)
    return {name: float(np.median(values)) for name, values in times.items()}


def ort_runner(sess: ort.InferenceSession, feeds: Feeds) -> Callable[[], object]:
    names = [i.name for i in sess.get_inputs()]
    bound = {n: feeds[n] for n in names}
    return lambda: sess.run(None, bound)
