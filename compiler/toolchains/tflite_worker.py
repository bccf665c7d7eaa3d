"""Worker run inside the pinned 'tflite' toolchain (compiler/toolchains/tflite.lock): onnx2tf
conversion and LiteRT execution. It imports only that toolchain's packages, never edgebuild.

Usage: python tflite_worker.py REQUEST.json, where the request is one of
  {"command": "convert", "onnx": path, "workdir": dir, "precision": "fp32"|"fp16"|"int8",
   "int8": "full-integer"|"dynamic-range", "calibration": {input name: .npy path (NCHW as the ONNX
   model takes it)}, "output": path, "result": path}
  {"command": "run", "model": path, "batches": .npz path ("<batch>/<input>" keys), "count": n,
   "output_names": [...], "outputs": .npz path, "result": path}
  {"command": "inspect", "model": path, "result": path} -> ops, tensor dtypes, signature; fails
   on Flex/custom ops and on int16 activations (what convert runs on its output)
  {"command": "time", "onnx": path, "models": {key: .tflite path}, "feeds": .npz path, "repeats": n,
   "result": path}  -> median seconds per call of ONNX Runtime on the ONNX ("ort") and of each model,
   interleaved in this one process, 1 thread each
and the JSON result is written to request["result"]. A failure exits non-zero with one line on stderr.

Traps handled (DESIGN.md, Android / iOS): onnx2tf rewrites its input in place (it gets a scratch
copy), downloads a calibration sample from the internet unless
calibration_image_sample_data_20x128x128x3_float32.npy is in its working directory (we write our
own), and emits Flex ops for Erf unless told `-rtpo Erf`; a .tflite is inspected with LiteRT's
interpreter, which refuses Flex ops instead of hiding them as tf.lite does. int16-activation
variants are never picked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

CALIBRATION_NAME = "calibration_image_sample_data_20x128x128x3_float32.npy"
SUFFIX = {"fp32": "_float32.tflite", "fp16": "_float16.tflite", "int8": "_integer_quant.tflite"}


def _interpreter(path: str, delegates: bool = True):  # noqa: ANN202 - the toolchain's own type
    """LiteRT's interpreter; with `delegates` False, the model's own ops (XNNPACK, applied by
    default as a phone would, replaces them with DELEGATE nodes)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = OpResolverType.AUTO if delegates else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    interpreter = Interpreter(model_path=path, num_threads=1, experimental_op_resolver_type=resolver)
    interpreter.allocate_tensors()
    return interpreter


def _to_nhwc(array: np.ndarray, shape_signature: list[int]) -> np.ndarray:
    """An NCHW image batch as the NHWC tensor onnx2tf made of it (other inputs pass unchanged)."""
    if array.ndim == 4 and list(shape_signature[1:]) == [array.shape[2], array.shape[3], array.shape[1]]:
        return np.ascontiguousarray(array.transpose(0, 2, 3, 1))
    return array


def _tensor_specs(details: dict) -> list[dict]:
    """Signature tensors as the manifest records them: name, dtype, shape (-1 = dynamic), and
    LiteRT's [scale, zero_point] quantization."""
    return [
        {
            "name": name,
            "dtype": np.dtype(d["dtype"]).name,
            "shape": [int(x) for x in d["shape_signature"]],
            "quantization": [float(d["quantization"][0]), int(d["quantization"][1])],
        }
        for name, d in details.items()
    ]


def convert(request: dict) -> dict:
    workdir = Path(request["workdir"])
    workdir.mkdir(parents=True, exist_ok=True)
    source = workdir / "model.onnx"
    shutil.copyfile(request["onnx"], source)  # onnx2tf overwrites its input
    command = [sys.executable, "-m", "onnx2tf", "-i", str(source), "-o", str(workdir / "out"), "-rtpo", "Erf", "-n"]
    calibration = request.get("calibration") or {}
    for name, path in calibration.items():
        data = np.load(path)
        nhwc = data.transpose(0, 2, 3, 1) if data.ndim == 4 else data
        np.save(workdir / f"calibration_{name}.npy", nhwc.astype(np.float32))
        # -cind NAME FILE MEAN STD: our recipe's own calibration data, already normalised.
        command += ["-cind", name, str(workdir / f"calibration_{name}.npy"), "0.0", "1.0"]
    first = next(iter(calibration.values()), None)
    sample = np.load(first).astype(np.float32) if first else np.zeros((1, 1), np.float32)
    np.save(workdir / CALIBRATION_NAME, sample)  # present, so onnx2tf never goes to the internet
    dynamic = request["precision"] == "int8" and request.get("int8") == "dynamic-range"
    if request["precision"] == "int8" and not dynamic:
        if not calibration:
            raise SystemExit("INT8 conversion needs calibration data (the recipe's [data] calibration)")
        command.append("-oiqt")
    done = subprocess.run(command, cwd=workdir, capture_output=True, text=True, check=False)
    suffix = SUFFIX["fp32" if dynamic else request["precision"]]
    produced = sorted((workdir / "out").glob(f"*{suffix}"))
    produced = [p for p in produced if "full_integer" not in p.name and "int16" not in p.name]
    if done.returncode != 0 or not produced:
        errors = [line for line in (done.stdout + done.stderr).splitlines() if "ERROR" in line or "Error" in line]
        raise SystemExit(f"onnx2tf failed (exit {done.returncode}): {' | '.join(errors[-3:]) or 'no output'}")
    if dynamic:
        # INT8 weights, float activations: TensorFlow's own converter on the saved_model onnx2tf wrote.
        import tensorflow as tf

        converter = tf.lite.TFLiteConverter.from_saved_model(str(workdir / "out"))
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        Path(request["output"]).write_bytes(converter.convert())
    else:
        shutil.copyfile(produced[0], request["output"])

    result = inspect(request["output"])
    result["onnx2tf_log_tail"] = done.stdout.strip().splitlines()[-1:] if done.stdout.strip() else []
    return result


