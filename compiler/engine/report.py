"""Human-facing build reports: report.md (jinja2, templates/report.md.j2) and report.png."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from compiler.shipped import shipped


def write_reports(directory: Path, record: dict[str, Any]) -> None:
    environment = Environment(
        loader=FileSystemLoader(shipped("templates")),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters["json"] = lambda value: json.dumps(value, sort_keys=True)  # tojson HTML-escapes ">="
    text = environment.get_template("report.md.j2").render(r=record)
    (directory / "report.md").write_text(text)
    plot(record, directory / "report.png")


def plot(record: dict[str, Any], path: Path) -> None:
    """Size, latency ratio and fidelity per stage, as three bar charts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stages = record["stages"]
    labels = [s["stage"] for s in stages]
    series = [
        ("size (MB)", [s["bytes"] / 1e6 for s in stages]),
        # 0 = not measured (a cross-compiled artifact verified under emulation)
        ("latency vs ORT FP32 (x)", [s["latency_ratio"] or 0.0 for s in stages]),
        (stages[0]["fidelity"]["metric"], [s["fidelity"]["value"] for s in stages]),
    ]
    figure, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for axis, (title, values) in zip(axes, series, strict=True):
        bars = axis.bar(range(len(values)), values, color="#4C72B0")
        axis.bar_label(bars, fmt="%.3g", fontsize=7)
        axis.set_title(title, fontsize=10)
        axis.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    low = min(series[2][1])  # zoom the fidelity axis: the differences that matter are small
    axes[2].set_ylim(low - 0.02 if low <= 1.0 else max(0.0, low - 5.0), None)
    figure.suptitle(f"{record['model']['name']} -> {record['target']['name']}", fontsize=11)
    figure.tight_layout()
    figure.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(figure)
