"""When a pass fails, leave what it takes to replay just that pass, and replay it.

`write` stores the pass's input model and its resolved options under
`artifacts/cache/repro/<pass>-<input sha256>/`; `edgebuild replay DIR` runs that one pass again on
that model, with a context the family that builds bare ONNX files rebuilds from the model itself:
calibration batches generated from its input signature and fidelity measured as output cosine
against the input model. The replayed
context is not the recipe's data, so a failure that depends on the data may replay differently;
the input model and the options are exact.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from compiler.errors import ModelError

MANIFEST = "pass.json"


def write(
    root: Path,
    pass_name: str,
    options: dict[str, Any],
    source: Path,
    architecture: str,
    transformer_shape: dict[str, int],
    done: list[str],
) -> Path:
    """Store the failing pass's input and options; returns the reproducer directory."""
    from compiler.digests import sha256_file

    directory = root / "repro" / f"{pass_name}-{sha256_file(source)}"
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, directory / "input.onnx")
    manifest = {
        "pass": pass_name,
        "options": options,
        "architecture": architecture,
        "transformer_shape": transformer_shape,
        "after": done,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return directory


def replay(directory: Path) -> dict[str, Any]:
    """Run the stored pass on the stored model; returns its stats (a PassError propagates)."""
    from compiler.families.catalogue import family, recipe_for_onnx_file
    from compiler.importers.onnx_file import load_onnx
    from passes.base import apply_pass, config_from_options
    from passes.catalogue import CATALOGUE

    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ModelError(f"{directory}: not a reproducer (no {MANIFEST}); failed builds print the directory to use")
    manifest = json.loads(manifest_path.read_text())
    model = load_onnx(directory / "input.onnx")
    recipe = recipe_for_onnx_file(directory / "input.onnx")
    context = family(recipe.family).replay_context(
        recipe, directory, manifest.get("architecture", "other"), manifest["transformer_shape"]
    )
    pass_class = CATALOGUE[manifest["pass"]]
    graph_pass = pass_class(config_from_options(pass_class.Config, manifest["options"], str(manifest_path)))
    result = apply_pass(graph_pass, model, context, manifest["after"])
    return result.stats