def _ops(path: str) -> list[str]:
    """The op names in the file's own op table (read without the interpreter, which would refuse
    a Flex op before it could be named)."""
    from tensorflow.lite.python import schema_py_generated as schema

    model = schema.ModelT.InitFromPackedBuf(Path(path).read_bytes(), 0)
    builtin_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    names = set()
    for code in model.operatorCodes or []:
        builtin = max(code.builtinCode, code.deprecatedBuiltinCode)
        custom = code.customCode.decode() if code.customCode else None
        names.add(
            custom if builtin_names.get(builtin) == "CUSTOM" and custom else builtin_names.get(builtin, str(builtin))
        )
    return sorted(names)


def inspect(path: str) -> dict:
    """Ops, tensor dtypes and signature of a .tflite; refuses Flex/custom ops and int16 activations."""
    ops = _ops(path)
    foreign = [op for op in ops if op.startswith("Flex") or op.upper() == "CUSTOM" or op.startswith("Custom")]
    if foreign:
        raise SystemExit(
            f"the .tflite holds Flex or custom ops that LiteRT's builtin set cannot run: {', '.join(foreign)}"
        )
    interpreter = _interpreter(path, delegates=False)
    tensors = interpreter.get_tensor_details()
    if any(np.dtype(t["dtype"]) == np.int16 for t in tensors):
        raise SystemExit("the .tflite is an int16-activation variant (16x8 quantization); edgebuild never ships those")
    signature = interpreter.get_signature_runner()
    dtypes: dict[str, int] = {}
    for tensor in tensors:
        key = np.dtype(tensor["dtype"]).name
        dtypes[key] = dtypes.get(key, 0) + 1
    return {
        "ops": ops,
        "tensor_dtypes": dict(sorted(dtypes.items())),
        "inputs": _tensor_specs(signature.get_input_details()),
        "outputs": _tensor_specs(signature.get_output_details()),
    }


def run(request: dict) -> dict:
    interpreter = _interpreter(request["model"])
    signature = interpreter.get_signature_runner()
    details = signature.get_input_details()
    batches = np.load(request["batches"])
    results = {}
    for index in range(request["count"]):
        feeds = {}
        for name, detail in details.items():
            array = batches[f"{index}/{name}"]
            feeds[name] = _to_nhwc(array, list(detail["shape_signature"])).astype(detail["dtype"])
        produced = signature(**feeds)
        for position, name in enumerate(request["output_names"]):
            # The quantized variants come from a concrete function whose outputs are output_0..N-1
            # in the ONNX graph's output order; the float ones keep the ONNX names.
            key = name if name in produced else f"output_{position}"
            if key not in produced:
                raise SystemExit(f"the .tflite has no output '{name}' (it has {sorted(produced)})")
            results[f"{index}/{position}"] = produced[key]
    np.savez(request["outputs"], **results)
    return {"batches": request["count"]}


def time_models(request: dict) -> dict:
    import time

    import onnxruntime as ort

    feeds = dict(np.load(request["feeds"]))
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(request["onnx"], options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    calls = {"ort": lambda: session.run(None, {n: feeds[n] for n in names})}
    for key, path in request["models"].items():
        runner = _interpreter(path).get_signature_runner()
        details = runner.get_input_details()
        bound = {n: _to_nhwc(feeds[n], list(d["shape_signature"])).astype(d["dtype"]) for n, d in details.items()}
        calls[key] = lambda runner=runner, bound=bound: runner(**bound)
    for call in calls.values():  # warm-up
        for _ in range(3):
            call()
    seconds: dict[str, list[float]] = {key: [] for key in calls}
    for _ in range(request["repeats"]):
        for key, call in calls.items():
            started = time.perf_counter()
            call()
            seconds[key].append(time.perf_counter() - started)
    return {key: float(np.median(values)) for key, values in seconds.items()}


def main() -> None:
    request = json.loads(Path(sys.argv[1]).read_text())
    commands = {"convert": convert, "run": run, "time": time_models, "inspect": lambda r: inspect(r["model"])}
    handler = commands[request["command"]]
    result = handler(request)
    Path(request["result"]).write_text(json.dumps(result))


if __name__ == "__main__":
    main()
