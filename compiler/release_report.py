"""The release report: Markdown and HTML (from templates/) with a table per model x target and two
plots (size and fidelity per target, one series per model), plus `release.json` with every row;
and the summary table printed at the end of `edgebuild release`."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from compiler.config import ROOT

if TYPE_CHECKING:
    from compiler.release import PairResult
    from compiler.release_config import Release


def write_report(
    release: Release, results: list[PairResult], directory: Path, channel: str, published: bool
) -> list[Path]:
    """Write release-report.md, release-report.html, the two PNGs and release.json into `directory`."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    directory.mkdir(parents=True, exist_ok=True)
    print_summary(results)
    _plot(results, directory / "release-size.png", "size_ratio", "size vs FP32 (%)", 100.0)
    _plot(results, directory / "release-fidelity.png", "fidelity", "fidelity (recipe metric)", 1.0)
    env = Environment(loader=FileSystemLoader(ROOT / "templates"), undefined=StrictUndefined, autoescape=False)
    failed = [r for r in results if not r.ok]
    values = {"release": release, "results": results, "failed": failed, "channel": channel, "published": published}
    paths = []
    outputs = (("release_report.md.j2", "release-report.md"), ("release_report.html.j2", "release-report.html"))
    for template, name in outputs:
        path = directory / name
        env.autoescape = name.endswith(".html")
        path.write_text(env.get_template(template).render(**values) + "\n")
        paths.append(path)
    summary = {"release": release.name, "channel": channel, "published": published}
    (directory / "release.json").write_text(json.dumps({**summary, "pairs": [asdict(r) for r in results]}, indent=1))
    return [*paths, directory / "release-size.png", directory / "release-fidelity.png", directory / "release.json"]


def _plot(results: list[PairResult], path: Path, attribute: str, label: str, scale: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = sorted({r.target for r in results})
    models = sorted({r.model for r in results})
    figure, axes = plt.subplots(figsize=(max(6.0, 0.9 * len(targets)), 3.6))
    width = 0.8 / max(1, len(models))
    for index, model in enumerate(models):
        values = {r.target: getattr(r, attribute) for r in results if r.model == model}
        xs = [i + index * width for i, t in enumerate(targets) if values.get(t) is not None]
        ys = [scale * values[t] for t in targets if values.get(t) is not None]
        axes.bar(xs, ys, width=width, label=model)
    axes.set_xticks([i + 0.4 - width / 2 for i in range(len(targets))], targets, rotation=30, ha="right", fontsize=8)
    axes.set_ylabel(label)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=90, metadata={"Software": None})
    plt.close(figure)


def print_summary(results: list[PairResult]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="release summary")
    for column in ("model", "target", "status", "size", "host latency", "fidelity", "why"):
        table.add_column(column)
    for r in results:
        table.add_row(
            r.model,
            r.target,
            r.status if r.ok else f"[red]{r.status}[/]",
            f"{100 * r.size_ratio:.0f}%" if r.size_ratio else "-",
            f"{r.latency_ratio:.2f}x" if r.latency_ratio else "-",
            r.fidelity_summary.split(";")[0] if r.fidelity_summary else "-",
            "; ".join(r.reasons),
        )
    Console(width=160).print(table)
