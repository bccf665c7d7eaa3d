"""quantize-dynamic-int8: INT8 weights, activations quantized at run time (transformers on CPU)."""

from __future__ import annotations

import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import onnx
from onnx import helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from compiler import onnx_io
from compiler.errors import PassError
from passes.base import GraphPass, PassContext, PassResult, nothing_to_do
from passes.mixed_precision import (
    MixedPrecisionOptions,
    check_exclusions,
    quantization_stats,
    quiet_preprocess_hint,
    search_if_enabled,
)

# The op types ORT can quantize dynamically. Gemm is not among them (ORT leaves it in FP32).
DynamicOpType = Literal["MatMul", "Attention", "Gather", "Conv", "LSTM", "EmbedLayerNormalization"]

_WEIGHT_TYPES = {"int8": QuantType.QInt8, "uint8": QuantType.QUInt8}


class QuantizeDynamicInt8(GraphPass):
    """Quantize weights to INT8 and activations at run time (onnxruntime quantize_dynamic).

    What it does: MatMul and fused Attention weights become INT8 constants, per output channel by
    default; activations are quantized per tensor at run time (DynamicQuantizeLinear +
    MatMulInteger), so no calibration data is needed. Embedding tables are stored as INT8 too: a
    Gather on a constant table gets one scale per row (standard Gather/Cast/Mul ops), because
    ORT's own Gather quantization is per tensor and costs short inputs dearly; a fused
    EmbedLayerNormalization can only be quantized per tensor (by ORT).

    Measured on all-MiniLM-L6-v2 after fold-constants + fuse (batch 1, seq 128, one thread, on a
    shared host; cosine of mean-pooled embeddings vs FP32 over 52 sentences): 0.39-0.47x the
    latency of ORT FP32, 25% of its size, mean cosine 0.992, min 0.965 (0.937 with
    EmbedLayerNormalization fused, so quantized per tensor). Weights per tensor: mean 0.960.
    uint8 weights: no faster than FP32 (no fast u8u8 MatMulInteger kernel). Conv is left out by
    default: ConvInteger is 7x slower than FP32 Conv; CNNs want quantize-static-int8.

    Needs: nothing beyond the model; `ctx.evaluate` when `mixed_precision` is on (see
    passes/mixed_precision.py: the most sensitive nodes stay in FP32 until the budget holds).

    Guarantees: a new model (the input is untouched) with at least one quantized node, otherwise
    PassError naming the op types it looked for and those the model has.
    """

    name: ClassVar[str] = "quantize-dynamic-int8"
    tools: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime")
    conflicts_with: ClassVar[tuple[str, ...]] = ("quantize-static-int8", "convert-fp16", "quantize-int4-weights")

    @dataclass(frozen=True)
    class Config(MixedPrecisionOptions):
        per_channel: bool = True
        weight_type: Literal["int8", "uint8"] = "int8"
        op_types: tuple[DynamicOpType, ...] = ("MatMul", "Attention", "Gather", "EmbedLayerNormalization")
        # How embedding tables (Gather on a constant) are quantized, when "Gather" is in op_types.
        embedding_quantization: Literal["per-row", "per-tensor"] = "per-row"
        nodes_to_exclude: tuple[str, ...] = ()
        reduce_range: bool = False  # 7-bit weights: for x86 CPUs without VNNI (saturation)

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        config = self.config
        check_exclusions(model, config.nodes_to_exclude)
        if config.target_fidelity is not None and not config.mixed_precision:
            raise PassError(
                f"option target_fidelity = {config.target_fidelity} needs mixed_precision = true "
                "(the mixed-precision search is what raises fidelity)"
            )
        per_row = "Gather" in config.op_types and config.embedding_quantization == "per-row"
        ort_op_types = [op for op in config.op_types if not (per_row and op == "Gather")]

        with quiet_preprocess_hint(), tempfile.TemporaryDirectory(dir=ctx.workdir, prefix="quantize-dynamic-") as tmp:
            source = Path(tmp) / "input.onnx"
            onnx_io.save(model, source)  # ORT reads files; saving also keeps `model` itself untouched

            def quantize(excluded: tuple[str, ...]) -> onnx.ModelProto:
                exclude = [*config.nodes_to_exclude, *excluded]
                target = Path(tmp) / "quantized.onnx"
                if ort_op_types:
                    quantize_dynamic(
                        source,
                        target,
                        op_types_to_quantize=ort_op_types,
                        per_channel=config.per_channel,
                        reduce_range=config.reduce_range,
                        weight_type=_WEIGHT_TYPES[config.weight_type],
                        nodes_to_exclude=exclude,
                        use_external_data_format=onnx_io.tensor_bytes(model) > onnx_io.EXTERNAL_ABOVE,
                        # fused contrib ops have outputs shape inference cannot type
                        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
                    )
                    result = onnx_io.load(target)
                else:
                    result = onnx_io.load(source)
                if per_row:
                    quantize_embeddings_per_row(result, set(exclude))
                return result

            quantized = quantize(())
            candidates = quantized_nodes(model, quantized, config.op_types)
            if not candidates:
                present = sorted({node.op_type for node in model.graph.node})
                return nothing_to_do(
                    model,
                    f"no {'/'.join(config.op_types)} node with constant weights outside nodes_to_exclude; "
                    f"the model has {', '.join(present)}",
                )
            quantized, candidates, search = search_if_enabled(config, model, quantize, quantized, candidates, ctx)

        stats = {
            **quantization_stats(model, model, quantized, candidates, config.nodes_to_exclude, search),
            "embedding_quantization": (config.embedding_quantization if "Gather" in config.op_types else "none"),
        }
        if per_row and stats["quantized_nodes"].get("EmbedLayerNormalization"):
            stats["note"] = (
                "EmbedLayerNormalization holds the embedding tables, which ORT quantizes "
                "per tensor; fuse without it to get per-row tables "
                "(MiniLM: min cosine 0.937 -> 0.965)"
            )
        return PassResult(quantized, stats)


