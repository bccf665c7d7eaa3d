"""Core ML backend for iOS: the recipe's PyTorch model -> ML Program `.mlpackage`, shipped zipped.

coremltools has no ONNX frontend, so this lane starts from the recipe's PyTorch model (the same
factory or transformers directory the importer exports), not from the ONNX graph:
`torch.export.export(...).run_decompositions()` at the recipe's benchmark shapes, then
`ct.convert(convert_to="mlprogram")` with FP16 compute and the target's minimum iOS version.
(transformers 5 calls `Tensor.new_ones`, which coremltools 9 cannot convert until the default
decompositions lower it.) `ios-int8` then quantizes weights to INT8 (linear symmetric, per
channel) with coremltools' own `linear_quantize_weights`, selected by the op that consumes the
constant: only linear, conv and gather weights (embedding tables). A folded constant that feeds
anything else, an attention mask above all, stays as it is: compressed, it turns into NaN.

Core ML cannot run on Linux, so verification executes the saved package in our MIL reference
interpreter (`mil_interpreter.py`: numpy, coremltools' own decompression of compressed weights,
FP16 rounding per op), on the same batches and metric as every other target, and fails on any
NaN or infinity. The package's spec version is checked against the declared minimum iOS.

The artifact is `<model>.mlpackage.zip`: a zip (stored, sorted, fixed times) of the package with
Manifest.json's random item UUIDs replaced by ones derived from the item paths and the converter's
debug side file left out, so equal inputs give equal bytes. On the device: unzip, then
`MLModel.compileModel(at:)`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import tempfile
import uuid
import warnings
import zipfile
from io import StringIO
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import torch

from compiler.backends.base import Backend, CompileRequest, Execution, Feeds, Outputs, read_io_record, write_io_record
from compiler.errors import ConfigError, ModelError
from compiler.progress import step

ARTIFACT_NAME = "model.mlpackage.zip"
# Core ML model spec version -> the iOS release that first runs it (coremltools' target table).
IOS_FOR_SPEC = {6: 15, 7: 16, 8: 17, 9: 18}
WEIGHT_OPS = ("linear", "conv", "gather")  # the ops whose constant inputs are weights
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
# coremltools warns at import about untested sklearn/xgboost/torch versions and the macOS-only
# runtime it cannot load here, and draws progress bars (kept off the terminal in compile_model):
# none of it concerns the user.
logging.getLogger("coremltools").setLevel(logging.ERROR)
_SIDE_FILES = ("executorch_debug_handle_mapping.json",)
_DATE_KEY = "com.github.apple.coremltools.conversion_date"
_STORED_INPUTS = ("quantized_data", "data", "indices")  # what a constexpr op keeps in the file


class SingleOutput(torch.nn.Module):
    """A one-output tuple comes back as a tensor, so coremltools gives it the recipe's output name."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: torch.Tensor) -> Any:
        out = self.inner(*args)
        return out[0] if isinstance(out, tuple | list) and len(out) == 1 else out


def deployment_target(minimum_ios: str) -> Any:
    import coremltools as ct

    major = minimum_ios.split(".")[0]
    target = getattr(ct.target, f"iOS{major}", None)
    if target is None or int(major) < 15:
        raise ConfigError(f"runtime.min_version '{minimum_ios}': ML Programs need iOS 15 to 18")
    return target


