"""The one-graph import: a recipe's source -> FP32 ONNX + FP32 reference outputs on its verification data.

Dispatching on the recipe's source kind:
- `torch = "package.module:function"`: a factory returning an nn.Module, from the recipe's
  workspace (compiler/importers/torch_factory.py);
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

from compiler.engine.specs import ModelRecipe
from compiler.errors import ConfigError
from compiler.families.single_graph.data import Dataset


def import_model(recipe: ModelRecipe, dataset: Dataset, torch_passes: list[Any], directory: Path) -> dict[str, Any]:
    """Write `model.onnx` + `reference.npz` into `directory` and return the stage's meta."""
    if recipe.source_kind == "onnx":
        if torch_passes:
            raise ConfigError(
                f"pass '{torch_passes[0].name}' works on the PyTorch model; "
                "this build starts from an ONNX file, so remove it from the pass list"
            )
        from compiler.importers.onnx_file import import_onnx_file

        return import_onnx_file(recipe, dataset, directory)
    from compiler.importers.torch_export import export_checked

    if recipe.source_kind == "torch":
        from compiler.importers.torch_factory import load_factory_module

        module, extra = load_factory_module(recipe), {}
    else:
        from compiler.importers.huggingface import load_huggingface_module

        module, extra = load_huggingface_module(recipe)
    meta = export_checked(module, recipe, dataset, torch_passes, directory)
    meta.update(extra)
    return meta


def torch_module(recipe: ModelRecipe) -> Any:
    """The recipe's FP32 PyTorch model (what the import exports), for backends converting from PyTorch."""
    if recipe.source_kind == "torch":
        from compiler.importers.torch_factory import load_factory_module

        return load_factory_module(recipe)
    from compiler.importers.huggingface import load_huggingface_module

    return load_huggingface_module(recipe)[0]


def tokenizer_dir(recipe: ModelRecipe) -> Path | None:
    """The model directory whose tokenizer text data is encoded with (Hugging Face sources)."""
    if recipe.source_kind.startswith("huggingface"):
        from compiler.importers.huggingface import model_directory

        return model_directory(recipe)
    return None


__all__ = ["import_model", "tokenizer_dir", "torch_module"]
