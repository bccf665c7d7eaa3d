"""The one driver every model family builds through.

    import -> per graph: passes -> score each row -> gate "after passes"
           -> per graph: compile -> score the compiled model -> gate "after compilation"
           -> latency (or, under emulation, instructions) -> speed and "INT8 in name only" gates
           -> the precision achieved (warnings where the target's promise is not met) -> one BuildResult

The "after passes" gate runs before anything is compiled, so a pass list that breaks fidelity
fails in seconds, not after an hour of tuning. Stages go through the content-addressed cache; the
family (compiler/families/) says what a graph, a reference and a score are, the backend
(compiler/backends/) what compiling and running an artifact mean.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from compiler import onnx_io
from compiler.backends.base import Backend, CompiledGraph
from compiler.backends.catalogue import backend_for
from compiler.digests import sha256_file
from compiler.engine.cache import Cache
from compiler.engine.compile_stage import compile_graph
from compiler.engine.diagnosis import degenerate_outputs
from compiler.engine.gates import check_fidelity, check_integer_work, speed_decision, speed_verdict
from compiler.engine.graph_passes import run_graph_passes
from compiler.engine.latency import gate_timing, synthetic_feeds
from compiler.engine.precision import achieved_precision
from compiler.engine.record import BuildResult, StageRow
from compiler.engine.specs import ModelRecipe, TargetSpec
from compiler.errors import ModelError
from compiler.families.base import FamilyBuild, Imported, ModelFamily, Scored
from compiler.families.catalogue import family as family_named
from passes.base import BasePass, Fidelity, GraphPass, TorchPass
from passes.catalogue import instantiate


def pass_lists(model_family: ModelFamily, target: TargetSpec) -> dict[str, list[BasePass]]:
    """Each graph's configured passes, from the target's list for that graph (or family, or default)."""
    where = f"{target.path}: passes"
    return {
        graph: instantiate(target.passes_for(model_family.pass_list_keys(graph)), where)
        for graph in model_family.graphs
    }


def run_build(recipe: ModelRecipe, target: TargetSpec, cache: Cache) -> BuildResult:
    """Every stage of one build (see the module docstring)."""
    model_family = family_named(recipe.family)
    backend = backend_for(target)
    model_family.check_backend(backend)
    passes = pass_lists(model_family, target)
    build = model_family.start(recipe, target, backend, cache)

    torch_passes = [p for graph in model_family.graphs for p in passes[graph] if isinstance(p, TorchPass)]
    imported = build.import_stage(torch_passes)
    rows: list[StageRow] = list(imported.rows)
    _score(model_family, build, rows)
    last = _passes_then_gate(model_family, build, imported, passes, [p.name for p in torch_passes], rows, cache)

    several = len(model_family.graphs) > 1
    compiled = {
        graph: compile_graph(backend, build.compile_request(graph, *last[graph]), cache, graph if several else "")
        for graph in model_family.graphs
    }
    scored = build.score_compiled(compiled)
    rows.append(_compile_row(model_family, build, compiled, scored))
    passed = [(row.stage, _fidelity(row)) for row in rows[:-1]]
    advice = build.failure_advice("after compilation", scored)
    check_fidelity(recipe.name, "after compilation", scored.fidelity, passed, advice, _import_outputs(recipe, rows))

    latency = build.latency(rows, compiled)
    check_integer_work(target.name, target.precision, latency.get("instructions"))
    speed = _speed_gate(recipe, target, backend, rows, compiled, latency)
    precision = achieved_precision(
        target.name,
        target.precision,
        [(c.artifact, c.meta) for c in compiled.values()],
        backend.graph_artifact,
        rows[0].bytes,
    )
    return _result(model_family, build, imported, passes, rows, compiled, scored, latency, speed, precision)


def _speed_gate(
    recipe: ModelRecipe,
    target: TargetSpec,
    backend: Backend,
    rows: list[StageRow],
    compiled: dict[str, CompiledGraph],
    latency: dict[str, Any],
) -> str | None:
    """The speed gate's warning, if any. A one-graph artifact that runs here is timed against ORT
    FP32 on the imported model alternately in rounds, by per-call CPU time (latency["gate"]); a
    family whose latency is one figure (several graphs: a generation loop) is gated on that figure."""
    if target.speed_gate == "off" or latency["ratio_vs_ort_fp32"] is None:
        return None
    feeds = synthetic_feeds(recipe.inputs, latency.get("input_shapes", {})) if len(compiled) == 1 else None
    if feeds is None:
        return speed_verdict(target.speed_gate, target.max_latency_ratio, target.name, [latency["ratio_vs_ort_fp32"]])
    artifact = next(iter(compiled.values())).artifact
    gate = gate_timing(artifact, rows[0].path, backend, feeds)
    cpu, wall = gate["cpu_ratio_rounds"], gate["wall_ratio_rounds"]
    latency["gate"] = {
        **gate,
        "max_ratio": target.max_latency_ratio,
        "decision": speed_decision(cpu, target.max_latency_ratio),
    }
    return speed_verdict(target.speed_gate, target.max_latency_ratio, target.name, cpu, wall)


def _import_outputs(recipe: ModelRecipe, rows: list[StageRow]) -> Callable[[], str | None]:
    """What is degenerate about the imported model's outputs on synthetic inputs at the recipe's
    bench sizes (for a gate whose first row over budget is the import), None when nothing is or it
    cannot be run that way (an input the recipe does not declare, a shape it does not take)."""

    def seen() -> str | None:
        from compiler.ort_session import run_batches, session

        sizes = {k: v for k, v in recipe.bench.items() if isinstance(v, int)}
        shapes = {s.name: [d if isinstance(d, int) else sizes.get(d, 1) for d in s.shape] for s in recipe.inputs}
        feeds = synthetic_feeds(recipe.inputs, shapes)
        try:
            model = session(rows[0].path)
            if feeds is None or any(i.name not in feeds for i in model.get_inputs()):
                return None
            return degenerate_outputs(run_batches(model, [feeds])[0])
        except ModelError:
            return None

    return seen


def _passes_then_gate(
    model_family: ModelFamily,
    build: FamilyBuild,
    imported: Imported,
    passes: dict[str, list[BasePass]],
    done: list[str],
    rows: list[StageRow],
    cache: Cache,
) -> dict[str, tuple[Path, tuple[str, ...]]]:
    """Each graph's passes (rows appended to `rows`, scored), then its "after passes" gate; returns
    each graph's last ONNX and the names of every pass applied to it."""
    several = len(model_family.graphs) > 1
    last = {}
    for graph in model_family.graphs:
        graph_passes = [p for p in passes[graph] if isinstance(p, GraphPass)]
        context = build.pass_context(graph)
        label = graph if several else ""
        graph_rows, model, names = run_graph_passes(
            graph_passes, imported.graphs[graph], context, cache, done, graph, label
        )
        _score(model_family, build, graph_rows)
        rows += graph_rows
        scored = [(row.stage, _fidelity(row)) for row in rows if row.kind == "import" or row.graph == graph]
        advice = build.failure_advice("after passes", None)
        seen = _import_outputs(build.recipe, rows)
        check_fidelity(build.recipe.name, "after passes", scored[-1][1], scored, advice, seen)
        last[graph] = (model, tuple(names))
    return last


