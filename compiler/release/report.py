"""The release report: Markdown and HTML (from templates/) with a table per model x target and two
plots (size and fidelity per target, one series per model), plus `release.json` with every row;
and the summary table printed at the end of `edgebuild release`."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from compiler.shipped import shipped

if TYPE_CHECKING:
    from compiler.release.config import Release
    from compiler.release.pipeline import PairResult


def previous_release(directory: Path, name: str) -> dict | None:
    """The newest other published release report beside `directory` (artifacts/releases/*/)."""
    candidates = []
    for path in directory.parent.glob("*/release.json"):
        try:
            record = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if record.get("release") != name and record.get("published"):
            candidates.append((path.stat().st_mtime, record))
    return max(candidates, key=lambda item: item[0])[1] if candidates else None


def write_report(
    release: Release, results: list[PairResult], directory: Path, channel: str, published: bool
) -> list[Path]:
    """Write release-report.md, release-report.html, the two PNGs and release.json into `directory`;
    the plots and a table compare with the previous published release when there is one."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    directory.mkdir(parents=True, exist_ok=True)
    print_summary(results)
    previous = previous_release(directory, release.name)
    before = {(p["model"], p["target"]): p for p in previous["pairs"]} if previous else {}
    _plot(results, directory / "release-size.png", "size_ratio", "size vs FP32 (%)", 100.0, before)
    _plot(results, directory / "release-fidelity.png", "fidelity", "fidelity (recipe metric)", 1.0, before)
    env = Environment(loader=FileSystemLoader(shipped("templates")), undefined=StrictUndefined, autoescape=False)
    failed = [r for r in results if not r.ok]
    values = {"release": release, "results": results, "failed": failed, "channel": channel, "published": published}
    values["previous"] = previous["release"] if previous else None
    values["before"] = {f"{model} {target}": pair for (model, target), pair in before.items()}
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


def _plot(
    results: list[PairResult], path: Path, attribute: str, label: str, scale: float, before: dict[tuple, dict]
) -> None:
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
        old = [(i + index * width, before.get((model, t), {}).get(attribute)) for i, t in enumerate(targets)]
        old = [(x, scale * y) for x, y in old if y is not None]
        if old:
            axes.scatter(*zip(*old, strict=True), marker="_", s=200, color="black", label=f"{model}, previous release")
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
