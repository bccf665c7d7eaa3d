"""The compile stage: one graph -> the backend's artifact, through the cache.

Key: the input graph's digest, the backend's key config, the backend's fingerprint (the code that
compiles and runs its artifacts), this module's code and the backend's tools' versions.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from compiler.backends.base import Backend, CompiledGraph, CompileRequest
from compiler.digests import sha256_file, tool_versions
from compiler.engine.cache import Cache, stage_key
from compiler.engine.fingerprint import code_digest
from compiler.progress import step


def compile_graph(backend: Backend, request: CompileRequest, cache: Cache, label: str = "") -> CompiledGraph:
    """Compile `request.model` for the backend (or reuse the cached artifact)."""
    backend.check_request(request)
    key = stage_key(
        "compile",
        inputs={"model": sha256_file(request.model)},
        config=backend.key_config(request),
        code=backend.fingerprint() + code_digest([__name__]),
        tools=tool_versions(*backend.tools),
    )

    def run_compile(directory: Path) -> dict[str, Any]:
        started = time.perf_counter()
        meta = backend.compile(request, directory)
        return {**meta, "_seconds": round(time.perf_counter() - started, 2)}

    entry = cache.get_or_build("compile", key, run_compile)
    if entry.hit:
        step(f"{label}: compile: cached" if label else "compile: cached")
    return CompiledGraph(
        graph=request.graph,
        artifact=entry.path / entry.meta["artifact"],
        meta=entry.meta,
        source=request.model,
        cached=entry.hit,
        seconds=entry.meta["_seconds"],
    )


__all__ = ["compile_graph"]
