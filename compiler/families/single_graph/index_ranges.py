"""Valid values for a model's integer inputs: the size of the tables they index.

An integer input that reaches a Gather as its indices (an Embedding, a lookup table), through ops
that keep values as they are (Cast, Reshape, Unsqueeze, ...), must stay below that table's size
along the gathered axis; generated data for a bare ONNX file draws from [0, bound) so the model runs.
Inputs that reach no table keep the default range (DEFAULT_BOUND).
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import onnx

DEFAULT_BOUND = 100  # integer inputs that index no table we can see: token-id-like values
# Ops whose output holds the same values as their first input (rearranged or retyped).
VALUE_PRESERVING = frozenset(
    {"Cast", "Reshape", "Unsqueeze", "Squeeze", "Flatten", "Identity", "Expand", "Transpose", "Tile", "Slice", "Concat"}
)


def index_bounds(model: onnx.ModelProto) -> dict[str, int]:
    """{input name: exclusive upper bound} for the integer inputs that index a constant table."""
    shapes = {tensor.name: list(tensor.dims) for tensor in model.graph.initializer}
    for node in model.graph.node:  # Constant tables too
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            shapes[node.output[0]] = list(node.attribute[0].t.dims)
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    integer = (onnx.TensorProto.INT64, onnx.TensorProto.INT32, onnx.TensorProto.INT16, onnx.TensorProto.INT8)
    bounds: dict[str, int] = {}
    for value in model.graph.input:
        if value.name in shapes or value.type.tensor_type.elem_type not in integer:
            continue
        found = _tables_reached(value.name, consumers, shapes)
        if found:
            bounds[value.name] = min(found)
    return bounds


def _tables_reached(start: str, consumers: dict[str, list[onnx.NodeProto]], shapes: dict[str, list[int]]) -> list[int]:
    sizes, seen, frontier = [], {start}, [start]
    while frontier:
        name = frontier.pop()
        for node in consumers.get(name, []):
            if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == name:
                table = shapes.get(node.input[0])
                axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
                if table:
                    sizes.append(table[axis % len(table)])
            elif node.op_type in VALUE_PRESERVING and node.input and node.input[0] == name:
                for output in node.output:
                    if output not in seen:
                        seen.add(output)
                        frontier.append(output)
    return sizes


def file_index_bounds(path: Path) -> dict[str, int]:
    """index_bounds of the ONNX file `path` (weights not loaded: only the tables' shapes are read)."""
    return index_bounds(onnx.load(str(path), load_external_data=False))


__all__ = ["DEFAULT_BOUND", "file_index_bounds", "index_bounds"]
