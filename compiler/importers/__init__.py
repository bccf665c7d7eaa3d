"""Importers: a recipe's source -> FP32 ONNX + FP32 reference outputs on the verification data.

One entry point, `import_model`, dispatching on the recipe's source kind:
- `torch = "package.module:function"`: a factory returning an nn.Module (torch_factory.py);
- `huggingface_dir` / `huggingface_package`: a transformers model on disk (huggingface.py);
- `onnx = "path.onnx"` or `edgebuild build --onnx`: an existing ONNX file (onnx_file.py).

PyTorch sources are put in eval mode and their reference outputs computed *before* export (the
TorchScript exporter can leave a wrapped model in train mode); the export is then checked
against those outputs. PyTorch-level passes (structured pruning) run between the two, so the
reference stays the original FP32 model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compiler.config import ModelRecipe
from compiler.data import Dataset

from .onnx_file import import_onnx_file


def import_model(recipe: ModelRecipe, dataset: Dataset, torch_passes: list[Any], directory: Path) -> dict[str, Any]:
    """Write `model.onnx` + `reference.npz` into `directory` and return the stage's meta."""
    if recipe.source_kind == "onnx":
        if torch_passes:
            from compiler.errors import ConfigError

            raise ConfigError(
                f"pass '{torch_passes[0].name}' works on the PyTorch model; "
                "this build starts from an ONNX file, so remove it from the pass list"
            )
        return import_onnx_file(recipe, dataset, directory)
    from .torch_export import export_checked

    if recipe.source_kind == "torch":
        from .torch_factory import load_factory_module

        module, extra = load_factory_module(recipe), {}
    else:
        from .huggingface import load_huggingface_module

        module, extra = load_huggingface_module(recipe)
    meta = export_checked(module, recipe, dataset, torch_passes, directory)
    meta.update(extra)
    return meta