def _compile_row(
    model_family: ModelFamily, build: FamilyBuild, compiled: dict[str, CompiledGraph], scored: Scored
) -> StageRow:
    """The report row of the compiled model (every graph's artifact together)."""
    artifacts = list(compiled.values())
    return StageRow(
        stage=f"compile ({build.target.runtime})",
        kind="compile",
        path=artifacts[-1].artifact,
        cached=all(c.cached for c in artifacts),
        seconds=round(sum(c.seconds for c in artifacts), 2),
        stats=build.compile_stats(compiled),
        bytes=sum(_artifact_bytes(build, c.artifact) for c in artifacts),
        nodes=_nodes(artifacts[0].artifact) if model_family.counts_nodes and build.backend.graph_artifact else None,
        fidelity=scored.fidelity,
    )


def _result(
    model_family: ModelFamily,
    build: FamilyBuild,
    imported: Imported,
    passes: dict[str, list[BasePass]],
    rows: list[StageRow],
    compiled: dict[str, CompiledGraph],
    scored: Scored,
    latency: dict[str, Any],
    speed: str | None,
    precision: dict[str, Any],
) -> BuildResult:
    finished = build.finish(rows, compiled, scored)
    files = [
        {
            "name": name,
            "sha256": sha256_file(shipped.path),
            "bytes": shipped.path.stat().st_size,
            **({"role": shipped.role} if shipped.role != "artifact" else {}),
        }
        for name, shipped in finished.files.items()
    ]
    artifacts = list(compiled.values())
    size = sum(_artifact_bytes(build, c.artifact) for c in artifacts)
    metrics: dict[str, Any] = {
        "size_bytes": size,
        "fp32_size_bytes": rows[0].bytes,
        "size_ratio": size / rows[0].bytes,
        "latency": latency,
        "fidelity": scored.fidelity.__dict__,
        "precision": precision,
    }
    if finished.memory is not None:
        metrics["memory"] = finished.memory
    several = len(model_family.graphs) > 1
    pass_list = [
        {"pass": p.name, "options": p.options(), **({"graph": graph} if several else {})}
        for graph in model_family.graphs
        for p in passes[graph]
    ]
    return BuildResult(
        source_digest=imported.source_digest,
        inputs=finished.inputs,
        outputs=finished.outputs,
        artifact_name=finished.artifact_name,
        files=files,
        file_sources={name: shipped.path for name, shipped in finished.files.items()},
        metrics=metrics,
        stages=rows,
        verdict={
            "fidelity": "pass",
            "speed": "warn" if speed else "pass",
            "speed_gate": build.target.speed_gate,
            "precision": "met" if precision["promise_met"] else "not met",
            # Every warning of the build, printed by `edgebuild build`: the speed gate's, then precision's.
            "warnings": ([speed] if speed else []) + precision["warnings"],
        },
        pass_list=pass_list,
        import_meta=imported.meta,
        record_extra=finished.record_extra,
        compiled_isa=None if several else artifacts[0].meta.get("isa_features"),
        graph_optimization=build.backend.recorded_graph_optimization(),
    )


def _artifact_bytes(build: FamilyBuild, artifact: Path) -> int:
    """An artifact's size; an ONNX graph's with its external weights file."""
    return onnx_io.size_on_disk(artifact) if build.backend.graph_artifact else artifact.stat().st_size


def _score(model_family: ModelFamily, build: FamilyBuild, rows: list[StageRow]) -> None:
    """Size, node count and fidelity of every row not yet scored (the family scores)."""
    for row in rows:
        if row.fidelity is not None:
            continue
        row.bytes = row.bytes or onnx_io.size_on_disk(row.path)  # a graph row: its external weights count
        if model_family.counts_nodes and row.nodes is None:
            row.nodes = _nodes(row.path)
        row.fidelity = build.score_graph(row.graph, row)


def _fidelity(row: StageRow) -> Fidelity:
    assert row.fidelity is not None
    return row.fidelity


def _nodes(path: Any) -> int:
    import onnx

    return len(onnx.load(str(path), load_external_data=False).graph.node)


__all__ = ["pass_lists", "run_build"]
