"""ONNX Runtime sessions with a fixed thread count (latency is per thread count).

Used on the build host and by the device client's health check, so it imports only onnxruntime and
numpy (a board's client has no `onnx` package): a ModelProto is accepted by its SerializeToString.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from compiler.errors import ModelError

if TYPE_CHECKING:
    import onnx

Feeds = dict[str, np.ndarray]


def session(
    model: onnx.ModelProto | Path | bytes,
    threads: int = 1,
    level: ort.GraphOptimizationLevel = ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    saved_optimizations: bool = False,
) -> ort.InferenceSession:
    """A CPU session; `saved_optimizations` replays the ones an ORT-format model recorded, as on the phone."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = level
    options.log_severity_level = 3
    if saved_optimizations:
        options.add_session_config_entry("session.enable_saved_runtime_optimizations", "1")
    source: str | bytes
    if isinstance(model, Path):
        source = str(model)
    elif isinstance(model, bytes):
        source = model
    else:  # an onnx.ModelProto
        source = model.SerializeToString()
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises bare RuntimeError subclasses for unloadable graphs
        raise ModelError(f"ONNX Runtime cannot load the model: {first_line(error)}") from error


def predictor(
    model: onnx.ModelProto | Path, threads: int = 1, saved_optimizations: bool = False
) -> Callable[[Feeds], list[np.ndarray]]:
    """A function from named inputs to outputs on a session, feeding only the inputs it declares."""
    sess = session(model, threads, saved_optimizations=saved_optimizations)
    names = [i.name for i in sess.get_inputs()]
    return lambda feeds: sess.run(None, {n: feeds[n] for n in names})


def run_batches(sess: ort.InferenceSession, batches: list[Feeds]) -> list[list[np.ndarray]]:
    """Outputs for every batch, feeding only the inputs the session declares. A batch the model
    cannot run (an index out of its table's range, a shape it does not take) is a ModelError that
    names the inputs' shapes and value ranges."""
    names = [i.name for i in sess.get_inputs()]
    outputs = []
    for index, feeds in enumerate(batches):
        inputs = {n: feeds[n] for n in names}
        try:
            outputs.append(sess.run(None, inputs))
        except Exception as error:  # ORT raises bare RuntimeError subclasses (Fail, InvalidArgument, ...)
            raise ModelError(
                f"ONNX Runtime cannot run the model on batch {index} ({describe_feeds(inputs)}): "
                f"{first_line(error)}; give data the model accepts (a recipe [data] table or --data FILE.npz)"
            ) from error
    return outputs


def first_line(error: BaseException) -> str:
    """The message of an ORT error without its C++ source location and function signature
    ("/onnxruntime_src/...:256 onnxruntime::Model::Model(...) Unsupported model IR version: 14")."""
    text = re.sub(r"/onnxruntime_src/\S+:\d+ [\w:~<>]+\([^)]*\)\s*", "", str(error)).strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def describe_feeds(feeds: Feeds) -> str:
    """'ids int64[1, 8] in [0, 99], x float32[1, 3]' for messages."""
    parts = []
    for name, array in feeds.items():
        shape = f"{array.dtype}{list(array.shape)}"
        if array.size and (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
            shape += f" in [{array.min()}, {array.max()}]"
        parts.append(f"'{name}' {shape}")
    return ", ".join(parts)


__all__ = ["Feeds", "describe_feeds", "first_line", "predictor", "run_batches", "session"]
