"""`edgebuild ci`: the CI workflow rendered from the release definition, so the CI matrix always
equals release.toml's targets (templates/ci_workflow.yml.j2, GitHub Actions syntax)."""

from __future__ import annotations

from pathlib import Path

from compiler.release.config import Release
from compiler.shipped import shipped


def render_workflow(release: Release, output: Path) -> str:
    """Render the workflow, write it to `output` (temp file + rename) and return its text."""
    from jinja2 import Environment, FileSystemLoader, StrictUndefined

    loader = FileSystemLoader(shipped("templates"))
    env = Environment(loader=loader, undefined=StrictUndefined, keep_trailing_newline=True)
    text = env.get_template("ci_workflow.yml.j2").render(release=release, targets=release.targets())
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    partial.write_text(text)
    partial.replace(output)
    return text
