"""An existing ONNX file: load (external data too), check, normalize, read its signature; reference =
ORT FP32 outputs of the normalized model."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from compiler import onnx_io
from compiler.engine.specs import DTYPES, ModelRecipe, TensorSpec
from compiler.errors import ModelError
from compiler.importers.onnx_normalize import default_opset, normalize
from compiler.ort_session import run_batches, session
from compiler.progress import step

if TYPE_CHECKING:
    from compiler.families.single_graph.data import Dataset

NORMALIZED_MIN_COSINE = 0.9999  # per output: normalizing changes no arithmetic
_ONNX_TO_DTYPE = {
    onnx.TensorProto.FLOAT: "float32",
    onnx.TensorProto.FLOAT16: "float16",
    onnx.TensorProto.INT64: "int64",
    onnx.TensorProto.INT32: "int32",
    onnx.TensorProto.UINT8: "uint8",
    onnx.TensorProto.INT8: "int8",
    onnx.TensorProto.BOOL: "bool",
}


def load_onnx(path: Path) -> onnx.ModelProto:
    """Load and check an ONNX file with its external data; corrupt or non-ONNX input is a one-line ModelError."""
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    model = onnx_io.load(path)
    if not model.graph.node:
        raise ModelError(f"{path}: not an ONNX model (empty graph); check the file is a complete .onnx export")
    check(model, path)
    return model


def check(model: onnx.ModelProto, path: Path) -> None:
    """onnx.checker on `model` (by file for models over protobuf's limit); a ModelError naming `path`."""
    try:
        if onnx_io.tensor_bytes(model) < onnx_io.EXTERNAL_ABOVE:
            onnx.checker.check_model(model)
        else:
            onnx.checker.check_model(str(path))
    except onnx.checker.ValidationError as error:
        raise ModelError(f"{path}: invalid ONNX model: {str(error).strip().splitlines()[0]}") from error


def signature(model: onnx.ModelProto, where: str, outputs: bool = False) -> tuple[TensorSpec, ...]:
    """Input (or output) specs from the graph; symbolic or unknown dims become axis names."""
    initializers = {init.name for init in model.graph.initializer}
    values = model.graph.output if outputs else [v for v in model.graph.input if v.name not in initializers]
    specs = []
    for value in values:
        tensor = value.type.tensor_type
        dtype = _ONNX_TO_DTYPE.get(tensor.elem_type)
        if dtype is None:
            raise ModelError(
                f"{where}: input '{value.name}' has element type "
                f"{onnx.TensorProto.DataType.Name(tensor.elem_type)}; supported: {', '.join(DTYPES)}"
            )
        dims = tuple(
            d.dim_value if d.HasField("dim_value") else (d.dim_param or f"{value.name}_dim{i}")
            for i, d in enumerate(tensor.shape.dim)
        )
        specs.append(TensorSpec(value.name, dtype, dims))
    return tuple(specs)


def check_inputs_match(recipe: ModelRecipe, model: onnx.ModelProto, where: str) -> None:
    """The model's inputs must be the recipe's: same names, same dtypes, same fixed dims."""
    actual = {spec.name: spec for spec in signature(model, where)}
    expected = {spec.name: spec for spec in recipe.inputs}
    if set(actual) != set(expected):
        raise ModelError(
            f"{where}: model inputs {sorted(actual)} do not match the recipe's inputs "
            f"{sorted(expected)}; fix [[inputs]] in {recipe.path}"
        )
    for name, spec in expected.items():
        if actual[name].dtype != spec.dtype:
            raise ModelError(
                f"{where}: input '{name}' is {actual[name].dtype} in the model but {spec.dtype} in {recipe.path}"
            )
        fixed = [
            (a, e)
            for a, e in zip(actual[name].shape, spec.shape, strict=False)
            if isinstance(a, int) and isinstance(e, int) and a != e
        ]
        if len(actual[name].shape) != len(spec.shape) or fixed:
            raise ModelError(
                f"{where}: input '{name}' has shape {list(actual[name].shape)} in the model but "
                f"{list(spec.shape)} in {recipe.path}"
            )


def import_onnx_file(recipe: ModelRecipe, dataset: Dataset, directory: Path) -> dict[str, Any]:
    """The file, normalized to the tested form (onnx_normalize.py), as `model.onnx` (+ `model.onnx.data`
    when its weights pass protobuf's limit), and its reference outputs on the verification data."""
    source = Path(recipe.source)
    model = load_onnx(source)
    if recipe.path is not None:
        check_inputs_match(recipe, model, str(source))
    opset = default_opset(model)
    producer = f"{model.producer_name or 'unknown producer'} {model.producer_version}".strip()
    model, notes = normalize(model, str(source))
    for note in notes:
        step(f"import {source.name}: {note}")
    target = directory / "model.onnx"
    onnx_io.save(model, target)
    check(model, target)
    from .torch_export import save_reference

    reference = run_batches(session(target), dataset.verify)
    save_reference(directory / "reference.npz", reference)
    return {
        "exporter": f"onnx file ({producer})",
        "opset": default_opset(model),
        "source_opset": opset,
        "normalized": notes,
        "export_check": _same_as_file(source, reference, dataset) if notes else None,
        "torch_passes": [],
        "onnx_nodes": len(model.graph.node),
        "external_data": [file.name for file in onnx_io.data_files(target)],
    }


def _same_as_file(source: Path, reference: list[list[np.ndarray]], dataset: Dataset) -> dict[str, Any] | None:
    """The normalized model's outputs against the file's own, where ONNX Runtime runs the file as it is
    (it has no kernels for some old operator versions: then None, and the normalized model is the reference)."""
    try:
        original = run_batches(session(source), dataset.verify)
    except ModelError as error:
        step(f"import {source.name}: the file as given does not run in ONNX Runtime ({error}); not compared")
        return None
    worst = 1.0
    for expected_batch, actual_batch in zip(original, reference, strict=True):
        for expected, actual in zip(expected_batch, actual_batch, strict=True):
            if expected.shape != actual.shape:
                raise ModelError(
                    f"{source}: normalizing changed an output's shape from {expected.shape} to {actual.shape}"
                )
            a, b = expected.astype(np.float64).ravel(), actual.astype(np.float64).ravel()
            if not np.issubdtype(expected.dtype, np.floating):
                worst = min(worst, float(np.array_equal(a, b)))
                continue
            norm = np.linalg.norm(a) * np.linalg.norm(b)
            worst = min(worst, 1.0 if norm == 0 and not a.any() and not b.any() else float(a @ b / (norm + 1e-30)))
    if not worst >= NORMALIZED_MIN_COSINE:
        raise ModelError(
            f"{source}: the normalized model's outputs differ from the file's (cosine {worst:.6f}); "
            "re-export the model at a current opset"
        )
    return {"against": "the file as given, in ONNX Runtime", "min_cosine": round(worst, 8)}
