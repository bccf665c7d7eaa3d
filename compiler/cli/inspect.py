"""`edgebuild inspect`: what is in an ONNX file or a build directory."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

from compiler.errors import ModelError


def describe(path: Path) -> str:
    if path.is_dir():
        path = path / "report.json"
    if path.name.endswith(".json"):
        return _describe_record(path)
    return _describe_onnx(path)


def _describe_onnx(path: Path) -> str:
    from compiler.importers.onnx_file import load_onnx, signature

    model = load_onnx(path)
    ops = collections.Counter(node.op_type for node in model.graph.node)
    weights = sum(len(init.raw_data) or 0 for init in model.graph.initializer)
    opsets = ", ".join(f"{o.domain or 'ai.onnx'} {o.version}" for o in model.opset_import)
    lines = [
        f"{path}: {path.stat().st_size / 1e6:.2f} MB, {len(model.graph.node)} nodes, "
        f"{len(model.graph.initializer)} initializers ({weights / 1e6:.2f} MB raw), opsets: {opsets}",
        f"producer: {model.producer_name} {model.producer_version}".rstrip(),
    ]
    for kind, specs in (("input", signature(model, str(path))), ("output", signature(model, str(path), outputs=True))):
        lines += [f"{kind} {s.name}: {s.dtype} {list(s.shape)}" for s in specs]
    lines.append("ops: " + ", ".join(f"{op} x{count}" for op, count in ops.most_common()))
    return "\n".join(lines)


def _describe_record(path: Path) -> str:
    if not path.is_file():
        raise ModelError(
            f"{path}: no build record here; pass an .onnx file or a build directory (artifacts/<model>/<target>)"
        )
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ModelError(f"{path}: not a build record (invalid JSON at line {error.lineno})") from error
    metrics, target = record["metrics"], record["target"]
    lines = [
        f"{record['model']['name']} {record['model']['version']} -> {target['name']} "
        f"({target['runtime']} >= {target['runtime_min_version']}, {target['precision']})",
        f"artifact: {artifact_names(record)} {metrics['size_bytes'] / 1e6:.2f} MB "
        f"({100 * metrics['size_ratio']:.1f}% of FP32)",
        f"fidelity: {metrics['fidelity']['summary']}",
        f"latency: {metrics['latency']['ratio_vs_ort_fp32']:.2f}x ORT FP32 on the build host"
        if metrics["latency"]["ratio_vs_ort_fp32"] is not None
        else f"latency: {metrics['latency']['note']}",
        f"verdict: fidelity {record['verdict']['fidelity']}, speed {record['verdict']['speed']}",
    ]
    lines += [
        f"  {s['stage']:<28} nodes {_or_dash(s['nodes'], '>5')}  {s['bytes'] / 1e6:8.2f} MB  "
        f"{_or_dash(s['latency_ratio'], '.2f', 'x'):>6}  {s['fidelity']['value']:.4f}"
        for s in record["stages"]
    ]
    return "\n".join(lines)


def _or_dash(value: float | int | None, spec: str, unit: str = "") -> str:
    """A compiled library has no ONNX node count; an emulated or LiteRT artifact no host latency."""
    return "-" if value is None else format(value, spec) + unit


def artifact_names(record: dict[str, Any]) -> str:
    """The artifact's file name, or every graph's for a model of several ("encoder.onnx + decoder.onnx"):
    a family's record section (named after the family) lists them under "graphs"."""
    section = record.get(record["model"]["family"], {})
    graphs = section.get("graphs") if isinstance(section, dict) else None
    return " + ".join(graphs.values()) if graphs else str(record["artifact"])
