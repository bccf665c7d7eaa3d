"""PyTorch -> ONNX with the reference computed first and the export checked against it."""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
import torch

from compiler.engine.diagnosis import export_mismatch_message
from compiler.engine.specs import ModelRecipe
from compiler.errors import ModelError
from compiler.ort_session import run_batches, session
from compiler.progress import step

if TYPE_CHECKING:
    from compiler.families.single_graph.data import Dataset

OPSET = 17  # TorchScript exporter: works with every ORT tool, including the BERT attention fusion
EXPORT_MIN_COSINE = 0.9999


def _torch_outputs(
    module: torch.nn.Module, names: list[str], batches: list[dict[str, np.ndarray]]
) -> list[list[np.ndarray]]:
    results = []
    with torch.inference_mode():
        for feeds in batches:
            out = module(*(torch.from_numpy(feeds[n]) for n in names))
            out = out if isinstance(out, tuple | list) else (out,)
            results.append([t.detach().float().numpy() for t in out])
    return results


def save_reference(path: Path, outputs: list[list[np.ndarray]]) -> None:
    np.savez(path, **{f"{b}_{o}": array for b, batch in enumerate(outputs) for o, array in enumerate(batch)})


def load_reference(path: Path) -> list[list[np.ndarray]]:
    with np.load(path) as archive:
        keys = sorted(archive.files, key=lambda k: tuple(map(int, k.split("_"))))
        batches: dict[int, list[np.ndarray]] = {}
        for key in keys:
            batches.setdefault(int(key.split("_")[0]), []).append(archive[key])
    return [batches[b] for b in sorted(batches)]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))


def _export(module: torch.nn.Module, recipe: ModelRecipe, dataset: Dataset, path: Path) -> None:
    names = [spec.name for spec in recipe.inputs]
    output_names = [spec.name for spec in recipe.outputs] or ["output"]
    dynamic_axes = {
        spec.name: {i: d for i, d in enumerate(spec.shape) if isinstance(d, str)}
        for spec in (*recipe.inputs, *recipe.outputs)
    }
    example = tuple(torch.from_numpy(dataset.verify[0][n]) for n in names)
    onnx_export(module, example, path, names, output_names, dynamic_axes, recipe.name)
    module.eval()  # the exporter can leave wrapped models in train mode


def onnx_export(
    module: torch.nn.Module, args: tuple, path: Path, names: list[str], outputs: list[str], axes: dict, what: str
) -> None:
    """torch.onnx.export with the TorchScript exporter at OPSET; a failure is a one-line ModelError
    naming `what`. Tracer and deprecation warnings are about the exporter's internals, not the
    user's model: the numeric check after export is what decides whether the export is right."""
    step(f"exporting {path.name} (TorchScript exporter, opset {OPSET})")
    try:
        with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=names,
                output_names=outputs,
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )
    except Exception as error:  # the exporter raises many unrelated types for unsupported ops
        raise ModelError(f"{what}: torch.onnx.export failed: {str(error).splitlines()[0]}") from error


def export_checked(
    module: torch.nn.Module, recipe: ModelRecipe, dataset: Dataset, torch_passes: list[Any], directory: Path
) -> dict[str, Any]:
    """Reference outputs (original module, eval mode), torch passes, export, check vs PyTorch."""
    from passes.base import TorchPassContext

    names = [spec.name for spec in recipe.inputs]
    module.eval()
    step(f"computing FP32 reference outputs on {len(dataset.verify)} verification batches")
    reference = _torch_outputs(module, names, dataset.verify)
    save_reference(directory / "reference.npz", reference)

    if torch_passes:
        # The unmodified FP32 model is the size and latency baseline the pruned build is judged by.
        _export(module, recipe, dataset, directory / "baseline.onnx")
    pass_stats = []
    for torch_pass in torch_passes:
        step(f"pass {torch_pass.name} (PyTorch)")
        started = time.perf_counter()
        ctx = TorchPassContext(
            workdir=directory,
            example_inputs=tuple(torch.from_numpy(dataset.bench[n]) for n in names),
            train_data=dataset.train,
            eval_data=dataset.eval,
            fingerprint=dataset.digest(),
        )
        module, stats = torch_pass.run(module, ctx)
        module.eval()
        pass_stats.append(
            {
                "pass": torch_pass.name,
                "options": torch_pass.options(),
                "stats": stats,
                "seconds": round(time.perf_counter() - started, 2),
            }
        )

    path = directory / "model.onnx"
    _export(module, recipe, dataset, path)
    check_batches = dataset.verify[:8]
    expected = _torch_outputs(module, names, check_batches)
    actual = run_batches(session(path), check_batches)
    worst = min(_cosine(e, a) for eb, ab in zip(expected, actual, strict=True) for e, a in zip(eb, ab, strict=True))
    max_abs = max(
        float(np.abs(e - a).max()) for eb, ab in zip(expected, actual, strict=True) for e, a in zip(eb, ab, strict=True)
    )
    if worst < EXPORT_MIN_COSINE:
        outputs = [output for batch in expected for output in batch]
        raise ModelError(export_mismatch_message(recipe.name, worst, EXPORT_MIN_COSINE, outputs))
    model = onnx.load(str(path), load_external_data=False)
    return {
        "exporter": f"torch.onnx.export(dynamo=False) torch {torch.__version__}",
        "opset": OPSET,
        "export_check": {"min_cosine": worst, "max_abs_diff": max_abs, "batches": len(check_batches)},
        "torch_passes": pass_stats,
        "baseline": "baseline.onnx" if torch_passes else "model.onnx",
        "onnx_nodes": len(model.graph.node),
    }
