"""Bring an ONNX file from any exporter to the form every pass is tested on, saying what changed.

What: `normalize(model)` returns the model and one note per change:
- initializers also listed as graph inputs (IR version 3 required it; ONNX's own model zoo and
  operator tests are written so) are dropped from the inputs: they are the model's weights, and
  left as inputs they are overridable, so folding and quantization would not treat them as constants;
- an IR version below what the model's opsets need (or below 4, where initializers must be inputs)
  is raised;
- a default-domain opset below MIN_OPSET is upgraded to TARGET_OPSET with onnx.version_converter:
  ONNX Runtime has no kernels for some old operator versions (Gemm-6, BatchNormalization-6, PRelu-6,
  Mul-6), and ORT's quantizers write per-channel DequantizeLinear with an `axis` attribute that
  only exists from opset 13.

Guarantees: the graph computes the same outputs (the import stage checks the normalized model
against the file itself on the recipe's data); a model that cannot be upgraded is a one-line
ModelError saying which converter step failed.
"""

from __future__ import annotations

import onnx
from onnx import helper, version_converter

from compiler.errors import ModelError
from compiler.onnx_io import PROTOBUF_LIMIT, tensor_bytes

MIN_OPSET = 13  # per-axis QuantizeLinear/DequantizeLinear; every kernel ORT's quantizers emit
TARGET_OPSET = 17  # what compiler/importers/torch_export.py exports and every pass is tested on
MIN_IR_WITHOUT_INPUT_INITIALIZERS = 4


def default_opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def normalize(model: onnx.ModelProto, where: str) -> tuple[onnx.ModelProto, list[str]]:
    """`model` in the tested form (see the module docstring), and what was changed, one note each."""
    notes: list[str] = []
    initializers = {tensor.name for tensor in model.graph.initializer}
    listed = [value for value in model.graph.input if value.name in initializers]
    if listed:
        kept = [value for value in model.graph.input if value.name not in initializers]
        del model.graph.input[:]
        model.graph.input.extend(kept)
        notes.append(f"{len(listed)} initializers were also graph inputs (IR {model.ir_version}): kept as weights")
    if model.ir_version < MIN_IR_WITHOUT_INPUT_INITIALIZERS:
        notes.append(f"IR version {model.ir_version} raised to {MIN_IR_WITHOUT_INPUT_INITIALIZERS}")
        model.ir_version = MIN_IR_WITHOUT_INPUT_INITIALIZERS
    opset = default_opset(model)
    if opset < MIN_OPSET:
        model = _upgrade(model, opset, where)
        notes.append(f"opset {opset} upgraded to {TARGET_OPSET} (onnx.version_converter)")
    needed = helper.find_min_ir_version_for(list(model.opset_import), ignore_unknown=True)
    if model.ir_version < needed:
        notes.append(f"IR version {model.ir_version} raised to {needed} (what opset {default_opset(model)} needs)")
        model.ir_version = needed
    return model, notes


def _upgrade(model: onnx.ModelProto, opset: int, where: str) -> onnx.ModelProto:
    if tensor_bytes(model) >= PROTOBUF_LIMIT:
        raise ModelError(
            f"{where}: opset {opset} is below {MIN_OPSET} and the model is over 2 GB, too large for "
            f"onnx.version_converter; re-export it at opset {TARGET_OPSET}"
        )
    try:
        upgraded = version_converter.convert_version(model, TARGET_OPSET)
    except Exception as error:  # the C++ converter raises ConvertError, RuntimeError and others
        raise ModelError(
            f"{where}: cannot upgrade opset {opset} to {TARGET_OPSET} ({type(error).__name__}: "
            f"{str(error).strip().splitlines()[0][:200]}); re-export the model at opset {TARGET_OPSET}"
        ) from error
    return upgraded


__all__ = ["MIN_OPSET", "TARGET_OPSET", "default_opset", "normalize"]