class CoreMlBackend(Backend):
    """`runtime = { name = "coreml" }`: an ML Program converted from the PyTorch model, shipped zipped."""

    runtime: ClassVar[str] = "coreml"
    tools: ClassVar[tuple[str, ...]] = ("coremltools", "torch", "transformers")
    untimed_summary: ClassVar[str] = "Core ML: verified in a reference interpreter; its speed is the iPhone's"
    bench_note: ClassVar[str] = "fidelity from the MIL reference interpreter; no latency off Apple hardware"
    converts_from: ClassVar[Literal["onnx", "pytorch"]] = "pytorch"

    def check_request(self, request: CompileRequest) -> None:
        if request.passes_applied:
            raise ConfigError(
                f"{self.target.path}: Core ML targets convert the PyTorch model, so ONNX passes "
                f"({', '.join(request.passes_applied)}) would not reach the artifact; remove them "
                "(compression is the target's precision)"
            )
        if request.torch_module is None:
            raise ConfigError(
                f"{request.name}: Core ML targets convert from PyTorch (coremltools has no ONNX frontend); "
                "this build starts from an ONNX file; give a recipe with a torch or huggingface source, "
                "or pick an android-* target"
            )

    def key_config(self, request: CompileRequest) -> dict[str, Any]:
        """Converts the PyTorch model: the import digest (the graph's) stands for it."""
        return {
            "runtime": self.runtime,
            "precision": self.target.precision,
            "shapes": request.shapes,
            "minimum_ios": self.target.runtime_min_version,
        }

    def compile(self, request: CompileRequest, directory: Path) -> dict[str, Any]:
        assert request.torch_module is not None  # check_request refused it
        step("coreml: loading the PyTorch model")
        module = SingleOutput(request.torch_module().eval()).eval()
        return compile_model(module, request, self.target.precision, self.target.runtime_min_version, directory)

    def execution(self, artifact: Path) -> Execution:
        return Execution("interpreter", "run in the MIL reference interpreter")

    def outputs_for(self, artifact: Path, batches: list[Feeds]) -> Outputs:
        from compiler.backends.static_shapes import run_static

        io = read_io_record(artifact)
        return run_static(io["input_shapes"], batches, lambda padded: outputs_for(artifact, padded, io["onnx_outputs"]))

    def shipped_name(self, stem: str, artifact: Path) -> str:
        return f"{stem}.mlpackage.zip"

    def not_timed(self, artifact: Path) -> str:
        return (
            "not measured: Core ML runs only on Apple devices; here the package was executed by a "
            "reference interpreter to be verified, and its time says nothing about an iPhone"
        )


def compile_model(
    module: Any, request: CompileRequest, precision: str, minimum_ios: str, directory: Path
) -> dict[str, Any]:
    """Write `directory/model.mlpackage.zip` (+ io.json) and return the backend's meta."""
    import coremltools as ct

    if precision not in ("fp16", "int8"):
        raise ConfigError(f"the Core ML backend builds fp16 or int8 (INT8 weights, FP16 compute), not '{precision}'")
    target = deployment_target(minimum_ios)
    shapes = request.shapes
    names = [spec.name for spec in request.inputs]
    dtypes = {spec.name: _coreml_dtype(spec.dtype) for spec in request.inputs}
    output_names = list(request.output_names) or ["output"]
    example = tuple(_example(shapes[name], dtypes[name]) for name in names)
    step(f"coreml: torch.export at {shapes} and conversion to an ML Program (FP16 compute, iOS {minimum_ios})")
    with warnings.catch_warnings(), contextlib.redirect_stderr(StringIO()):
        warnings.simplefilter("ignore")
        try:
            exported = torch.export.export(module, example, strict=False).run_decompositions()
            model = ct.convert(
                exported,
                convert_to="mlprogram",
                minimum_deployment_target=target,
                compute_precision=ct.precision.FLOAT16,
                inputs=[ct.TensorType(name=n, shape=tuple(shapes[n]), dtype=dtypes[n]) for n in names],
                outputs=[ct.TensorType(name=n) for n in output_names],
                skip_model_load=True,
            )
        except Exception as error:  # torch.export and coremltools raise many unrelated types
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ModelError(f"{request.name}: Core ML conversion failed: {first}") from error
        if precision == "int8":
            step(f"coreml: INT8 weights (linear symmetric, per channel) on {', '.join(WEIGHT_OPS)} only")
            model = quantize_weights(model)
    with tempfile.TemporaryDirectory(prefix="edgebuild-coreml-") as tmp:
        package = Path(tmp) / "model.mlpackage"
        model.save(str(package))
        canonicalise(package)
        check_deployment(package, minimum_ios)
        meta = describe(package)
        zip_package(package, directory / ARTIFACT_NAME)
    inputs = [{"name": n, "dtype": np.dtype(dtypes[n]).name, "shape": shapes[n]} for n in names]
    outputs = [{"name": n, **meta["outputs"][n]} for n in output_names]
    io = {"inputs": inputs, "outputs": outputs, "input_shapes": shapes, "onnx_outputs": output_names}
    write_io_record(directory, io)
    versions = _versions()
    return {
        "artifact": ARTIFACT_NAME,
        "runtime": "coreml",
        "runtime_version": versions["coremltools"],
        "converter": {
            "coremltools": versions["coremltools"],
            "torch": versions["torch"],
            "route": "torch.export + run_decompositions",
            "minimum_ios": minimum_ios,
            "spec_version": str(meta["spec_version"]),
            "weights": "int8 linear symmetric per channel (linear, conv, gather)" if precision == "int8" else "fp16",
        },
        "ops": meta["ops"],
        "tensor_dtypes": meta["tensor_dtypes"],
        "inputs": inputs,
        "outputs": outputs,
    }


