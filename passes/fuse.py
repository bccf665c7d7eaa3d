"""Operator fusion: ORT's transformer fusions, or Conv+BatchNormalization folding for CNNs."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import numpy as np
import onnx
from onnx import numpy_helper

from compiler.errors import PassError
from passes.base import GraphPass, PassContext, PassResult


class Fuse(GraphPass):
    """Fuse operators: attention/LayerNorm/GELU for transformers, Conv+BatchNormalization for CNNs.

    What it does: for transformers (model_type "bert", or "auto" when the graph's architecture is "attention")
    runs onnxruntime.transformers' optimizer at opt_level 0, so only its graph-level fusions are
    applied (Attention, EmbedLayerNormalization, SkipLayerNormalization, BiasGelu) and nothing
    tied to this machine's CPU is saved. For other models ("conv-bn", or "auto") folds every
    BatchNormalization that directly follows a Conv into the Conv's weights and bias. Conv+Relu
    and Conv+Clip are left alone: ONNX Runtime fuses them itself when it loads the model.

    Needs: for transformers, `ctx.transformer_shape` with num_heads and hidden_size. Run it after
    fold-constants in "fold" level: onnxslim's full rewrites hide attention from ORT's patterns.

    Guarantees: the same function up to float rounding; stats list what was fused and, for
    Conv+BN, every refused match with its reason. A model with nothing to fuse is returned
    unchanged (a CNN exported in eval mode often has BN folded already by the exporter).
    """

    name: ClassVar[str] = "fuse"
    tools: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime", "numpy")
    must_precede: ClassVar[tuple[str, ...]] = (
        "quantize-dynamic-int8",
        "quantize-static-int8",
        "convert-fp16",
        "quantize-int4-weights",
    )

    @dataclass(frozen=True)
    class Config:
        model_type: Literal["auto", "bert", "conv-bn"] = "auto"
        embed_layer_norm: bool = False  # fuse embeddings + LayerNorm (transformers); see _fuse_transformer

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        model_type = self.config.model_type
        if model_type == "auto":
            model_type = "bert" if ctx.architecture == "attention" else "conv-bn"
        if model_type == "bert":
            return _fuse_transformer(model, ctx, self.config.embed_layer_norm)
        return _fold_conv_bn(model)


def _fuse_transformer(model: onnx.ModelProto, ctx: PassContext, embed_layer_norm: bool) -> PassResult:
    from onnxruntime.transformers.fusion_options import FusionOptions
    from onnxruntime.transformers.optimizer import optimize_model

    shape = ctx.transformer_shape
    missing = [key for key in ("num_heads", "hidden_size") if not shape.get(key)]
    if missing:
        raise PassError(
            f"transformer fusion needs {' and '.join(missing)} of the model "
            "(the recipe's transformer shape); they are not known for this model"
        )
    copy = onnx.ModelProto()
    copy.CopyFrom(model)  # the optimizer rewrites the model it is given
    options = FusionOptions("bert")
    # A fused EmbedLayerNormalization hides the embedding tables from per-row INT8 quantization
    # (ORT then quantizes each table with one scale: measured min cosine 0.937 vs 0.965 on MiniLM,
    # same speed and size), so embeddings stay unfused unless asked for.
    options.enable_embed_layer_norm = embed_layer_norm
    optimized = optimize_model(
        copy,
        model_type="bert",
        num_heads=shape["num_heads"],
        hidden_size=shape["hidden_size"],
        opt_level=0,
        optimization_options=options,
    )
    fused = {op: count for op, count in optimized.get_fused_operator_statistics().items() if count}
    # The optimizer declares the contrib-op domain only when it saves to a file; we keep the
    # model in memory, so declare it here or onnx.checker rejects the fused nodes.
    declared = {opset.domain for opset in optimized.model.opset_import}
    used = {node.domain for node in optimized.model.graph.node}
    if "com.microsoft" in used - declared:
        optimized.model.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return PassResult(
        optimized.model,
        {
            "model_type": "bert",
            "fused": fused,
            "nodes_before": len(model.graph.node),
            "nodes_after": len(optimized.model.graph.node),
        },
    )


def _fold_conv_bn(model: onnx.ModelProto) -> PassResult:
    folded = onnx.ModelProto()
    folded.CopyFrom(model)
    graph = folded.graph
    initializers = {init.name: init for init in graph.initializer}
    graph_inputs = {value.name for value in graph.input}
    graph_outputs = {value.name for value in graph.output}
    producer = {output: node for node in graph.node for output in node.output}
    consumers = _uses(graph)

    constants = {name: init for name, init in initializers.items() if name not in graph_inputs}
    refused: list[dict[str, str]] = []
    removed: list[onnx.NodeProto] = []
    replaced: set[str] = set()
    for bn in graph.node:
        if bn.op_type != "BatchNormalization" or bn.input[0] not in producer:
            continue
        conv = producer[bn.input[0]]
        if conv.op_type != "Conv":
            continue
        reason = _check(conv, bn, constants, consumers, graph_outputs)
        if reason:
            refused.append({"conv": conv.name, "batch_norm": bn.name, "reason": reason})
            continue
        weight, bias = _folded_params(conv, bn, constants)
        base = conv.name or conv.output[0]
        weight_name, bias_name = f"{base}.bn_folded.weight", f"{base}.bn_folded.bias"
        graph.initializer.extend(
            [numpy_helper.from_array(weight, weight_name), numpy_helper.from_array(bias, bias_name)]
        )
        conv_output = conv.output[0]
        replaced.update(list(conv.input[1:]) + list(bn.input[1:]))
        del conv.input[1:]
        conv.input.extend([weight_name, bias_name])
        conv.output[0] = bn.output[0]  # the Conv now produces what the BN produced
        removed.append(bn)
        _drop_value_info(graph, conv_output)
    for bn in removed:
        graph.node.remove(bn)
    _drop_unused_initializers(graph, replaced)
    return PassResult(
        folded,
        {
            "model_type": "conv-bn",
            "conv_bn_folded": len(removed),
            "refused": refused,
            "nodes_before": len(model.graph.node),
            "nodes_after": len(graph.node),
        },
    )


def _check(
    conv: onnx.NodeProto,
    bn: onnx.NodeProto,
    constants: dict[str, onnx.TensorProto],
    consumers: Counter[str],
    graph_outputs: set[str],
) -> str | None:
    """Why Conv -> BatchNormalization cannot be folded (None when it can)."""
    params = list(conv.input[1:]) + list(bn.input[1:5])
    not_constant = [name for name in params if name and name not in constants]
    if not_constant:
        return f"not constant initializers: {not_constant}"
    if consumers.get(conv.output[0], 0) != 1 or conv.output[0] in graph_outputs:
        return f"Conv output '{conv.output[0]}' is used by more than the BatchNormalization"
    if len([name for name in bn.output if name]) > 1 or _attribute(bn, "training_mode", 0):
        return "BatchNormalization is in training mode (running statistics are outputs)"
    weight = constants[conv.input[1]]
    if weight.data_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16):
        return f"Conv weight has type {onnx.TensorProto.DataType.Name(weight.data_type)}, not float"
    channels = weight.dims[0]
    sizes = {name: int(np.prod(constants[name].dims)) for name in bn.input[1:5]}
    if any(size != channels for size in sizes.values()):
        return f"BatchNormalization parameters {sizes} do not match the Conv's {channels} output channels"
    return None


def _folded_params(
    conv: onnx.NodeProto, bn: onnx.NodeProto, constants: dict[str, onnx.TensorProto]
) -> tuple[np.ndarray, np.ndarray]:
    """W' = W * s, b' = (b - mean) * s + beta, with s = gamma / sqrt(var + eps), per output channel."""
    weight = numpy_helper.to_array(constants[conv.input[1]])
    dtype = weight.dtype
    # Computed in float64 so the fold adds no rounding beyond the final cast.
    has_bias = len(conv.input) > 2 and conv.input[2]
    bias = numpy_helper.to_array(constants[conv.input[2]]).astype(np.float64) if has_bias else np.zeros(weight.shape[0])
    gamma, beta, mean, var = (
        numpy_helper.to_array(constants[name]).astype(np.float64).ravel() for name in bn.input[1:5]
    )
    scale = gamma / np.sqrt(var + _attribute(bn, "epsilon", 1e-5))
    new_weight = weight.astype(np.float64) * scale.reshape(-1, *([1] * (weight.ndim - 1)))
    new_bias = (bias - mean) * scale + beta
    return new_weight.astype(dtype), new_bias.astype(dtype)


def _attribute(node: onnx.NodeProto, name: str, default: Any) -> Any:
    for attribute in node.attribute:
        if attribute.name == name:
            return onnx.helper.get_attribute_value(attribute)
    return default


def _uses(graph: onnx.GraphProto) -> Counter[str]:
    """How many node inputs name each value, subgraphs (If/Loop bodies) included."""
    uses: Counter[str] = Counter()
    for node in graph.node:
        uses.update(name for name in node.input if name)
        for attribute in node.attribute:
            for subgraph in [attribute.g] if attribute.type == attribute.GRAPH else attribute.graphs:
                uses.update(_uses(subgraph))
    return uses


def _drop_value_info(graph: onnx.GraphProto, name: str) -> None:
    for value in list(graph.value_info):
        if value.name == name:
            graph.value_info.remove(value)


def _drop_unused_initializers(graph: onnx.GraphProto, replaced: set[str]) -> None:
    """Remove the original Conv/BN parameters the folds left unused (ones shared elsewhere stay)."""
    used = _uses(graph)
    for init in [init for init in graph.initializer if init.name in replaced and init.name not in used]:
        graph.initializer.remove(init)
