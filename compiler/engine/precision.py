"""The precision a build achieved, measured on what it ships, against what its target promises.

A target's `precision` (int8, int4, fp16, mixed) is a promise; a pass list that quantizes nothing
(INT4 weights on a CNN: MatMulNBits covers MatMul only) or a converter that stores float weights
would otherwise ship an FP32 file labelled int4. So every build measures its shipped model:

- an ONNX artifact: the bytes of its weights (initializers, Constant nodes and sparse tensors, in
  subgraphs too) by element type, read with `load_external_data=False` (a tensor's size comes
  from its shape and type, so weights kept in external data count in full), and the number of
  quantized nodes (QuantizeLinear, QLinearConv, MatMulNBits, ...). 4-bit weights packed in the
  uint8 tensors of MatMulNBits / GatherBlockQuantized count as int4 (int<bits>);
- another artifact (TVM library, .tflite, Core ML, .ort): the tensor counts by dtype its
  backend's compile meta records (`tensor_dtypes`), or "not measured";

and `promise_warnings` says, in a warning line of the build, where the promise is not met.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from math import prod
from pathlib import Path
from typing import Any

import onnx

METHOD_ONNX = (
    "bytes of the shipped ONNX's initializers, Constant nodes and sparse tensors by element type (shape x "
    "type size, external data included); 4-bit weights packed in MatMulNBits/GatherBlockQuantized uint8 "
    "tensors count as int4"
)
METHOD_COUNTS = "tensor counts by dtype, as the backend's converter recorded them (bytes by dtype not recorded)"
NOT_MEASURED = "not measured: the artifact is not an ONNX graph and its backend records no tensor dtypes"

QUANTIZED_OPS = frozenset(
    {
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "MatMulInteger",
        "ConvInteger",
        "MatMulIntegerToFloat",
        "DynamicQuantizeMatMul",
        "DynamicQuantizeLSTM",
        "MatMulNBits",
        "MatMulBnb4",
        "GatherBlockQuantized",
        "QGemm",
        "QAttention",
        "QEmbedLayerNormalization",
    }
)
QUANTIZED_PREFIXES = ("QLinear", "QOrdered")  # QLinearConv, QLinearMatMul, QLinearAdd, ...
# Element types narrower than a byte: their size is bits x elements, rounded up to whole bytes.
_SUB_BYTE_BITS = {"int4": 4, "uint4": 4, "float4e2m1": 4, "int2": 2, "uint2": 2, "float6e2m3": 6, "float6e3m2": 6}
_PACKED_WEIGHT = {"MatMulNBits": 1, "GatherBlockQuantized": 0}  # op -> input index of its packed weight
FLOAT32 = ("float32", "float64")
INTEGER = ("int8", "uint8", "int4", "uint4", "int2", "uint2")
FOUR_BIT = ("int4", "uint4")
HALF = ("float16", "bfloat16")
QUANTIZED_TARGETS = ("int8", "int4", "fp16", "mixed")


def dtype_name(data_type: int) -> str:
    """numpy-style name of an ONNX element type: FLOAT -> float32, INT8 -> int8, FLOAT16 -> float16."""
    name = onnx.TensorProto.DataType.Name(data_type).lower()
    return {"float": "float32", "double": "float64"}.get(name, name)


def tensor_bytes(tensor: onnx.TensorProto) -> int:
    """Bytes of a tensor's values from its shape and element type (external data or not)."""
    dtype = dtype_name(tensor.data_type)
    if dtype == "string":
        return sum(len(s) for s in tensor.string_data)
    elements = prod(tensor.dims)
    bits = _SUB_BYTE_BITS.get(dtype)
    if bits is not None:
        return (elements * bits + 7) // 8
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return int(elements * itemsize)


@dataclass
class Weights:
    """What a model stores: weight bytes by element type and its quantized nodes by op type."""

    bytes_by_dtype: dict[str, int] = field(default_factory=dict)
    quantized_ops: dict[str, int] = field(default_factory=dict)
    external_bytes: int = 0  # of those bytes, how many live in external data files

    @property
    def total(self) -> int:
        return sum(self.bytes_by_dtype.values())

    @property
    def quantized_nodes(self) -> int:
        return sum(self.quantized_ops.values())

    def share(self, dtypes: Sequence[str]) -> float:
        """The fraction of weight bytes held in `dtypes` (0.0 for a model with no weights)."""
        return sum(self.bytes_by_dtype.get(d, 0) for d in dtypes) / self.total if self.total else 0.0

    def add(self, other: Weights) -> None:
        for dtype, count in other.bytes_by_dtype.items():
            self.bytes_by_dtype[dtype] = self.bytes_by_dtype.get(dtype, 0) + count
        for op, count in other.quantized_ops.items():
            self.quantized_ops[op] = self.quantized_ops.get(op, 0) + count
        self.external_bytes += other.external_bytes


