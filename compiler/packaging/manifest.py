"""The bundle manifest (`manifest.json`, schema `edgebuild.manifest/1`) derived from report.json.

Everything here is a pure function of the build record and the artifact bytes, so packaging the
same build directory twice yields the same manifest. Memory is therefore a documented estimate
(artifact bytes + every inferred tensor at the bench shapes) rather than a measured RSS, which
would differ between runs.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema

from compiler.errors import UserError

SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")
SCHEMA_ID = "edgebuild.manifest/1"
MEMORY_METHOD = (
    "estimate: artifact bytes + every statically inferred tensor at input_shapes "
    "(no buffer reuse, an upper bound on activations)"
)
_DTYPE = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
    "tensor(bool)": "bool",
}


class ManifestError(UserError):
    """A manifest does not follow edgebuild.manifest/1 (names the field)."""


@cache
def schema() -> dict[str, Any]:
    """The JSON Schema kept in the repo beside this module."""
    loaded: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return loaded


def validate(manifest: dict[str, Any]) -> None:
    """Raise ManifestError naming the first field that breaks the schema."""
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema()).iter_errors(manifest))
    if error is not None:
        where = "/".join(str(part) for part in error.absolute_path) or "(top level)"
        raise ManifestError(f"manifest.json: {where}: {error.message}")


def release_counter(version: str) -> int:
    """major*1e6 + minor*1e3 + patch: monotonic in the recipe's semantic version, reproducible."""
    match = re.fullmatch(r"(\d+)\.(\d+)\.(\d+)(?:[-+].*)?", version)
    if not match or any(int(part) >= 1000 for part in match.groups()):
        raise ManifestError(f"model version '{version}': need MAJOR.MINOR.PATCH with each part < 1000")
    major, minor, patch = (int(part) for part in match.groups())
    return major * 1_000_000 + minor * 1_000 + patch


def _layout(dtype: str, shape: list[Any]) -> str | None:
    # A 4-D float input is an image in ONNX's NCHW (Conv's layout by definition); 2-D integer
    # inputs are token ids (batch, sequence). Anything else: unknown. A converter that changed the
    # layout (onnx2tf: NHWC images) records it in the build record itself.
    if len(shape) == 4 and dtype.startswith("float"):
        return "NCHW"
    if dtype in ("int64", "int32") and len(shape) == 2:
        return "NS"
    return None


def _tensors(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    tensors = []
    for entry in entries:
        dtype = _DTYPE.get(entry["dtype"], entry["dtype"])
        tensor = {
            "name": entry["name"],
            "dtype": dtype,
            "shape": list(entry["shape"]),
            # A converter that changed the layout (onnx2tf: NHWC images) says so itself.
            "layout": entry["layout"] if "layout" in entry else _layout(dtype, entry["shape"]),
        }
        if "quantization" in entry:
            tensor["quantization"] = list(entry["quantization"])
        tensors.append(tensor)
    return tensors


def estimate_memory(model_path: Path, input_shapes: dict[str, list[int]]) -> dict[str, Any]:
    """Weights (artifact bytes) + the bytes of every tensor ONNX shape inference can size."""
    import numpy as np
    import onnx
    from onnx import helper, shape_inference

    from compiler import onnx_io

    model = onnx.load(str(model_path), load_external_data=False)  # shapes only: weights over 2 GB stay on disk
    for value in model.graph.input:
        shape = input_shapes.get(value.name)
        if shape is None:
            continue
        for dim, size in zip(value.type.tensor_type.shape.dim, shape, strict=False):
            dim.ClearField("dim_param")
            dim.dim_value = int(size)
    inferred = shape_inference.infer_shapes(model)
    activations = 0
    values = [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]
    for value in values:
        tensor_type = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        if not tensor_type.HasField("shape") or None in dims:
            continue
        itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(tensor_type.elem_type)).itemsize
        activations += int(np.prod(dims, dtype=np.int64)) * itemsize
    weights = onnx_io.size_on_disk(model_path)
    return {
        "method": MEMORY_METHOD,
        "weights_bytes": weights,
        "activations_bytes": activations,
        "total_bytes": weights + activations,
        "input_shapes": input_shapes,
    }


