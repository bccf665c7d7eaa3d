"""Float16 weights and compute, with float32 inputs/outputs by default (ONNX Runtime's converter)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import ClassVar

import onnx

from compiler import onnx_io
from compiler.errors import PassError
from passes.base import GraphPass, PassContext, PassResult, nothing_to_do

_FLOAT = onnx.TensorProto.FLOAT
_FLOAT16 = onnx.TensorProto.FLOAT16


class ConvertFp16(GraphPass):
    """Convert float32 weights and compute to float16 (halves the weights; CPUs gain no speed).

    What it does: runs onnxruntime.transformers.float16.convert_float_to_float16. Float32
    initializers, Constant nodes and intermediate tensors become float16; ops in `op_block_list`
    (None = ORT's default list of ops without good float16 kernels) and nodes named in
    `node_block_list` stay float32 behind Cast nodes. Values beyond float16's range are clamped.
    With `keep_io_types` the graph inputs and outputs stay float32, so callers do not change.

    Needs: a model with float32 tensors. Put it after fusion. It is an alternative to INT8
    quantization, not a step before or after it: the quantizers read float32 weights, and a
    conversion after them would also rewrite their float32 scales.

    Guarantees: same outputs up to float16 rounding (about 3 significant digits); stats give the
    file size before and after and how many initializers are float16.
    """

    name: ClassVar[str] = "convert-fp16"
    tools: ClassVar[tuple[str, ...]] = ("onnx", "onnxruntime")
    conflicts_with: ClassVar[tuple[str, ...]] = ("quantize-dynamic-int8", "quantize-static-int8")

    @dataclass(frozen=True)
    class Config:
        keep_io_types: bool = True
        op_block_list: tuple[str, ...] | None = None  # op types kept in float32; None = ORT's default
        node_block_list: tuple[str, ...] = ()  # node names kept in float32

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        from onnxruntime.transformers.float16 import convert_float_to_float16
        from onnxruntime.transformers.onnx_model import OnnxModel

        if not _has_float32_weights(model):
            types = Counter(onnx.TensorProto.DataType.Name(init.data_type) for init in model.graph.initializer)
            return nothing_to_do(
                model, f"no float32 initializer or Constant to convert (initializer types: {dict(types) or 'none'})"
            )
        node_names = {node.name for node in model.graph.node}
        unknown = [name for name in self.config.node_block_list if name not in node_names]
        if unknown:
            raise PassError(f"node_block_list names nodes that are not in the graph: {unknown}")
        copy = onnx.ModelProto()
        copy.CopyFrom(model)  # the converter edits the model it is given
        converted = convert_float_to_float16(
            copy,
            keep_io_types=self.config.keep_io_types,
            op_block_list=list(self.config.op_block_list) if self.config.op_block_list is not None else None,
            node_block_list=list(self.config.node_block_list) or None,
        )
        # With keep_io_types the converter appends the Casts of float inputs at the end of the
        # node list, after their consumers; ONNX requires topological order.
        OnnxModel.graph_topological_sort(converted.graph, is_deterministic=True)
        types = Counter(init.data_type for init in converted.graph.initializer)
        return PassResult(
            converted,
            {
                "bytes_before": onnx_io.tensor_bytes(model),
                "bytes_after": onnx_io.tensor_bytes(converted),
                "initializers_float16": types[_FLOAT16],
                "initializers_float32": types[_FLOAT],
                "cast_nodes_added": _count(converted, "Cast") - _count(model, "Cast"),
            },
        )


def _has_float32_weights(model: onnx.ModelProto) -> bool:
    if any(init.data_type == _FLOAT for init in model.graph.initializer):
        return True
    return any(
        node.op_type == "Constant" and attribute.name == "value" and attribute.t.data_type == _FLOAT
        for node in model.graph.node
        for attribute in node.attribute
    )


def _count(model: onnx.ModelProto, op_type: str) -> int:
    return sum(node.op_type == op_type for node in model.graph.node)
