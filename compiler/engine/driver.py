"""The one driver every model family builds through.

    import -> per graph: passes -> score each row -> gate "after passes"
           -> per graph: compile -> score the compiled model -> gate "after compilation"
           -> latency -> speed gate -> one BuildResult

The "after passes" gate runs before anything is compiled, so a pass list that breaks fidelity
fails in seconds, not after an hour of tuning. Stages go through the content-addressed cache; the
family (compiler/families/) says what a graph, a reference and a score are, the backend
(compiler/backends/) what compiling and running an artifact mean.
"""

from __future__ import annotations

from typing import Any

from compiler.backends.base import CompiledGraph
from compiler.backends.catalogue import backend_for
from compiler.digests import sha256_file
from compiler.engine.cache import Cache
from compiler.engine.compile_stage import compile_graph
from compiler.engine.gates import check_fidelity, speed_verdict
from compiler.engine.graph_passes import run_graph_passes
from compiler.engine.record import BuildResult, StageRow
from compiler.engine.specs import ModelRecipe, TargetSpec
from compiler.families.base import FamilyBuild, ModelFamily
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
    several = len(model_family.graphs) > 1

    torch_passes = [p for graph in model_family.graphs for p in passes[graph] if isinstance(p, TorchPass)]
    imported = build.import_stage(torch_passes)
    rows: list[StageRow] = list(imported.rows)
    _score(model_family, build, rows)

    last: dict[str, Any] = {}
    applied: dict[str, tuple[str, ...]] = {}
    for graph in model_family.graphs:
        graph_passes = [p for p in passes[graph] if isinstance(p, GraphPass)]
        done = [p.name for p in torch_passes]
        graph_rows, last[graph], names = run_graph_passes(
            graph_passes, imported.graphs[graph], build.pass_context(graph), cache, done, graph,
            label=graph if several else "",
        )
        _score(model_family, build, graph_rows)
        rows += graph_rows
        applied[graph] = tuple(names)
        scored = [(row.stage, _fidelity(row)) for row in rows if row.kind == "import" or row.graph == graph]
        check_fidelity(recipe.name, "after passes", scored[-1][1], scored, build.failure_advice("after passes", None))

    compiled: dict[str, CompiledGraph] = {}
    for graph in model_family.graphs:
        request = build.compile_request(graph, last[graph], applied[graph])
        compiled[graph] = compile_graph(backend, request, cache, label=graph if several else "")
    result = build.score_compiled(compiled)
    artifacts = list(compiled.values())
    rows.append(
        StageRow(
            stage=f"compile ({target.runtime})",
            kind="compile",
            path=artifacts[-1].artifact,
            cached=all(c.cached for c in artifacts),
            seconds=round(sum(c.seconds for c in artifacts), 2),
            stats=build.compile_stats(compiled),
            bytes=sum(c.artifact.stat().st_size for c in artifacts),
            nodes=_nodes(artifacts[0].artifact) if model_family.counts_nodes and backend.graph_artifact else None,
            fidelity=result.fidelity,
        )
    )
    passed = [(row.stage, _fidelity(row)) for row in rows[:-1]]
    check_fidelity(
        recipe.name, "after compilation", result.fidelity, passed, build.failure_advice("after compilation", result)
    )

    latency = build.latency(rows, compiled)
    warnings = []
    speed = speed_verdict(target.speed_gate, target.max_latency_ratio, latency["ratio_vs_ort_fp32"], target.name)
    if speed:
        warnings.append(speed)
    finished = build.finish(rows, compiled, result)
    files = [
        {
            "name": name,
            "sha256": sha256_file(shipped.path),
            "bytes": shipped.path.stat().st_size,
            **({"role": shipped.role} if shipped.role != "artifact" else {}),
        }
        for name, shipped in finished.files.items()
    ]
    size = sum(c.artifact.stat().st_size for c in artifacts)
    fp32_size = rows[0].bytes
    metrics: dict[str, Any] = {
        "size_bytes": size,
        "fp32_size_bytes": fp32_size,
        "size_ratio": size / fp32_size,
        "latency": latency,
        "fidelity": result.fidelity.__dict__,
    }
    if finished.memory is not None:
        metrics["memory"] = finished.memory
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
            "speed": "warn" if warnings else "pass",
            "speed_gate": target.speed_gate,
            "warnings": warnings,
        },
        pass_list=pass_list,
        import_meta=imported.meta,
        record_extra=finished.record_extra,
        compiled_isa=None if several else artifacts[0].meta.get("isa_features"),
        graph_optimization=backend.recorded_graph_optimization(),
    )


def _score(model_family: ModelFamily, build: FamilyBuild, rows: list[StageRow]) -> None:
    """Size, node count and fidelity of every row not yet scored (the family scores)."""
    for row in rows:
        if row.fidelity is not None:
            continue
        row.bytes = row.bytes or row.path.stat().st_size
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
