"""A recipe for a bare ONNX file (`edgebuild build --onnx model.onnx`): inputs from its signature,
seeded random data, output cosine as the metric, family by what the graph computes."""

from __future__ import annotations

from pathlib import Path

from compiler.engine.specs import ModelRecipe
from compiler.families.single_graph.family import family_for_onnx


def recipe_for_onnx(path: Path) -> ModelRecipe:
    from compiler.importers.onnx_file import load_onnx, signature

    model = load_onnx(path)
    return ModelRecipe(
        name=path.stem,
        version="0.0.0",
        description=f"ONNX file {path}",
        path=None,
        family=family_for_onnx({node.op_type for node in model.graph.node}),
        source_kind="onnx",
        source=str(path.resolve()),
        inputs=signature(model, str(path)),
        outputs=signature(model, str(path), outputs=True),
        data={},
        metric={"kind": "output_cosine", "min_mean": 0.99},
        bench={},
    )


__all__ = ["recipe_for_onnx"]
