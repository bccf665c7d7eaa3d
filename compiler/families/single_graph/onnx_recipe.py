"""A recipe for a bare ONNX file (`edgebuild build --onnx model.onnx`): inputs from its signature,
seeded random data, output cosine as the metric, family by what the graph computes."""

from __future__ import annotations

import re
from pathlib import Path

from compiler.engine.specs import ModelRecipe
from compiler.errors import ConfigError, DataError
from compiler.families.single_graph.family import family_for_onnx

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def recipe_for_onnx(
    path: Path, name: str | None = None, data: Path | None = None, dynamic_axes: tuple[str, ...] = ()
) -> ModelRecipe:
    """The recipe of `path`, named `name` (default: the file's stem), with the samples of `data`
    (an .npz named by input) if given, and extra axis names that must stay dynamic."""
    from compiler.importers.onnx_file import load_onnx, signature

    if data is not None and not data.is_file():
        raise DataError(f"--data {data}: no such file (an .npz of arrays named by input, one sample per row)")
    model = load_onnx(path)
    if name is not None:
        check_name(name, "--name")
    return ModelRecipe(
        name=name or path.stem,
        version="0.0.0",
        description=f"ONNX file {path}",
        path=None,
        family=family_for_onnx({node.op_type for node in model.graph.node}),
        source_kind="onnx",
        source=str(path.resolve()),
        inputs=signature(model, str(path)),
        outputs=signature(model, str(path), outputs=True),
        data={"arrays": str(data.resolve())} if data is not None else {},
        metric={"kind": "output_cosine", "min_mean": 0.99},
        bench={},
        extra={"dynamic_axes": tuple(dynamic_axes)} if dynamic_axes else {},
    )


def check_name(name: str, where: str) -> None:
    """A model name is a directory name under artifacts/: letters, digits, '.', '_' and '-'."""
    if not NAME.fullmatch(name):
        raise ConfigError(f"{where} '{name}': use letters, digits, '.', '_' and '-' (it names a directory)")


__all__ = ["check_name", "recipe_for_onnx"]
