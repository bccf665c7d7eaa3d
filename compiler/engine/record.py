"""Typed rows of the build report and the result of a build, before it becomes report.json.

The driver and the families fill `StageRow`s; `to_json` gives the row exactly as report.json and
report.md read it. A row is one model the build made: the import (FP32), each pass's output, the
compiled artifact; with its size, its fidelity under the recipe's metric and, where it ran on
this host, its latency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from passes.base import Fidelity


@dataclass
class StageRow:
    stage: str  # "import", the pass name ("encoder: fuse" for one graph of several), "compile (tvm)"
    kind: Literal["import", "pass", "compile"]
    path: Path  # the row's model (a graph's ONNX, or the artifact)
    cached: bool
    seconds: float
    stats: dict[str, Any]
    graph: str = "model"
    options: dict[str, Any] | None = None  # pass rows: the resolved options
    bytes: int = 0
    nodes: int | None = None  # ONNX node count; None for a compiled library or when not counted
    fidelity: Fidelity | None = None
    latency_ms: float | None = None
    latency_ratio: float | None = None
    latency_note: str | None = None  # why a row has no latency, for families that time only some rows

    def to_json(self) -> dict[str, Any]:
        assert self.fidelity is not None, f"row {self.stage} was never scored"
        row: dict[str, Any] = {
            "stage": self.stage,
            "kind": self.kind,
            "path": str(self.path),
            "cached": self.cached,
            "seconds": self.seconds,
            "stats": self.stats,
            "bytes": self.bytes,
            "nodes": self.nodes,
            "fidelity": self.fidelity.__dict__,
            "latency_ms": self.latency_ms,
            "latency_ratio": self.latency_ratio,
        }
        if self.options is not None:
            row["options"] = self.options
        if self.latency_note is not None:
            row["latency_note"] = self.latency_note
        return row


@dataclass
class BuildResult:
    """Everything the build record holds that the stages produced (pipeline adds keys and provenance)."""

    source_digest: str
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    artifact_name: str
    files: list[dict[str, Any]]  # name, sha256, bytes (+ role): what the bundle carries
    file_sources: dict[str, Path]  # name -> where the file is now
    metrics: dict[str, Any]
    stages: list[StageRow]
    verdict: dict[str, Any]
    pass_list: list[dict[str, Any]]
    import_meta: dict[str, Any] = field(default_factory=dict)
    record_extra: dict[str, Any] = field(default_factory=dict)  # the family's own record section
    compiled_isa: list[str] | None = None  # ISA extensions a host-tuned library may use
    graph_optimization: str | None = None  # the offline optimisation level, for runtimes that have one


__all__ = ["BuildResult", "StageRow"]
