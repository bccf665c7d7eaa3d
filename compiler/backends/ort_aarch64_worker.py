"""Runs inside the emulated arm64 userland (compiler/toolchains/arm64.py): ONNX Runtime on the board's CPU.

Imports only what the userland has (numpy, onnxruntime, the standard library): it never imports
edgebuild. Usage: `python3.11 ort_aarch64_worker.py REQUEST.json`; the request's "command" is

- "outputs": run `model` on every inputs/<i>.npz (arrays named by input) and write
  out/<i>.npz (arrays "0", "1", ... in output order), writing the count done so far to `progress`;
- "serve": answer requests on stdin until EOF or a zero length: each is an 8-byte little-endian
  length and an .npz of named inputs; each answer the same framing around an .npz of the outputs
  ("0", "1", ...): a session the build calls step by step (a generation loop);
- "count": run `model` once on `feeds` (warm-up), mark 1, run it `calls` more times, mark 2, for the
  instruction counter (a mark is lseek(-1, MARK_MAGIC, n): EBADF, no effect without the plugin).

One intra-op thread, sequential execution: the counts and outputs of one core, as verified.
A failure prints one line on stderr and exits 1.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import sys
from pathlib import Path

MARK_MAGIC = 0x6564676562756964


def mark(label: int) -> None:
    with contextlib.suppress(OSError):  # EBADF is the point: the plugin saw the syscall
        os.lseek(-1, MARK_MAGIC, label)


def session(model: str):  # noqa: ANN201 - onnxruntime is the guest's, not typed here
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def load_feeds(path: Path) -> dict:
    import numpy as np

    with np.load(path) as archive:
        return {name: archive[name] for name in archive.files}


def serve(sess, requests, answers) -> None:  # noqa: ANN001 - the guest's onnxruntime session, binary streams
    import numpy as np

    while True:
        header = requests.read(8)
        size = int.from_bytes(header, "little") if len(header) == 8 else 0
        if size == 0:
            return
        with np.load(io.BytesIO(requests.read(size))) as archive:
            feeds = {name: archive[name] for name in archive.files}
        buffer = io.BytesIO()
        np.savez(buffer, **{str(i): array for i, array in enumerate(sess.run(None, feeds))})
        answers.write(len(buffer.getvalue()).to_bytes(8, "little") + buffer.getvalue())
        answers.flush()


def main(request_path: str) -> int:
    import numpy as np
    import onnxruntime as ort

    request = json.loads(Path(request_path).read_text())
    sess = session(request["model"])
    result: dict = {"onnxruntime": ort.__version__, "numpy": np.__version__, "machine": platform.machine()}
    if request["command"] == "outputs":
        inputs, out = Path(request["inputs"]), Path(request["out"])
        for index in range(request["batches"]):
            outputs = sess.run(None, load_feeds(inputs / f"{index}.npz"))
            np.savez(out / f"{index}.npz", **{str(i): array for i, array in enumerate(outputs)})
            Path(request["progress"]).write_text(str(index + 1))  # the build's progress line reads it
    elif request["command"] == "serve":
        serve(sess, sys.stdin.buffer, sys.stdout.buffer)
    elif request["command"] == "count":
        feeds = load_feeds(Path(request["feeds"]))
        sess.run(None, feeds)
        mark(1)
        for _ in range(request["calls"]):
            sess.run(None, feeds)
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
