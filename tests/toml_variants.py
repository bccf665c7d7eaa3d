"""Variants of the shipped target and recipe files, for tests that need one field changed.

Every replacement must match (a silent no-op would let a test pass without testing anything).
"""

from __future__ import annotations

from pathlib import Path

from compiler.shipped import shipped


def variant(
    directory: Path, shipped_name: str, edits: dict[str, str], name: str | None = None, kind: str = "target"
) -> Path:
    """Write targets/<shipped>.toml (or models/, with kind="model") with `edits` applied into
    `directory`, as <name>.toml with its name field renamed to match (default: the shipped name)."""
    source = shipped(f"{'targets' if kind == 'target' else 'models'}/{shipped_name}.toml")
    text = source.read_text()
    if name is not None:
        edits = {f'name = "{shipped_name}"': f'name = "{name}"', **edits}
    for old, new in edits.items():
        assert old in text, f"{source.name} no longer contains {old!r}; update the test"
        text = text.replace(old, new)
    path = directory / f"{name or shipped_name}.toml"
    path.write_text(text)
    return path
