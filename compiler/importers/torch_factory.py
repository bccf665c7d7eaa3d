"""PyTorch module factory: `torch = "package.module:function"` in the recipe, from its workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from compiler.engine.fingerprint import closure
from compiler.engine.specs import ModelRecipe
from compiler.errors import ModelError
from compiler.importers.callables import load_callable, module_source


def load_factory_module(recipe: ModelRecipe) -> Any:
    """Call the factory and check it returned an nn.Module."""
    import torch

    factory = load_callable(recipe.source, f"{recipe.path}: field 'source.torch'", recipe.root)
    module = factory()
    if not isinstance(module, torch.nn.Module):
        raise ModelError(
            f"{recipe.path}: factory '{recipe.source}' returned {type(module).__name__}, not a torch.nn.Module"
        )
    return module


def factory_source_files(recipe: ModelRecipe) -> list[Path]:
    """The file that defines the factory (its code is the model's 'source' for cache keys)."""
    origin = module_source(recipe.source.partition(":")[0], recipe.root)
    return [origin] if origin is not None else []


def factory_code_files(recipe: ModelRecipe) -> list[Path]:
    """Every workspace or edgebuild module the factory imports (its training code, say), so that a
    change to any of them imports again."""
    from compiler.importers.callables import search_roots

    return closure([recipe.source.partition(":")[0]], search_roots(recipe.root))


__all__ = ["factory_code_files", "factory_source_files", "load_factory_module"]
