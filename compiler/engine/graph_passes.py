"""A graph's pass list, each pass through the cache, with the contract checks and a reproducer.

A pass's key: the input graph's digest, the pass context's fingerprint (the data, reference and
evaluator code the pass may consult), the pass's resolved options, the code on its path (its
module and what it imports, this runner included) and its tools' versions.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from compiler import onnx_io
from compiler.engine import reproducer
from compiler.engine.cache import Cache, stage_key
from compiler.engine.fingerprint import code_digest
from compiler.engine.record import StageRow
from compiler.errors import PassError
from compiler.progress import step
from passes.base import GraphPass, PassContext, apply_pass


def pass_code(graph_pass: GraphPass) -> str:
    """The code a pass stage runs: the pass's module (and what it imports) and this runner."""
    return code_digest([type(graph_pass).__module__, __name__])


def run_graph_passes(
    graph_passes: list[GraphPass],
    start: Path,
    context: PassContext,
    cache: Cache,
    done: list[str],
    graph: str = "model",
    label: str = "",
) -> tuple[list[StageRow], Path, list[str]]:
    """Apply `graph_passes` in order, each through the cache; returns the rows (unscored), the last
    model's path and the names of every pass applied (`done` included). `label` names the graph in
    progress lines and row names when a model has several ("encoder: fold-constants")."""
    rows: list[StageRow] = []
    current, done = start, list(done)
    prefix = f"{label}: " if label else ""
    for graph_pass in graph_passes:
        key = stage_key(
            f"pass:{graph_pass.name}",
            inputs={"model": onnx_io.digest(current), "context": context.fingerprint},
            config=graph_pass.options(),
            code=pass_code(graph_pass),
            tools=graph_pass.tool_versions(),
        )

        def run_pass(directory: Path, graph_pass: GraphPass = graph_pass, source: Path = current) -> dict[str, Any]:
            step(f"{prefix}pass {graph_pass.name}")
            started = time.perf_counter()
            try:
                result = apply_pass(graph_pass, onnx_io.load(source), context, done)
            except PassError as error:
                where = reproducer.write(
                    cache.root,
                    graph_pass.name,
                    graph_pass.options(),
                    source,
                    context.architecture,
                    dict(context.transformer_shape),
                    list(done),
                )
                raise PassError(f"{prefix}{error} (reproducer: edgebuild replay {where})") from error
            if onnx_io.save(result.model, directory / "model.onnx"):  # external data: checked on disk
                onnx_io.check_file(directory / "model.onnx", f"pass '{graph_pass.name}'")
            return {"stats": result.stats, "_seconds": round(time.perf_counter() - started, 2)}

        entry = cache.get_or_build(f"pass-{graph_pass.name}", key, run_pass)
        if entry.hit:
            step(f"{prefix}pass {graph_pass.name}: cached")
        if "nothing_to_do" in entry.meta["stats"]:
            reason = entry.meta["stats"]["nothing_to_do"]
            step(f"{prefix}pass {graph_pass.name}: nothing to do ({reason}); model passed on")
        rows.append(
            StageRow(
                stage=f"{prefix}{graph_pass.name}",
                kind="pass",
                path=entry.path / "model.onnx",
                cached=entry.hit,
                seconds=entry.meta["_seconds"],
                stats=entry.meta["stats"],
                options=graph_pass.options(),
                graph=graph,
            )
        )
        current = entry.path / "model.onnx"
        done.append(graph_pass.name)
    return rows, current, done


__all__ = ["pass_code", "run_graph_passes"]
