"""The stages of one build, each run through the cache; heavy imports live here, not in pipeline.py."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from compiler import reproducer
from compiler.backends import backend_for
from compiler.cache import Cache, sha256_file, sha256_tree, stage_key, tool_versions
from compiler.config import ROOT, ModelRecipe, TargetSpec
from compiler.data import Dataset, load_dataset
from compiler.errors import ConfigError, PassError
from compiler.importers import import_model
from compiler.importers.torch_export import load_reference
from compiler.progress import step
from compiler.runtime import is_coreml, is_emulated, outputs_for, runs_on_host, session
from compiler.verify import Outputs, check_fidelity, score, speed_verdict
from passes.base import Fidelity, GraphPass, PassContext, TorchPass, apply_pass
from passes.catalogue import instantiate

IMPORT_CODE = [ROOT / "compiler" / "importers", ROOT / "compiler" / "data.py", ROOT / "compiler" / "runtime.py"]
PROFILE_CODE = [ROOT / "compiler" / "verify.py", ROOT / "compiler" / "runtime.py", ROOT / "compiler" / "stages.py"]


@dataclass
class StagesResult:
    source_digest: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    artifact_name: str
    files: list[dict[str, Any]]
    file_sources: dict[str, Path]
    metrics: dict[str, Any]
    stages: list[dict[str, Any]]
    verdict: dict[str, Any]
    pass_list: list[dict[str, Any]]
    import_meta: dict[str, Any] = field(default_factory=dict)
    record_extra: dict[str, Any] = field(default_factory=dict)  # top-level record sections (a speech model's)


def tokenizer_dir(recipe: ModelRecipe) -> Path | None:
    if recipe.source_kind.startswith("huggingface"):
        from compiler.importers.huggingface import model_directory

        return model_directory(recipe)
    return None


def _report_cache(stage: str, hit: bool) -> None:
    if hit:
        step(f"{stage}: cached")


class Evaluator:
    """Runs candidates (ONNX on ORT, compiled artifacts on their runtime) over the verification
    batches and scores them against the reference.

    An artifact for another ISA runs under qemu, at a few seconds per transformer batch, so it is
    scored on `emulated_batches` evenly spaced batches (all of them when there are fewer); its
    fidelity summary says how many. Everything that runs on this host is scored on every batch.
    """

    def __init__(
        self, recipe: ModelRecipe, dataset: Dataset, reference: Outputs, emulated_batches: int | None = None
    ) -> None:
        self.recipe, self.dataset, self.reference = recipe, dataset, reference
        self.emulated_batches = emulated_batches

    def batch_indices(self, model: onnx.ModelProto | Path) -> list[int]:
        total = len(self.dataset.verify)
        limit = self.emulated_batches
        if limit is None or total <= limit or not is_emulated(model):
            return list(range(total))
        return sorted({round(float(i)) for i in np.linspace(0, total - 1, limit)})

    def _labels(self, indices: list[int]) -> np.ndarray | None:
        labels = self.dataset.labels
        if labels is None or len(indices) == len(self.dataset.verify):
            return labels
        sizes = [len(next(iter(batch.values()))) for batch in self.dataset.verify]
        starts = np.cumsum([0, *sizes])
        return np.concatenate([labels[starts[i] : starts[i + 1]] for i in indices])

    def __call__(self, model: onnx.ModelProto | Path) -> Fidelity:
        indices = self.batch_indices(model)
        fidelity = score(
            self.recipe.metric,
            [self.reference[i] for i in indices],
            outputs_for(model, [self.dataset.verify[i] for i in indices]),
            [self.dataset.verify[i] for i in indices],
            self._labels(indices),
        )
        total = len(self.dataset.verify)
        if len(indices) == total:
            return fidelity
        return replace(
            fidelity,
            summary=f"{fidelity.summary} (on {len(indices)} of {total} batches, {_slow_runner(model)})",
            detail={**fidelity.detail, "verified_batches": len(indices), "total_batches": total},
        )


def _slow_runner(model: onnx.ModelProto | Path) -> str:
    return "run in the MIL reference interpreter" if is_coreml(model) else "run under qemu-aarch64"


def run_stages(recipe: ModelRecipe, target: TargetSpec, cache: Cache) -> StagesResult:
    if recipe.family == "speech":  # two graphs and a generation loop: its own stage sequence
        from compiler.speech.stages import run_speech_stages

        return run_speech_stages(recipe, target, cache)
    passes = instantiate(target.passes_for(recipe.family), f"{target.path}: passes")
    torch_passes = [p for p in passes if isinstance(p, TorchPass)]
    graph_passes = [p for p in passes if isinstance(p, GraphPass)]
    pass_list = [{"pass": p.name, "options": p.options()} for p in passes]

    step(f"loading data for {recipe.name}")
    dataset = load_dataset(recipe, tokenizer_dir=tokenizer_dir(recipe))
    data_digest = dataset.digest()
    from compiler.pipeline import source_files

    source_digest = sha256_tree(source_files(recipe))

    # import (+ PyTorch-level passes, which need the module before export)
    import_key = stage_key(
        "import",
        inputs={"source": source_digest, "data": data_digest},
        config={
            # Only what changes the export: a new metric budget must not re-run the import.
            "recipe": {k: getattr(recipe, k) for k in ("source_kind", "source", "inputs", "outputs")},
            "torch_passes": [(p.name, p.options(), p.fingerprint()) for p in torch_passes],
        },
        code=sha256_tree(IMPORT_CODE),
        tools=tool_versions("torch", "transformers", "onnx", "onnxruntime"),
    )

    def run_import(directory: Path) -> dict[str, Any]:
        step(f"importing {recipe.name} ({recipe.source_kind}: {recipe.source})")
        started = time.perf_counter()
        meta = import_model(recipe, dataset, torch_passes, directory)
        return {**meta, "_seconds": round(time.perf_counter() - started, 2)}

    imported = cache.get_or_build("import", import_key, run_import)
    _report_cache("import", imported.hit)
    reference = load_reference(imported.path / "reference.npz")
    evaluate = Evaluator(recipe, dataset, reference, target.emulated_batches)

    ctx_fingerprint = stage_key(
        "context",
        inputs={"data": data_digest, "reference": sha256_file(imported.path / "reference.npz")},
        config={"metric": recipe.metric, "family": recipe.family, "shape": imported.meta.get("transformer_shape", {})},
        code="",
        tools={},
    )
    context = PassContext(
        workdir=cache.scratch(),
        model_family=recipe.family,
        calibration=lambda: dataset.calibration,
        evaluate=evaluate,
        fingerprint=ctx_fingerprint,
        transformer_shape=imported.meta.get("transformer_shape", {}),
    )

    # Row 0 is the unmodified FP32 export: the baseline every size and latency ratio is against.
    stages = [
        {
            "stage": "import",
            "kind": "import",
            "path": imported.path / imported.meta.get("baseline", "model.onnx"),
            "cached": imported.hit,
            "seconds": imported.meta.get("_seconds", 0.0),
            "stats": {"exporter": imported.meta.get("exporter"), "export_check": imported.meta.get("export_check")},
        }
    ]
    for torch_pass in imported.meta["torch_passes"]:  # PyTorch-level passes run inside the import stage
        stages.append(
            {
                "stage": torch_pass["pass"],
                "kind": "pass",
                "path": imported.path / "model.onnx",
                "cached": imported.hit,
                "seconds": torch_pass["seconds"],
                "stats": torch_pass["stats"],
                "options": torch_pass["options"],
            }
        )
    rows, current, done = run_graph_passes(
        graph_passes, imported.path / "model.onnx", context, cache, recipe.family, [p.name for p in torch_passes]
    )
    stages.extend(rows)

    shapes = {name: list(array.shape) for name, array in dataset.bench.items()}
    compiled = compile_stage(recipe, target, current, shapes, cache, done, lambda: _calibration_arrays(dataset))
    artifact = compiled.path / compiled.meta["artifact"]
    stages.append(
        {
            "stage": f"compile ({target.runtime})",
            "kind": "compile",
            "path": artifact,
            "cached": compiled.hit,
            "seconds": compiled.meta["_seconds"],
            "stats": _compile_stats(target, compiled.meta),
        }
    )

    from compiler.profile import profile_stages

    profile = profile_stages(recipe, dataset, evaluate, stages, cache, data_digest)
    for row, measured in zip(stages, profile["rows"], strict=True):
        row.update(measured)
        row["path"] = str(row["path"])
    pass_fidelities = [(row["stage"], Fidelity(**row["fidelity"])) for row in stages[:-1]]
    final = Fidelity(**stages[-1]["fidelity"])
    check_fidelity(recipe, "after passes", pass_fidelities[-1][1], pass_fidelities)
    check_fidelity(recipe, "after compilation", final, pass_fidelities)
    warnings = []
    speed = speed_verdict(target.speed_gate, target.max_latency_ratio, profile["artifact_latency_ratio"], target.name)
    if speed:
        warnings.append(speed)

    artifact_name = f"{recipe.name}{'.mlpackage.zip' if is_coreml(artifact) else artifact.suffix}"
    sources = {artifact_name: artifact}
    files = [{"name": artifact_name, "sha256": sha256_file(artifact), "bytes": artifact.stat().st_size}]
    if artifact.suffix == ".so" and not runs_on_host(artifact):
        from compiler.backends import aarch64

        extras = aarch64.device_files()  # what a board needs to run the library: TVM runtime + loader
        sources.update({name: path for name, (path, _) in extras.items()})
        files += [
            {"name": name, "sha256": sha256_file(path), "bytes": path.stat().st_size, "role": role}
            for name, (path, role) in sorted(extras.items())
        ]
    for name, role in sorted(compiled.meta.get("extra_files", {}).items()):  # e.g. ORT Mobile's op config
        path = compiled.path / name
        sources[name] = path
        files.append({"name": name, "sha256": sha256_file(path), "bytes": path.stat().st_size, "role": role})
    if artifact.suffix in (".onnx", ".ort"):
        sess = session(artifact)
        inputs = [{"name": i.name, "dtype": i.type, "shape": i.shape} for i in sess.get_inputs()]
        outputs = [{"name": o.name, "dtype": o.type, "shape": o.shape} for o in sess.get_outputs()]
    else:  # a compiled library: its signature comes from the compiler
        inputs, outputs = compiled.meta["inputs"], compiled.meta["outputs"]
    memory = None
    if artifact.suffix != ".onnx":  # not a graph the packager can read: memory from the last graph
        from compiler.packaging.manifest import estimate_memory

        memory = estimate_memory(current, shapes)
        memory["weights_bytes"] = artifact.stat().st_size
        memory["total_bytes"] = memory["weights_bytes"] + memory["activations_bytes"]
    return StagesResult(
        source_digest=source_digest,
        inputs=inputs,
        outputs=outputs,
        artifact_name=artifact_name,
        files=files,
        file_sources=sources,
        metrics={
            "size_bytes": artifact.stat().st_size,
            "fp32_size_bytes": stages[0]["bytes"],
            "size_ratio": artifact.stat().st_size / stages[0]["bytes"],
            "latency": profile["latency"],
            "fidelity": stages[-1]["fidelity"],
            **({"memory": memory} if memory else {}),
        },
        stages=stages,
        verdict={
            "fidelity": "pass",
            "speed": "warn" if warnings else "pass",
            "speed_gate": target.speed_gate,
            "warnings": warnings,
        },
        pass_list=pass_list,
        import_meta={k: v for k, v in imported.meta.items() if not k.startswith("_")},
    )


def compile_stage(
    recipe: ModelRecipe,
    target: TargetSpec,
    current: Path,
    shapes: dict[str, list[int]],
    cache: Cache,
    done: list[str],
    calibration_arrays: Callable[[], dict[str, np.ndarray]],
    label: str = "",
) -> Any:
    """Compile the last graph (`current`) for the target's runtime, through the cache."""
    backend = backend_for(target.runtime)
    if target.runtime == "tvm":
        from compiler.backends import tvm_build

        compile_config = tvm_build.key_config(target, shapes, cache.root)
        code_files = [*backend.FINGERPRINT_FILES, Path(tvm_build.__file__)]
        compile_config["onnxslim"] = tool_versions("onnxslim")
    elif target.runtime == "litert":
        compile_config = backend.key_config(target.precision, shapes)
        code_files = [*backend.FINGERPRINT_FILES, ROOT / "compiler" / "toolchains" / "__init__.py"]
    elif target.runtime == "onnxruntime-mobile":
        compile_config = backend.key_config(target.precision)
        code_files = list(backend.FINGERPRINT_FILES)
    elif target.runtime == "coreml":  # converts the PyTorch model: the import digest stands for it
        if done:
            raise ConfigError(
                f"{target.path}: Core ML targets convert the PyTorch model, so ONNX passes ({', '.join(done)}) "
                "would not reach the artifact; remove them (compression is the target's precision)"
            )
        compile_config = backend.key_config(target.precision, shapes, target.runtime_min_version)
        code_files = list(backend.FINGERPRINT_FILES)
    else:
        compile_config = {"runtime": target.runtime, "level": target.graph_optimization}
        code_files = list(backend.FINGERPRINT_FILES)
    compile_key = stage_key(
        "compile",
        inputs={"model": sha256_file(current)},
        config=compile_config,
        code=sha256_tree(code_files),
        tools=tool_versions(*backend.TOOLS),
    )

    def run_compile(directory: Path) -> dict[str, Any]:
        started = time.perf_counter()
        if target.runtime == "tvm":
            meta = tvm_build.compile_for(target, current, shapes, cache.root, directory)
        elif target.runtime == "litert":
            calibration = calibration_arrays() if target.precision == "int8" else {}
            meta = backend.compile_model(current, target.precision, shapes, calibration, directory)
        elif target.runtime == "onnxruntime-mobile":
            meta = backend.compile_model(current, directory)
        elif target.runtime == "coreml":
            meta = backend.compile_model(recipe, target.precision, shapes, target.runtime_min_version, directory)
        else:
            step(f"compiling for {target.runtime} (graph optimisation: {target.graph_optimization})")
            meta = backend.compile_model(current, target, directory)
        return {**meta, "_seconds": round(time.perf_counter() - started, 2)}

    compiled = cache.get_or_build("compile", compile_key, run_compile)
    _report_cache(f"{label}: compile" if label else "compile", compiled.hit)
    return compiled