def quantize_weights(model: Any) -> Any:
    """INT8 weights for the ops in WEIGHT_OPS only; every other constant is left alone."""
    import coremltools.optimize.coreml as cto

    config = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel")
    selected = cto.OptimizationConfig(op_type_configs=dict.fromkeys(WEIGHT_OPS, config))
    return cto.linear_quantize_weights(model, config=selected)


def canonicalise(package: Path) -> None:
    """Make the package a function of its content: item IDs from paths, no conversion date, the
    spec serialised deterministically (protobuf map order), no converter side files."""
    for name in _SIDE_FILES:
        (package / name).unlink(missing_ok=True)
    manifest_path = package / "Manifest.json"
    manifest = json.loads(manifest_path.read_text())
    root = manifest["itemInfoEntries"][manifest["rootModelIdentifier"]]
    spec_path = package / "Data" / root["path"]
    spec = _spec(package)
    spec.description.metadata.userDefined.pop(_DATE_KEY, None)
    spec_path.write_bytes(spec.SerializeToString(deterministic=True))
    renamed = {}
    for old, item in manifest["itemInfoEntries"].items():
        renamed[old] = str(uuid.uuid5(uuid.NAMESPACE_URL, f"edgebuild:mlpackage/{item['path']}")).upper()
    manifest["itemInfoEntries"] = {renamed[k]: v for k, v in manifest["itemInfoEntries"].items()}
    manifest["rootModelIdentifier"] = renamed[manifest["rootModelIdentifier"]]
    manifest_path.write_text(json.dumps(manifest, indent=4, sort_keys=True) + "\n")