def is_quantized_op(op_type: str) -> bool:
    return op_type in QUANTIZED_OPS or op_type.startswith(QUANTIZED_PREFIXES)


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """`graph` and every subgraph of its nodes (If, Loop, Scan bodies), depth first."""
    yield graph
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _graphs(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for sub in attribute.graphs:
                    yield from _graphs(sub)


def _packed_names(graph: onnx.GraphProto) -> dict[str, str]:
    """Weight names that hold packed sub-byte values -> the type they hold ("int4" for bits=4)."""
    packed = {}
    for node in graph.node:
        index = _PACKED_WEIGHT.get(node.op_type)
        if index is None or len(node.input) <= index:
            continue
        bits = next((a.i for a in node.attribute if a.name == "bits"), 4)
        packed[node.input[index]] = f"int{bits}"
    return packed


def _stored(graph: onnx.GraphProto) -> Iterator[tuple[str, onnx.TensorProto]]:
    """(name, tensor) of every weight `graph` itself holds."""
    for tensor in graph.initializer:
        yield tensor.name, tensor
    for sparse in graph.sparse_initializer:
        yield sparse.values.name, sparse.values
        yield "", sparse.indices
    for node in graph.node:
        if node.op_type != "Constant":
            continue
        for attribute in node.attribute:
            if attribute.name == "value":
                yield node.output[0], attribute.t
            elif attribute.name == "sparse_value":
                yield node.output[0], attribute.sparse_tensor.values
                yield "", attribute.sparse_tensor.indices
            elif attribute.name in ("value_float", "value_floats", "value_int", "value_ints"):
                floats = attribute.name.startswith("value_float")
                values = list(attribute.floats or attribute.ints) or [attribute.f if floats else attribute.i]
                data_type = onnx.TensorProto.FLOAT if floats else onnx.TensorProto.INT64
                yield node.output[0], onnx.helper.make_tensor("", data_type, [len(values)], values)


def onnx_weights(model: onnx.ModelProto | Path) -> Weights:
    """Weight bytes by element type and quantized nodes of an ONNX model (see the module docstring)."""
    if isinstance(model, Path):
        model = onnx.load(str(model), load_external_data=False)
    weights = Weights()
    for graph in _graphs(model.graph):
        packed = _packed_names(graph)
        for name, tensor in _stored(graph):
            dtype = dtype_name(tensor.data_type)
            if dtype == "uint8" and name in packed:
                dtype = packed[name]
            size = tensor_bytes(tensor)
            weights.bytes_by_dtype[dtype] = weights.bytes_by_dtype.get(dtype, 0) + size
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                weights.external_bytes += size
        for node in graph.node:
            if is_quantized_op(node.op_type):
                weights.quantized_ops[node.op_type] = weights.quantized_ops.get(node.op_type, 0) + 1
    weights.bytes_by_dtype = dict(sorted(weights.bytes_by_dtype.items()))
    weights.quantized_ops = dict(sorted(weights.quantized_ops.items()))
    return weights


def _promised(precision: str) -> tuple[str, tuple[str, ...]]:
    """The label and the element types that keep a precision's promise."""
    return {
        "int8": ("int8", ("int8", "uint8")),
        "int4": ("int4", FOUR_BIT),
        "fp16": ("float16", HALF),
        "mixed": ("non-float32", (*INTEGER, *HALF)),
        "fp32": ("float32", FLOAT32),
    }.get(precision, (precision, (precision,)))


def promise_warnings(
    target: str, precision: str, weights: Weights | None, counts: dict[str, int] | None, size: int, fp32_size: int
) -> list[str]:
    """Where the shipped model breaks its target's precision promise, one sentence each.

    `weights` is the ONNX measurement (None when the artifact is not ONNX); `counts` the
    backend's tensor counts by dtype (None when it records none); sizes in bytes.
    """
    found = []
    label, kept = _promised(precision)
    if weights is not None and weights.total:
        share, floats = weights.share(kept), weights.share(FLOAT32)
        if precision in QUANTIZED_TARGETS and share == 0:
            found.append(
                f"{target} promises {precision} but the shipped model has no {label} weights "
                f"({100 * floats:.1f}% of its {weights.total:,} weight bytes are float32, "
                f"{weights.quantized_nodes:,} quantized nodes): the target's passes did not convert this model"
            )
        elif precision == "int8" and floats > 0.5:
            found.append(
                f"{target} promises int8 but {100 * floats:.1f}% of the shipped model's {weights.total:,} weight "
                f"bytes are float32 (int8/uint8 {100 * share:.1f}%, {weights.quantized_nodes:,} quantized nodes)"
            )
    elif counts is not None and precision in QUANTIZED_TARGETS and not any(counts.get(t) for t in kept):
        found.append(
            f"{target} promises {precision} but the artifact holds no {label} tensors "
            f"(tensor counts by dtype: {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})"
        )
    if precision in QUANTIZED_TARGETS and fp32_size and size > fp32_size:
        found.append(
            f"{target} promises {precision} but the artifact ({size:,} bytes) is larger than the FP32 model "
            f"({fp32_size:,} bytes, {100 * size / fp32_size:.1f}%)"
        )
    return found


def summary_line(precision: str, weights: Weights | None, counts: dict[str, int] | None, met: bool) -> str:
    """One line for the build summary: "int8 weights 98.8% of 281,922 weight bytes, 9 quantized nodes"."""
    verdict = "" if met else f"; target promises {precision}: NOT MET"
    if weights is not None:
        if not weights.total:
            return f"no weights in the shipped model ({weights.quantized_nodes:,} quantized nodes){verdict}"
        label, kept = _promised(precision)
        largest = max(weights.bytes_by_dtype, key=lambda d: weights.bytes_by_dtype[d])
        text = f"{label} weights {100 * weights.share(kept):.1f}% of {weights.total:,} weight bytes"
        if largest not in kept:
            text += f" ({largest} {100 * weights.share((largest,)):.1f}%)"
        return f"{text}, {weights.quantized_nodes:,} quantized nodes{verdict}"
    if counts is not None:
        return f"tensor counts by dtype {', '.join(f'{k} {v}' for k, v in sorted(counts.items()))}{verdict}"
    return f"weights by dtype not measured (not an ONNX artifact){verdict}"


def achieved_precision(
    target: str,
    precision: str,
    artifacts: Sequence[tuple[Path, dict[str, Any]]],
    graph_artifact: bool,
    fp32_size: int,
) -> dict[str, Any]:
    """The record's metrics.precision for the compiled graphs `artifacts` ((artifact, compile meta)
    per graph); `graph_artifact`: the backend's artifacts are ONNX graphs; sizes in bytes."""
    size = sum(path.stat().st_size for path, _ in artifacts)
    weights: Weights | None = None
    counts: dict[str, int] | None = None
    if graph_artifact:
        weights = Weights()
        for path, _ in artifacts:
            weights.add(onnx_weights(path))
        weights.bytes_by_dtype = dict(sorted(weights.bytes_by_dtype.items()))
        weights.quantized_ops = dict(sorted(weights.quantized_ops.items()))
    elif all("tensor_dtypes" in meta for _, meta in artifacts):
        counts = {}
        for _, meta in artifacts:
            for dtype, count in meta["tensor_dtypes"].items():
                counts[dtype] = counts.get(dtype, 0) + int(count)
    warnings = promise_warnings(target, precision, weights, counts, size, fp32_size)
    figures: dict[str, Any] = {
        "target": precision,
        "method": METHOD_ONNX if weights is not None else METHOD_COUNTS if counts is not None else NOT_MEASURED,
        "promise_met": not warnings,
        "warnings": warnings,
        "summary": summary_line(precision, weights, counts, not warnings),
    }
    if weights is not None:
        figures |= {
            "weight_bytes": weights.bytes_by_dtype,
            "weight_bytes_total": weights.total,
            "external_data_bytes": weights.external_bytes,
            "quantized_nodes": weights.quantized_nodes,
            "quantized_ops": weights.quantized_ops,
        }
    if counts is not None:
        figures["tensor_counts"] = dict(sorted(counts.items()))
    return figures


__all__ = [
    "QUANTIZED_OPS",
    "Weights",
    "achieved_precision",
    "onnx_weights",
    "promise_warnings",
    "summary_line",
    "tensor_bytes",
]
