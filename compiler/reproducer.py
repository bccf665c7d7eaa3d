"""When a pass fails, leave what it takes to replay just that pass, and replay it.

`write` stores the pass's input model and its resolved options under
`artifacts/cache/repro/<pass>-<input sha256>/`; `edgebuild replay DIR` runs that one pass again on
that model, with a context rebuilt from the model itself: calibration batches generated from its
input signature and fidelity measured as output cosine against the input model. The replayed
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
    family: str,
    transformer_shape: dict[str, int],
    done: list[str],
) -> Path:
    """Store the failing pass's input and options; returns the reproducer directory."""
    from compiler.cache import sha256_file

    directory = root / "repro" / f"{pass_name}-{sha256_file(source)}"
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, directory / "input.onnx")
    manifest = {
        "pass": pass_name,
        "options": options,
        "family": family,
        "transformer_shape": transformer_shape,
        "after": done,
    }
    (directory / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return directory


def replay(directory: Path) -> dict[str, Any]:
    """Run the stored pass on the stored model; returns its stats (a PassError propagates)."""
    from compiler.data import generated_dataset
    from compiler.importers.onnx_file import load_onnx, signature
    from compiler.runtime import run_batches, session
    from compiler.verify import score
    from passes.base import PassContext, apply_pass, config_from_options
    from passes.catalogue import CATALOGUE

    manifest_path = directory / MANIFEST
    if not manifest_path.is_file():
        raise ModelError(f"{directory}: not a reproducer (no {MANIFEST}); failed builds print the directory to use")
    manifest = json.loads(manifest_path.read_text())
    model = load_onnx(directory / "input.onnx")
    dataset = generated_dataset(signature(model, str(directory / "input.onnx")), {})
    reference = run_batches(session(model), dataset.verify)
    metric = {"kind": "output_cosine", "min_mean": 0.99}

    def evaluate(candidate: Any) -> Any:
        return score(metric, reference, run_batches(session(candidate), dataset.verify), dataset.verify, None)

    pass_class = CATALOGUE[manifest["pass"]]
    graph_pass = pass_class(config_from_options(pass_class.Config, manifest["options"], str(manifest_path)))
    context = PassContext(
        workdir=directory,
        model_family=manifest["family"],
        calibration=lambda: dataset.calibration,
        evaluate=evaluate,
        fingerprint="replay",
        transformer_shape=manifest["transformer_shape"],
    )
    result = apply_pass(graph_pass, model, context, manifest["after"])
    return result.stats
