"""Health check of an installed bundle: does its model load and give finite outputs?

Needs: a slot directory holding the bundle's files and its manifest (the `files`, `inputs`,
`outputs` and `metrics.latency.input_shapes` fields).
Guarantees: returns only when ONNX Runtime loaded the artifact, ran it once on a deterministic
sample input shaped from the manifest, and produced every output the manifest names, all finite.
Anything else raises HealthCheckError naming the model, version, slot and the first fault. A
signature proves who built a bundle, not that it runs here: this is the check that a signed but
broken model (NaN weights, an operator this runtime lacks) never becomes the active one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from compiler.errors import UserError

SEED = 0
_DTYPES = {
    "float32": np.float32,
    "float16": np.float16,
    "float64": np.float64,
    "int64": np.int64,
    "int32": np.int32,
    "int8": np.int8,
    "uint8": np.uint8,
    "bool": np.bool_,
}
_MASK_WORDS = ("mask",)


class HealthCheckError(UserError):
    """An installed model does not load, does not run, or gives missing or non-finite outputs."""


def _shape(entry: dict[str, Any], concrete: dict[str, list[int]]) -> list[int]:
    if entry["name"] in concrete:
        return [int(dim) for dim in concrete[entry["name"]]]
    # A dynamic dimension of 1 is valid for any batch or sequence axis.
    return [dim if isinstance(dim, int) and dim > 0 else 1 for dim in entry["shape"]]


def sample_inputs(manifest: dict[str, Any]) -> dict[str, np.ndarray]:
    """One deterministic input per manifest input: seeded normal floats; ones for masks, else zeros."""
    rng = np.random.default_rng(SEED)
    concrete = manifest.get("metrics", {}).get("latency", {}).get("input_shapes") or {}
    feeds = {}
    for entry in manifest["inputs"]:
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            raise HealthCheckError(f"input '{entry['name']}' has dtype {entry['dtype']!r}, unknown to the health check")
        shape = _shape(entry, concrete)
        if np.issubdtype(dtype, np.floating):
            feeds[entry["name"]] = rng.standard_normal(shape).astype(dtype)
        elif any(word in entry["name"].lower() for word in _MASK_WORDS) or dtype is np.bool_:
            feeds[entry["name"]] = np.ones(shape, dtype=dtype)
        else:
            # Id 0 exists in every vocabulary and embedding table, so zeros are always in range.
            feeds[entry["name"]] = np.zeros(shape, dtype=dtype)
    return feeds


def check(slot_dir: Path, manifest: dict[str, Any]) -> None:
    """Load the artifact in `slot_dir` with ONNX Runtime (1 thread), run one sample, check outputs."""
    from compiler.errors import ModelError
    from compiler.ort_session import session

    where = f"{manifest['model']['name']} {manifest['model']['version']} in slot {Path(slot_dir).name}"
    artifacts = [f["name"] for f in manifest["files"] if f["role"] == "artifact" and f["name"].endswith(".onnx")]
    if manifest.get("target", {}).get("runtime", "onnxruntime") != "onnxruntime" or not artifacts:
        raise HealthCheckError(f"health check failed for {where}: no ONNX Runtime artifact (.onnx) in the bundle")
    try:
        sess = session(Path(slot_dir) / artifacts[0], threads=1)
    except ModelError as error:
        raise HealthCheckError(f"health check failed for {where}: {error}") from error
    try:
        feeds = sample_inputs(manifest)
        names = [output.name for output in sess.get_outputs()]
        values = sess.run(None, {i.name: feeds[i.name] for i in sess.get_inputs() if i.name in feeds})
    except HealthCheckError as error:
        raise HealthCheckError(f"health check failed for {where}: {error}") from error
    except Exception as error:  # ORT raises bare RuntimeError subclasses for failed runs
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise HealthCheckError(f"health check failed for {where}: ONNX Runtime cannot run it: {first}") from error
    outputs = dict(zip(names, values, strict=True))
    for entry in manifest["outputs"]:
        value = outputs.get(entry["name"])
        if value is None:
            raise HealthCheckError(f"health check failed for {where}: output '{entry['name']}' is missing")
        array = np.asarray(value)
        if np.issubdtype(array.dtype, np.floating):
            if np.isnan(array).any():
                raise HealthCheckError(f"health check failed for {where}: output '{entry['name']}' has NaN")
            if np.isinf(array).any():
                raise HealthCheckError(f"health check failed for {where}: output '{entry['name']}' has Inf")
