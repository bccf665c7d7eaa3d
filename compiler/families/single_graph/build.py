"""One build of a one-graph model: import, the scores of every row, latency, what ships.

Stage keys hold what runs: the import's key the importing code and the recipe's factory module
(with what it imports from the workspace); a score's key the evaluator's code and, for the
compiled artifact, the backend's fingerprint (the code that runs it: ORT, TVM's VM or qemu, the
LiteRT worker, the MIL interpreter).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from compiler import onnx_io
from compiler.backends.base import Backend, CompiledGraph, CompileRequest
from compiler.digests import sha256_file, sha256_tree, tool_versions
from compiler.engine.cache import Cache, stage_key
from compiler.engine.fingerprint import code_digest
from compiler.engine.record import StageRow
from compiler.engine.specs import ModelRecipe, TargetSpec
from compiler.families.base import FamilyBuild, Finished, Imported, Scored
from compiler.families.single_graph.data import Dataset, load_dataset
from compiler.families.single_graph.importing import tokenizer_dir
from compiler.progress import step
from passes.base import Fidelity, PassContext, TorchPass

EVALUATOR = "compiler.families.single_graph.evaluator"
IMPORTING = ("compiler.families.single_graph.importing", "compiler.families.single_graph.data")


class SingleGraphBuild(FamilyBuild):
    def __init__(
        self, recipe: ModelRecipe, target: TargetSpec, backend: Backend, cache: Cache, architecture: str
    ) -> None:
        super().__init__(recipe, target, backend, cache)
        self.architecture = architecture
        step(f"loading data for {recipe.name}")
        self.dataset: Dataset = load_dataset(recipe, tokenizer_dir=tokenizer_dir(recipe))
        self.data_digest = self.dataset.digest()

    # -- import -----------------------------------------------------------------------------------

    def import_stage(self, torch_passes: list[TorchPass]) -> Imported:
        from compiler.families.catalogue import family
        from compiler.families.single_graph.evaluator import Evaluator
        from compiler.families.single_graph.importing import import_model
        from compiler.importers.torch_export import load_reference

        recipe, dataset = self.recipe, self.dataset
        source_digest = sha256_tree(family(recipe.family).source_files(recipe))
        from compiler.importers.callables import search_roots

        factory = [recipe.source.partition(":")[0]] if recipe.source_kind == "torch" else []
        roots = search_roots(recipe.root)
        key = stage_key(
            "import",
            inputs={"source": source_digest, "data": self.data_digest},
            config={
                # Only what changes the export: a new metric budget must not re-run the import.
                "recipe": {k: getattr(recipe, k) for k in ("source_kind", "source", "inputs", "outputs")},
                "torch_passes": [(p.name, p.options(), p.fingerprint()) for p in torch_passes],
            },
            code=code_digest([*IMPORTING, *factory], roots),
            tools=tool_versions("torch", "transformers", "onnx", "onnxruntime"),
        )

        def run_import(directory: Path) -> dict[str, Any]:
            step(f"importing {recipe.name} ({recipe.source_kind}: {recipe.source})")
            started = time.perf_counter()
            meta = import_model(recipe, dataset, torch_passes, directory)
            return {**meta, "_seconds": round(time.perf_counter() - started, 2)}

        imported = self.cache.get_or_build("import", key, run_import)
        if imported.hit:
            step("import: cached")
        self.reference_digest = sha256_file(imported.path / "reference.npz")
        self.evaluate = Evaluator(
            recipe, dataset, load_reference(imported.path / "reference.npz"), self.target.emulated_batches
        )
        self.transformer_shape = imported.meta.get("transformer_shape", {})
        # Row 0 is the unmodified FP32 export: the baseline every size and latency ratio is against.
        rows = [
            StageRow(
                stage="import",
                kind="import",
                path=imported.path / imported.meta.get("baseline", "model.onnx"),
                cached=imported.hit,
                seconds=imported.meta.get("_seconds", 0.0),
                stats={"exporter": imported.meta.get("exporter"), "export_check": imported.meta.get("export_check")},
            )
        ]
        for torch_pass in imported.meta["torch_passes"]:  # PyTorch-level passes run inside the import stage
            rows.append(
                StageRow(
                    stage=torch_pass["pass"],
                    kind="pass",
                    path=imported.path / "model.onnx",
                    cached=imported.hit,
                    seconds=torch_pass["seconds"],
                    stats=torch_pass["stats"],
                    options=torch_pass["options"],
                )
            )
        meta = {k: v for k, v in imported.meta.items() if not k.startswith("_")}
        return Imported({"model": imported.path / "model.onnx"}, rows, source_digest, meta)

    # -- passes -----------------------------------------------------------------------------------

    def pass_context(self, graph: str) -> PassContext:
        fingerprint = stage_key(
            "context",
            inputs={"data": self.data_digest, "reference": self.reference_digest},
            config={
                "metric": self.recipe.metric,
                "architecture": self.architecture,
                "shape": self.transformer_shape,
                "dynamic_axes": self.recipe.declared_axes(),
            },
            code=code_digest([EVALUATOR]),  # a sensitivity search scores candidates with it
            tools=tool_versions("onnxruntime", "numpy"),
        )
        return PassContext(
            workdir=self.cache.scratch(),
            architecture=self.architecture,
            calibration=lambda: self.dataset.calibration,
            evaluate=self.evaluate,
            fingerprint=fingerprint,
            transformer_shape=self.transformer_shape,
            dynamic_axes=frozenset(self.recipe.declared_axes()),
        )

    def _scored(self, path: Path, backend: Backend | None) -> tuple[Fidelity, bool]:
        """The fidelity of `path` (an ONNX graph, or the backend's artifact), cached by its bytes."""
        slow = backend is not None and backend.execution(path).slow
        onnx_graph = backend is None or backend.graph_artifact  # its weights may be external data
        graph_digest = onnx_io.digest(path) if onnx_graph else sha256_file(path)
        key = stage_key(
            "score",
            inputs={"model": graph_digest, "data": self.data_digest, "reference": self.reference_digest},
            config={
                "metric": self.recipe.metric,
                "runtime": backend.runtime if backend else None,  # None: an ONNX graph, on ONNX Runtime here
                "emulated_batches": self.target.emulated_batches if slow else None,
            },
            code=code_digest([EVALUATOR, __name__]) + (backend.fingerprint() if backend else ""),
            tools=tool_versions("onnxruntime", "numpy", *(backend.tools if backend else ())),
        )

        def measure(_: Path) -> dict[str, Any]:
            if backend is not None:
                execution = backend.execution(path)
                count = len(self.evaluate.batch_indices(execution.slow))
                step(f"verifying {path.name} ({execution.how}) on {count} of {len(self.dataset.verify)} batches")
            return self.evaluate(path, backend).__dict__

        entry = self.cache.get_or_build("score", key, measure)
        return Fidelity(**entry.meta), entry.hit

    def score_graph(self, graph: str, row: StageRow) -> Fidelity:
        return self._scored(row.path, None)[0]

    # -- compilation ------------------------------------------------------------------------------

    def compile_request(self, graph: str, model: Path, passes_applied: tuple[str, ...]) -> CompileRequest:
        from compiler.families.single_graph.importing import torch_module

        recipe = self.recipe
        return CompileRequest(
            model=model,
            name=recipe.name,
            graph=graph,
            shapes={name: list(array.shape) for name, array in self.dataset.bench.items()},
            cache_root=self.cache.root,
            calibration=lambda: calibration_arrays(self.dataset),
            inputs=recipe.inputs,
            output_names=tuple(spec.name for spec in recipe.outputs),
            torch_module=(lambda: torch_module(recipe)) if recipe.source_kind != "onnx" else None,
            passes_applied=passes_applied,
        )

    def score_compiled(self, compiled: dict[str, CompiledGraph]) -> Scored:
        fidelity, hit = self._scored(compiled["model"].artifact, self.backend)
        return Scored(fidelity, hit)

    # -- latency and what ships -------------------------------------------------------------------

    def latency(self, rows: list[StageRow], compiled: dict[str, CompiledGraph]) -> dict[str, Any]:
        from compiler.families.single_graph.timing import time_rows

        return time_rows(rows, self.dataset, self.backend)

    def finish(self, rows: list[StageRow], compiled: dict[str, CompiledGraph], scored: Scored) -> Finished:
        graph = compiled["model"]
        name = self.backend.shipped_name(self.recipe.name, graph.artifact)
        inputs, outputs = self.backend.signature(graph)
        memory = None
        if not self.backend.graph_artifact:  # not a graph packaging can read: memory from the last graph
            from compiler.packaging.manifest import estimate_memory

            memory = estimate_memory(graph.source, {n: list(a.shape) for n, a in self.dataset.bench.items()})
            memory["weights_bytes"] = graph.artifact.stat().st_size
            memory["total_bytes"] = memory["weights_bytes"] + memory["activations_bytes"]
        return Finished(inputs, outputs, name, self.backend.ship(graph, name), memory)


def calibration_arrays(dataset: Dataset) -> dict[str, np.ndarray]:
    """The recipe's calibration batches, concatenated per input (what a converter calibrates on);
    batches of different sequence lengths are zero-padded to the longest (token id 0 is padding,
    with attention mask 0)."""
    names = list(dataset.calibration[0]) if dataset.calibration else []
    arrays = {}
    for name in names:
        parts = [batch[name] for batch in dataset.calibration]
        longest = np.max([part.shape for part in parts], axis=0)
        widths = [[(0, 0), *[(0, int(m - d)) for d, m in zip(p.shape[1:], longest[1:], strict=True)]] for p in parts]
        padded = [np.pad(part, width) for part, width in zip(parts, widths, strict=True)]  # never the batch axis
        arrays[name] = np.concatenate(padded)
    return arrays


__all__ = ["SingleGraphBuild", "calibration_arrays"]
