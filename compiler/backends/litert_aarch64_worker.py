"""Runs inside the emulated arm64 userland (compiler/toolchains/arm64.py): LiteRT on the board's CPU.

Imports only what the userland's arm64-litert.lock has (numpy, ai_edge_litert, the standard
library): it never imports edgebuild. Usage: `python3.11 litert_aarch64_worker.py REQUEST.json`;
the request's "command" is

- "outputs": run `model` on every inputs/<i>.npz (arrays named by the ONNX model's inputs, NCHW
  images as the recipe feeds them) and write out/<i>.npz (arrays "0", "1", ... in the order of
  `output_names`, the ONNX model's outputs);
- "count": run `model` once on `feeds` (warm-up), mark 1, run it `calls` more times, mark 2, for the
  instruction counter (a mark is lseek(-1, MARK_MAGIC, n): EBADF, no effect without the plugin).

Inputs and outputs are bound by name as compiler/toolchains/tflite_worker.py's "run" binds them on
the host (onnx2tf makes image inputs NHWC; quantized variants name their outputs output_0..N-1).
The interpreter is LiteRT's default one, as a board's application gets it: the builtin op resolver
with the default XNNPACK delegate applied, one thread. The result names the wheel's version and the
interpreter's nodes by op (a "DELEGATE" node is the XNNPACK partition). A failure prints one line
on stderr and exits 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import sys
from collections import Counter
from pathlib import Path

MARK_MAGIC = 0x6564676562756964


def mark(label: int) -> None:
    with contextlib.suppress(OSError):  # EBADF is the point: the plugin saw the syscall
        os.lseek(-1, MARK_MAGIC, label)


def interpreter(model: str):  # noqa: ANN201 - ai_edge_litert is the guest's, not typed here
    """LiteRT's interpreter as an application creates it: default op resolver (XNNPACK), 1 thread."""
    from ai_edge_litert.interpreter import Interpreter

    created = Interpreter(model_path=model, num_threads=1)
    created.allocate_tensors()
    return created


def to_nhwc(array, shape_signature: list[int]):  # noqa: ANN001, ANN201 - numpy arrays
    """An NCHW image batch as the NHWC tensor onnx2tf made of it (other inputs pass unchanged)."""
    import numpy as np

    if array.ndim == 4 and list(shape_signature[1:]) == [array.shape[2], array.shape[3], array.shape[1]]:
        return np.ascontiguousarray(array.transpose(0, 2, 3, 1))
    return array


def bind(details: dict, feeds: dict) -> dict:
    """The signature runner's keyword arguments for the recipe's named inputs."""
    bound = {}
    for name, detail in details.items():
        if name not in feeds:
            raise KeyError(f"the .tflite takes an input '{name}' the batch does not have (it has {sorted(feeds)})")
        bound[name] = to_nhwc(feeds[name], list(detail["shape_signature"])).astype(detail["dtype"])
    return bound


def ordered(produced: dict, output_names: list[str]) -> list:
    """The runner's outputs in the ONNX model's output order."""
    arrays = []
    for position, name in enumerate(output_names):
        # The quantized variants come from a concrete function whose outputs are output_0..N-1 in
        # the ONNX graph's output order; the float ones keep the ONNX names.
        key = name if name in produced else f"output_{position}"
        if key not in produced:
            raise KeyError(f"the .tflite has no output '{name}' (it has {sorted(produced)})")
        arrays.append(produced[key])
    return arrays


def load_feeds(path: Path) -> dict:
    import numpy as np

    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


def main(request_path: str) -> int:
    import ai_edge_litert
    import numpy as np

    request = json.loads(Path(request_path).read_text())
    created = interpreter(request["model"])
    runner = created.get_signature_runner()
    details = runner.get_input_details()
    nodes = Counter(op["op_name"] for op in created._get_ops_details())  # noqa: SLF001 - no public node list
    result: dict = {
        "ai-edge-litert": getattr(ai_edge_litert, "__version__", "unknown"),
        "numpy": np.__version__,
        "machine": platform.machine(),
        "nodes": dict(sorted(nodes.items())),
    }
    if request["command"] == "outputs":
        inputs, out = Path(request["inputs"]), Path(request["out"])
        for index in range(request["batches"]):
            produced = runner(**bind(details, load_feeds(inputs / f"{index}.npz")))
            arrays = ordered(produced, request["output_names"])
            np.savez(out / f"{index}.npz", **{str(i): array for i, array in enumerate(arrays)})
            Path(request["progress"]).write_text(str(index + 1))  # the build's progress line reads it
    elif request["command"] == "count":
        bound = bind(details, load_feeds(Path(request["feeds"])))
        runner(**bound)
        mark(1)
        for _ in range(request["calls"]):
            runner(**bound)
        mark(2)
    else:
        raise ValueError(f"unknown command {request['command']!r}")
    Path(request["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1]))
    except Exception as error:  # one line for the build's error message
        print(f"{type(error).__name__}: {error}".splitlines()[0], file=sys.stderr)
        sys.exit(1)
