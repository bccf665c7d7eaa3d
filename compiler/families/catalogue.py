"""The one explicit catalogue of model families: recipe `family = "..."` -> class.

Entries are "module:Class" strings, imported when a recipe names them, so loading a recipe imports
one family's light declarations and a stage's key holds the family that runs. Adding a family is
one folder under compiler/families/ with a `ModelFamily` subclass and one line here.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

from compiler.dotted import resolve
from compiler.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from pathlib import Path

    from compiler.engine.specs import ModelRecipe
    from compiler.families.base import ModelFamily

CATALOGUE: dict[str, str] = {
    "transformer": "compiler.families.single_graph.family:TransformerFamily",
    "cnn": "compiler.families.single_graph.family:CnnFamily",
    "generic": "compiler.families.single_graph.family:GenericFamily",
    "speech": "compiler.families.speech.family:SpeechFamily",
}
FAMILY_NAMES = tuple(CATALOGUE)
# Who builds a bare ONNX file (`edgebuild build --onnx`): a function path -> recipe.
ONNX_FILE_RECIPE = "compiler.families.single_graph.onnx_recipe:recipe_for_onnx"


@cache
def family(name: str) -> ModelFamily:
    """The family named `name` (one instance per process)."""
    if name not in CATALOGUE:
        raise ConfigError(f"unknown model family '{name}'; {did_you_mean(name, FAMILY_NAMES)}")
    instance: ModelFamily = resolve(CATALOGUE[name])()
    return instance


def recipe_for_onnx_file(
    path: Path, name: str | None = None, data: Path | None = None, dynamic_axes: tuple[str, ...] = ()
) -> ModelRecipe:
    """A recipe for a bare ONNX file, from the family that builds them (`--name`, `--data`, `--dynamic-axis`)."""
    recipe: ModelRecipe = resolve(ONNX_FILE_RECIPE)(path, name, data, dynamic_axes)
    return recipe


def pass_list_keys() -> tuple[str, ...]:
    """Every key a target's [passes] table may use (families and their graphs), in catalogue order."""
    return tuple(dict.fromkeys(key for name in FAMILY_NAMES for key in family(name).all_pass_list_keys()))


__all__ = ["CATALOGUE", "FAMILY_NAMES", "ONNX_FILE_RECIPE", "family", "pass_list_keys", "recipe_for_onnx_file"]