def zip_package(package: Path, destination: Path) -> None:
    """A deterministic zip of the package (stored, entries sorted, fixed times and modes)."""
    partial = destination.with_name(destination.name + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as archive:
        for path in sorted(package.rglob("*")):  # directories too: an empty weights/ is an item
            name = f"{package.name}/{path.relative_to(package).as_posix()}"
            if path.is_dir():
                info = zipfile.ZipInfo(name + "/", date_time=_ZIP_TIME)
                info.external_attr = (0o40755 << 16) | 0x10
                info.create_system = 3
                archive.writestr(info, b"")
                continue
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            info.create_system = 3
            with path.open("rb") as source, archive.open(info, "w") as target:
                shutil.copyfileobj(source, target, 1 << 20)
    partial.replace(destination)


def unzip_package(archive: Path, directory: Path) -> Path:
    """Extract a zipped package into `directory`; returns the .mlpackage path."""
    with zipfile.ZipFile(archive) as zipped:
        names = zipped.namelist()
        roots = {name.split("/")[0] for name in names}
        if len(roots) != 1 or any(".." in name.split("/") or name.startswith("/") for name in names):
            raise ModelError(f"{archive.name}: not a single .mlpackage (entries: {sorted(roots)[:3]})")
        zipped.extractall(directory)
    return directory / roots.pop()


def _spec(package: Path) -> Any:
    from coremltools.models.utils import load_spec

    return load_spec(str(package))


def check_deployment(package: Path, minimum_ios: str) -> None:
    """The package's spec version must run on the declared minimum iOS."""
    version = _spec(package).specificationVersion
    needs = IOS_FOR_SPEC.get(version)
    if needs is None or needs > int(minimum_ios.split(".")[0]):
        raise ModelError(
            f"the Core ML package has spec version {version} (iOS {needs or '?'}+), newer than the target's "
            f"minimum iOS {minimum_ios}; raise runtime.min_version or drop the op that needs it"
        )


def describe(package: Path) -> dict[str, Any]:
    """Spec version, op types, outputs (dtype, shape) and how many constants of each dtype the program holds."""
    from compiler.backends import mil_interpreter

    spec = _spec(package)
    program = mil_interpreter.load_program(package)
    unsupported = mil_interpreter.unsupported_ops(program)
    if unsupported:
        raise ModelError(
            f"the Core ML program uses ops the Linux reference interpreter cannot run: {', '.join(unsupported)}"
        )
    counts: dict[str, int] = {}
    for op in program.functions["main"].operations:
        if op.op_type == "const" or op.op_type.startswith("constexpr_"):
            stored = [getattr(op, name, None) for name in _STORED_INPUTS]
            data = next((var for var in stored if var is not None), op.outputs[0])
            if not data.shape:
                continue  # a scalar or a string: an op's parameter, not a tensor
            dtype = _var_dtype(data)
            counts[dtype] = counts.get(dtype, 0) + 1
    outputs = {
        o.name: {"dtype": _feature_dtype(o), "shape": [int(d) for d in o.type.multiArrayType.shape]}
        for o in spec.description.output
    }
    return {
        "spec_version": spec.specificationVersion,
        "ops": mil_interpreter.op_types(program),
        "tensor_dtypes": dict(sorted(counts.items())),
        "outputs": outputs,
    }


def outputs_for(archive: Path, batches: list[dict[str, np.ndarray]], output_names: list[str]) -> list[list[np.ndarray]]:
    """Outputs of the zipped package for every batch, run by the MIL reference interpreter; any
    NaN or infinity fails the build (a compressed non-weight constant is the usual cause)."""
    from compiler.backends import mil_interpreter

    io = read_io_record(archive)
    dtypes = {entry["name"]: entry["dtype"] for entry in io["inputs"]}
    with tempfile.TemporaryDirectory(prefix="edgebuild-coreml-run-") as tmp:
        program = mil_interpreter.load_program(unzip_package(archive, Path(tmp)))
        results = []
        for index, feeds in enumerate(batches):
            produced = mil_interpreter.run(program, {n: feeds[n].astype(dtypes[n]) for n in dtypes})
            row = []
            for name in output_names:
                value = np.asarray(produced[name], dtype=np.float32)
                if not np.isfinite(value).all():
                    bad = int(np.size(value) - np.isfinite(value).sum())
                    raise ModelError(
                        f"the Core ML package produces NaN/inf in output '{name}' ({bad} values, batch {index}): "
                        "a compressed constant that is not a weight (e.g. an attention mask) is the usual cause"
                    )
                row.append(value)
            results.append(row)
    return results


def _example(shape: list[int], dtype: type) -> torch.Tensor:
    return torch.zeros(shape, dtype=torch.int32) if dtype is np.int32 else torch.zeros(shape, dtype=torch.float32)


def _coreml_dtype(dtype: str) -> type:
    """Core ML takes int32 and float inputs: token ids arrive as int32 (a device casts int64 ids)."""
    if dtype.startswith("int") or dtype.startswith("uint"):
        return np.int32
    return np.float32


def _var_dtype(var: Any) -> str:
    from coremltools.converters.mil.mil import types

    dtype = var.dtype if hasattr(var, "dtype") else var.sym_type
    return np.dtype(types.nptype_from_builtin(dtype)).name


def _feature_dtype(feature: Any) -> str:
    kind = feature.type.multiArrayType.dataType
    return {65568: "float32", 65552: "float16", 131104: "int32"}.get(kind, "float32")


def _versions() -> dict[str, str]:
    from importlib.metadata import version

    return {name: version(name) for name in ("coremltools", "torch")}
