"""An existing ONNX file: load, check, read its signature, reference = ORT FP32 outputs."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx

from compiler.engine.specs import DTYPES, ModelRecipe, TensorSpec
from compiler.errors import ModelError
from compiler.ort_session import run_batches, session

if TYPE_CHECKING:
    from compiler.families.single_graph.data import Dataset

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
    """Load and check an ONNX file; corrupt or non-ONNX input is a one-line ModelError."""
    if not path.is_file():
        raise ModelError(f"{path}: no such file")
    try:
        model = onnx.load(str(path))
    except Exception as error:  # protobuf raises DecodeError, onnx raises several kinds
        raise ModelError(
            f"{path}: not a readable ONNX model ({type(error).__name__}); check the file is a complete .onnx export"
        ) from error
    if not model.graph.node:
        raise ModelError(f"{path}: not an ONNX model (empty graph); check the file is a complete .onnx export")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as error:
        raise ModelError(f"{path}: invalid ONNX model: {str(error).strip().splitlines()[0]}") from error
    return model


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
    source = Path(recipe.source)
    model = load_onnx(source)
    if recipe.path is not None:
        check_inputs_match(recipe, model, str(source))
    shutil.copyfile(source, directory / "model.onnx")
    from .torch_export import save_reference

    save_reference(directory / "reference.npz", run_batches(session(model), dataset.verify))
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    return {
        "exporter": f"onnx file ({model.producer_name or 'unknown producer'} {model.producer_version})".strip(),
        "opset": opset,
        "export_check": None,
        "torch_passes": [],
        "onnx_nodes": len(model.graph.node),
    }
