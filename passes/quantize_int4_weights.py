"""4-bit block-quantized MatMul weights (MatMulNBits), weight-only, with ONNX Runtime's quantizer."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import onnx

from compiler import onnx_io
from compiler.errors import ConfigError, PassError, did_you_mean
from passes.base import GraphPass, PassContext, PassResult, nothing_to_do
from passes.mixed_precision import MixedPrecisionOptions, search_if_enabled

_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)


class QuantizeInt4Weights(GraphPass):
    """Quantize MatMul weights to 4 bits in blocks (MatMulNBits); activations stay float.

    What it does: every MatMul whose second input is a float initializer of rank 2 becomes a
    com.microsoft MatMulNBits node holding 4-bit weights, quantized round-to-nearest in blocks of
    `block_size` values along the input dimension, with one float scale (and, unless `symmetric`,
    one zero point) per block. `accuracy_level` sets the MatMulNBits compute type (ORT docs:
    0 unset, 1 fp32, 2 fp16, 3 bf16, 4 int8 activations). Nodes in `nodes_to_exclude` keep
    float weights. This shrinks weights about 6x; on CPUs it brings no speed-up by itself.

    Needs: MatMul nodes with constant weights (Gemm, Conv and fused Attention are not touched).
    Runs on ONNX Runtime only (MatMulNBits is a contrib op).

    A tied table (a float initializer that a Gather also reads, e.g. Whisper's token embedding
    used as the output projection) is then read from the 4-bit copy by GatherBlockQuantized, so
    the float table is not kept beside it (`tied_tables_shared` in the stats).

    Guarantees: the same graph inputs/outputs; outputs differ by 4-bit rounding of the weights.
    Stats: MatMuls quantized and left, tied tables shared, file size before and after.
    """

    name: ClassVar[str] = "quantize-int4-weights"
    tools: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime", "numpy")
    conflicts_with: ClassVar[tuple[str, ...]] = ("quantize-dynamic-int8", "quantize-static-int8")

    @dataclass(frozen=True)
    class Config(MixedPrecisionOptions):
        block_size: int = 32  # weights per scale, along the input dimension; a power of two >= 16
        symmetric: bool = True  # True: int4 without zero points; False: uint4 with zero points
        accuracy_level: int | None = None  # MatMulNBits compute type, 0-4; None leaves it to ORT
        nodes_to_exclude: tuple[str, ...] = ()  # MatMul node names to keep in float

        def __post_init__(self) -> None:
            if self.block_size < 16 or self.block_size & (self.block_size - 1):
                raise ConfigError(
                    f"quantize-int4-weights: option 'block_size' must be a power of two "
                    f">= 16 (MatMulNBits), got {self.block_size}"
                )
            if self.accuracy_level is not None and not 0 <= self.accuracy_level <= 4:
                raise ConfigError(
                    f"quantize-int4-weights: option 'accuracy_level' must be 0-4, got {self.accuracy_level}"
                )

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        config = self.config
        candidates = _constant_weight_matmuls(model)
        if not candidates:
            ops = Counter(
                node.op_type
                for node in model.graph.node
                if node.op_type in ("MatMul", "Gemm", "Conv", "Attention", "MatMulNBits")
            )
            return nothing_to_do(
                model,
                f"no MatMul with a constant float weight (weight-carrying ops found: "
                f"{dict(ops) or 'none'}; Gemm/Conv/Attention are not handled)",
            )
        unknown = [name for name in config.nodes_to_exclude if name not in candidates]
        if unknown:
            raise PassError(
                f"nodes_to_exclude names '{unknown[0]}', which is not a MatMul with a constant "
                f"weight; {did_you_mean(unknown[0], candidates)}"
            )

        def quantize(excluded: tuple[str, ...]) -> onnx.ModelProto:
            return _quantize(model, config, (*config.nodes_to_exclude, *excluded))

        quantized = quantize(())
        ops = Counter(node.op_type for node in quantized.graph.node)
        if not ops["MatMulNBits"]:
            raise PassError(f"the quantizer left every MatMul in float (candidates: {sorted(candidates)[:5]})")
        remaining = [name for name in candidates if name not in config.nodes_to_exclude]
        quantized, _, search = search_if_enabled(config, model, quantize, quantized, remaining, ctx)
        ops = Counter(node.op_type for node in quantized.graph.node)
        return PassResult(
            quantized,
            {
                "matmuls_quantized": ops["MatMulNBits"],
                "matmuls_left_float": ops["MatMul"],
                "tied_tables_shared": ops["GatherBlockQuantized"],
                "excluded": [*config.nodes_to_exclude, *search.get("mixed_precision", {}).get("excluded_nodes", [])],
                "bytes_before": onnx_io.tensor_bytes(model),
                "bytes_after": onnx_io.tensor_bytes(quantized),
                **search,
            },
        )


def _quantize(model: onnx.ModelProto, config: QuantizeInt4Weights.Config, excluded: tuple[str, ...]) -> onnx.ModelProto:
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # the quantizer edits the model it is given
    algo = DefaultWeightOnlyQuantConfig(
        block_size=config.block_size, is_symmetric=config.symmetric, accuracy_level=config.accuracy_level, bits=4
    )
    quantizer = MatMulNBitsQuantizer(copy, nodes_to_exclude=list(excluded), algo_config=algo)
    # It logs one INFO line per node; the build report carries the counts instead.
    logger = logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer")
    level = logger.level
    logger.setLevel(max(level, logging.WARNING))
    try:
        quantizer.process()
    finally:
        logger.setLevel(level)
    result = quantizer.model.model
    share_tied_tables(result)
    return result


def share_tied_tables(model: onnx.ModelProto) -> list[str]:
    """In place: a Gather that still reads the float table a MatMulNBits was quantized from (a tied
    embedding, as in Whisper's decoder: the output projection is the token table) reads the 4-bit
    blocks instead, through com.microsoft GatherBlockQuantized, so the float copy goes.

    `Gather(T [K, N], ids [n], axis=1)` becomes `Transpose(Reshape(GatherBlockQuantized(T_Q4
    [N, blocks, blob], ids, scales [N, blocks, 1], gather_axis=0, quantize_axis=2), [-1, K]))`:
    the gathered rows are exactly the MatMul's dequantized columns (symmetric blocks, default
    zero point 8, low nibble first, as MatMulNBits stores them). Only 1-D ids and symmetric
    quantization are rewritten; returns the names of the tables shared.
    """
    from onnx import helper, numpy_helper, shape_inference

    initializers = {init.name: init for init in model.graph.initializer}
    nbits = {node.input[1]: node for node in model.graph.node if node.op_type == "MatMulNBits"}
    uses = Counter(name for node in model.graph.node for name in node.input)
    values = [*shape_inference.infer_shapes(model).graph.value_info, *model.graph.input]
    ranks = {v.name: len(v.type.tensor_type.shape.dim) for v in values if v.type.tensor_type.HasField("shape")}
    shared, nodes = [], []
    for node in model.graph.node:
        axis = next((attr.i for attr in node.attribute if attr.name == "axis"), 0)
        table = initializers.get(node.input[0]) if node.op_type == "Gather" else None
        matmul = nbits.get(f"{table.name}_Q4") if table is not None else None
        if (
            table is None
            or matmul is None
            or len(table.dims) != 2
            or axis != 1
            or uses[table.name] != 1
            or len(matmul.input) > 3
            or ranks.get(node.input[1]) != 1
        ):
            nodes.append(node)
            continue
        attrs = {attr.name: attr.i for attr in matmul.attribute}
        scales = numpy_helper.to_array(initializers[matmul.input[2]])
        blocks = scales.size // attrs["N"]
        name, out, k = node.name, node.output[0], int(table.dims[0])
        model.graph.initializer.remove(table)
        model.graph.initializer.extend(
            [
                numpy_helper.from_array(scales.reshape(attrs["N"], blocks, 1), f"{table.name}_gather_scales"),
                numpy_helper.from_array(np.array([-1, k], dtype=np.int64), f"{table.name}_gather_shape"),
            ]
        )
        nodes += [
            helper.make_node(
                "GatherBlockQuantized",
                [matmul.input[1], node.input[1], f"{table.name}_gather_scales"],
                [f"{out}_rows"],
                name=f"{name}_int4",
                domain="com.microsoft",
                gather_axis=0,
                quantize_axis=2,
                block_size=attrs["block_size"],
                bits=4,
            ),
            helper.make_node(
                "Reshape", [f"{out}_rows", f"{table.name}_gather_shape"], [f"{out}_flat"], name=f"{name}_reshape"
            ),
            helper.make_node("Transpose", [f"{out}_flat"], [out], name=f"{name}_transpose", perm=[1, 0]),
        ]
        shared.append(table.name)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return shared


def _constant_weight_matmuls(model: onnx.ModelProto) -> list[str]:
    """Names of MatMul nodes whose weight (input B) is a float initializer of rank 2."""
    graph_inputs = {value.name for value in model.graph.input}
    weights = {init.name: init for init in model.graph.initializer if init.name not in graph_inputs}
    names = []
    for node in model.graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "MatMul" else None
        if weight is not None and weight.data_type in _FLOAT_TYPES and len(weight.dims) == 2:
            names.append(node.name)
    return names