def run_graph_passes(
    graph_passes: list[GraphPass],
    start: Path,
    context: PassContext,
    cache: Cache,
    family: str,
    done: list[str],
    label: str = "",
) -> tuple[list[dict[str, Any]], Path, list[str]]:
    """Apply `graph_passes` in order, each through the cache; returns the stage rows, the last
    model's path and the names of every pass applied (`done` included). `label` names the graph
    in progress lines when a model has several (a speech model's encoder and decoder)."""
    rows: list[dict[str, Any]] = []
    current, done = start, list(done)
    prefix = f"{label}: " if label else ""
    for graph_pass in graph_passes:
        key = stage_key(
            f"pass:{graph_pass.name}",
            inputs={"model": sha256_file(current), "context": context.fingerprint},
            config=graph_pass.options(),
            code=graph_pass.fingerprint(),
            tools=graph_pass.tool_versions(),
        )

        def run_pass(directory: Path, graph_pass: GraphPass = graph_pass, source: Path = current) -> dict[str, Any]:
            step(f"{prefix}pass {graph_pass.name}")
            started = time.perf_counter()
            try:
                result = apply_pass(graph_pass, onnx.load(str(source)), context, done)
            except PassError as error:
                shape = dict(context.transformer_shape)
                where = reproducer.write(
                    cache.root, graph_pass.name, graph_pass.options(), source, family, shape, list(done)
                )
                raise PassError(f"{prefix}{error} (reproducer: edgebuild replay {where})") from error
            onnx.save(result.model, str(directory / "model.onnx"))
            return {"stats": result.stats, "_seconds": round(time.perf_counter() - started, 2)}

        entry = cache.get_or_build(f"pass-{graph_pass.name}", key, run_pass)
        _report_cache(f"{prefix}pass {graph_pass.name}", entry.hit)
        rows.append(
            {
                "stage": graph_pass.name,
                "kind": "pass",
                "path": entry.path / "model.onnx",
                "cached": entry.hit,
                "seconds": entry.meta["_seconds"],
                "stats": entry.meta["stats"],
                "options": graph_pass.options(),
            }
        )
        current = entry.path / "model.onnx"
        done.append(graph_pass.name)
    return rows, current, done


def _calibration_arrays(dataset: Dataset) -> dict[str, np.ndarray]:
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


def _compile_stats(target: TargetSpec, meta: dict[str, Any]) -> dict[str, Any]:
    """What the report shows for the compile stage: ORT's level, TVM's target and tuning, or the
    LiteRT converter, its op list and tensor dtypes."""
    if target.runtime in ("litert", "onnxruntime-mobile", "coreml"):
        return {key: meta[key] for key in ("converter", "toolchain", "ops", "tensor_dtypes") if key in meta}
    if target.runtime != "tvm":
        return {"graph_optimization": target.graph_optimization}
    return {key: meta[key] for key in ("target", "tuning", "isa_features", "execution") if key in meta}
