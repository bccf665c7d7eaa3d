"""Commands that list and describe: targets, models, passes, schema, inspect."""

from __future__ import annotations

from pathlib import Path

import click

from compiler.engine import config


@click.command()
def targets() -> None:
    """List hardware targets (the workspace's targets/, then the built-ins)."""
    for name in config.available("targets"):
        spec = config.load_target(name)
        preset = f" [preset: {spec.preset}]" if spec.preset else ""
        click.echo(f"{name:<22} {spec.runtime:<12} {spec.precision:<6} {spec.description}{preset}")


@click.command()
def models() -> None:
    """List model recipes (the workspace's models/, then the built-ins)."""
    for name in config.available("models"):
        recipe = config.load_recipe(name)
        click.echo(f"{name:<16} {recipe.version:<8} {recipe.family:<12} {recipe.description}")


@click.command(name="passes")
def list_passes() -> None:
    """List graph passes with their options and what they do."""
    import dataclasses
    import inspect as python_inspect
    import typing

    from passes.catalogue import CATALOGUE

    for name, pass_class in CATALOGUE.items():
        click.echo(click.style(name, bold=True) + f"  ({', '.join(pass_class.tools)})")
        for line in (python_inspect.getdoc(pass_class) or "").splitlines():
            click.echo(f"    {line}")
        hints = typing.get_type_hints(pass_class.Config)
        for field in dataclasses.fields(pass_class.Config):
            default = field.default if field.default is not dataclasses.MISSING else "(required)"
            kind = _describe_type(hints[field.name])
            click.echo(f"    option {field.name}: {kind} = {default!r}")
        click.echo("")


def _describe_type(hint: object) -> str:
    import typing

    if typing.get_origin(hint) is typing.Literal:
        return " | ".join(repr(choice) for choice in typing.get_args(hint))
    name = getattr(hint, "__name__", None) if typing.get_origin(hint) is None else None
    return name or str(hint).replace("typing.", "")


@click.command()
def schema() -> None:
    """Print the bundle manifest's JSON Schema (edgebuild.manifest/1)."""
    from compiler.packaging.manifest import SCHEMA_PATH

    click.echo(SCHEMA_PATH.read_text(), nl=False)


@click.command()
@click.argument("path", type=click.Path(path_type=Path))
def inspect(path: Path) -> None:
    """Describe an ONNX model or a build directory / report.json."""
    from compiler.cli.inspect import describe

    click.echo(describe(path))


COMMANDS = (targets, models, list_passes, schema, inspect)