def _runtime_version(record: dict[str, Any]) -> str | None:
    stats = record["stages"][-1].get("stats", {}) if record.get("stages") else {}
    version = stats.get("runtime_version")
    return str(version) if version else None


def build_manifest(record: dict[str, Any], build_dir: Path, files: list[dict[str, Any]]) -> dict[str, Any]:
    """The manifest for `record` (report.json) whose payload files are `files` (name/sha256/bytes/role)."""
    model, target, provenance = record["model"], record["target"], record["provenance"]
    platform = target["platform"]
    metrics = record["metrics"]
    manifest = {
        "schema": SCHEMA_ID,
        "model": {"name": model["name"], "version": model["version"], "family": model["family"]},
        "release_counter": release_counter(model["version"]),
        "target": {
            "name": target["name"],
            "os": platform["os"],
            "arch": platform["arch"],
            "triple": platform.get("triple"),
            "cpu": platform.get("cpu"),
            "isa_features": list(platform.get("features", [])),
            "runtime": target["runtime"],
            "runtime_min_version": target["runtime_min_version"],
            "precision": target["precision"],
            "graph_optimization": target.get("graph_optimization"),
            # The exact device runtime the artifact was verified with, where the backend pins one.
            **({"runtime_version": version} if (version := _runtime_version(record)) else {}),
        },
        "inputs": _tensors(record["inputs"]),
        "outputs": _tensors(record["outputs"]),
        "files": sorted(files, key=lambda f: f["name"]),
        "metrics": {
            "size_bytes": metrics["size_bytes"],
            "size_ratio": metrics["size_ratio"],
            "fp32_size_bytes": metrics.get("fp32_size_bytes"),
            "latency": metrics["latency"],
            "fidelity": {
                k: metrics["fidelity"][k]
                for k in ("metric", "value", "within_budget", "summary", "detail")
                if k in metrics["fidelity"]
            },
            # The precision the shipped files achieved (compiler/engine/precision.py); records
            # built before it was measured have none.
            **({"precision": metrics["precision"]} if "precision" in metrics else {}),
        },
        # A compiled library is not a graph: its build recorded the estimate from its last ONNX.
        "memory": metrics.get("memory")
        or estimate_memory(build_dir / record["artifact"], metrics["latency"].get("input_shapes", {})),
        "provenance": {
            "source_digest": model["source"]["digest"],
            "source": {"kind": model["source"]["kind"], "spec": model["source"]["spec"]},
            "git_commit": provenance["git_commit"],
            "passes": provenance["passes"],
            "tool_versions": provenance["tool_versions"],
            "exporter": provenance.get("exporter"),
            "opset": provenance.get("opset"),
            "build_command": provenance["build_command"],
            "build_key": record["build_key"],
        },
    }
    if model["family"] in record:  # the family's own section (a speech model's graphs, tokenizer, loop)
        manifest[model["family"]] = record[model["family"]]
    stats = record["stages"][-1].get("stats", {})
    if "converter" in stats:
        keys = ("converter", "toolchain", "ops", "tensor_dtypes")
        manifest["conversion"] = {key: stats[key] for key in keys if key in stats}
    validate(manifest)
    return manifest


def dumps(manifest: dict[str, Any]) -> bytes:
    """Canonical bytes: sorted keys, fixed indentation, trailing newline."""
    return (json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


def loads(data: bytes) -> dict[str, Any]:
    """Parse and validate manifest bytes read from a bundle."""
    try:
        manifest = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ManifestError(f"manifest.json is not JSON: {error}") from error
    if not isinstance(manifest, dict):
        raise ManifestError("manifest.json: (top level): not an object")
    validate(manifest)
    return manifest
