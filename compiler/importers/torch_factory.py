"""PyTorch module factory: `torch = "package.module:function"` in the recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compiler.config import ModelRecipe
from compiler.data import load_callable
from compiler.errors import ModelError


def load_factory_module(recipe: ModelRecipe) -> Any:
    """Call the factory and check it returned an nn.Module."""
    import torch

    factory = load_callable(recipe.source, f"{recipe.path}: field 'source.torch'")
    module = factory()
    if not isinstance(module, torch.nn.Module):
        raise ModelError(
            f"{recipe.path}: factory '{recipe.source}' returned {type(module).__name__}, not a torch.nn.Module"
        )
    return module


def factory_source_files(spec: str) -> list[Path]:
    """The file that defines the factory (its code is the model's 'source' for cache keys)."""
    import importlib.util

    module_name = spec.partition(":")[0]
    found = importlib.util.find_spec(module_name)
    if found is None or found.origin is None:
        return []
    return [Path(found.origin)]