def quantized_nodes(original: onnx.ModelProto, quantized: onnx.ModelProto, op_types: tuple[str, ...]) -> list[str]:
    """Names of `original`'s nodes that `quantized` quantized.

    ORT replaces what it quantizes with a renamed node (MatMul -> `<name>_quant` MatMulInteger),
    except Gather, which it keeps and rewires to an INT8 table: so a node counts as quantized when
    it is gone, or still there with different inputs.
    """
    after = {(node.name, node.op_type): list(node.input) for node in quantized.graph.node}
    return [
        node.name
        for node in original.graph.node
        if node.name and node.op_type in op_types and after.get((node.name, node.op_type)) != list(node.input)
    ]


def quantize_embeddings_per_row(model: onnx.ModelProto, exclude: set[str]) -> None:
    """In place: Gather on a constant FP32 table -> INT8 table with one scale per row.

    Rewrites `Gather(table, ids)` as `Cast(Gather(table_int8, ids)) * Gather(row_scale, ids)`,
    standard ops any runtime runs. A tied table (Whisper's token embedding, also the output
    projection) that ORT already quantized per channel for its MatMul is looked up from that INT8
    copy and its scales instead (`shared_with_matmul`), so the FP32 table goes and only one INT8
    copy is stored. Other tables used by anything else are skipped (the FP32 copy would stay, so
    nothing is saved), as are gathers along an axis other than 0 without such a twin.
    """
    graph_inputs = {value.name for value in model.graph.input}  # an initializer that is also an input
    tables = {
        init.name: init
        for init in model.graph.initializer  # can be overridden: not a constant
        if init.data_type == onnx.TensorProto.FLOAT and len(init.dims) >= 2 and init.name not in graph_inputs
    }
    uses = Counter(name for node in model.graph.node for name in node.input)
    nodes: list[onnx.NodeProto] = []
    for node in model.graph.node:
        axis = next((attr.i for attr in node.attribute if attr.name == "axis"), 0)
        table = node.input[0] if node.input else ""
        if node.op_type != "Gather" or node.name in exclude or table not in tables or uses[table] != 1:
            nodes.append(node)
            continue
        twin = _matmul_twin(model, tables[table], axis)
        if twin is not None:
            model.graph.initializer.remove(tables.pop(table))
            nodes += _dequantized_gather(node, *twin)
            continue
        if axis != 0:
            nodes.append(node)
            continue
        weights = numpy_helper.to_array(tables[table])
        scale = np.abs(weights).max(axis=tuple(range(1, weights.ndim)), keepdims=True) / 127.0
        scale[scale == 0] = 1.0  # an all-zero row (padding) stays exactly zero
        values = np.clip(np.round(weights / scale), -127, 127).astype(np.int8)
        model.graph.initializer.remove(tables.pop(table))
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(values, f"{table}_int8"),
                numpy_helper.from_array(scale.astype(np.float32), f"{table}_row_scale"),
            ]
        )
        nodes += _dequantized_gather(node, f"{table}_int8", f"{table}_row_scale")
    del model.graph.node[:]
    model.graph.node.extend(nodes)


def _dequantized_gather(node: onnx.NodeProto, values: str, scales: str) -> list[onnx.NodeProto]:
    """`Cast(Gather(values, ids)) * Gather(scales, ids)`, along the node's own axis."""
    axis = next((attr.i for attr in node.attribute if attr.name == "axis"), 0)
    ids, out, name = node.input[1], node.output[0], node.name
    return [
        helper.make_node("Gather", [values, ids], [f"{out}_int8"], name=f"{name}_int8", axis=axis),
        helper.make_node("Gather", [scales, ids], [f"{out}_row_scale"], name=f"{name}_row_scale"),
        helper.make_node("Cast", [f"{out}_int8"], [f"{out}_float"], name=f"{name}_cast", to=onnx.TensorProto.FLOAT),
        helper.make_node("Mul", [f"{out}_float", f"{out}_row_scale"], [out], name=f"{name}_dequantize"),
    ]


def _matmul_twin(model: onnx.ModelProto, table: onnx.TensorProto, axis: int) -> tuple[str, str] | None:
    """ORT's per-channel INT8 copy of `table` (`<name>_quantized`, `<name>_scale`), when a Gather
    along `axis` can read it: channels along that axis, which must be the last one (so the gathered
    scales broadcast over the result's last axis), symmetric (all zero points 0)."""
    if axis != len(table.dims) - 1:
        return None
    found = {
        init.name: init
        for init in model.graph.initializer
        if init.name in (f"{table.name}_quantized", f"{table.name}_scale", f"{table.name}_zero_point")
    }
    values, scales = found.get(f"{table.name}_quantized"), found.get(f"{table.name}_scale")
    zero_points = found.get(f"{table.name}_zero_point")
    if values is None or scales is None or values.data_type != onnx.TensorProto.INT8:
        return None
    if list(scales.dims) != [table.dims[axis]]:
        return None
    if zero_points is not None and np.any(numpy_helper.to_array(zero_points)):
        return None
    return values.name, scales.name
