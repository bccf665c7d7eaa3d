"""Workspace commands: init (make a workspace), cache (inspect or clear it), keys (development keys)."""

from __future__ import annotations

from pathlib import Path

import click

from compiler.cli.build import artifacts_dir, artifacts_option
from compiler.progress import step


@click.command()
@click.argument("directory", type=click.Path(path_type=Path, file_okay=False), default=".")
def init(directory: Path) -> None:
    """Make DIRECTORY (default: here) an edgebuild workspace: edgebuild.toml, models/, targets/."""
    from compiler import workspace

    made = workspace.init(directory)
    step(f"workspace {made.root}: edgebuild.toml, models/ (your recipes), targets/ (your targets), .gitignore")
    step("built-in models and targets stay available: `edgebuild models`, `edgebuild targets`")
    step("next: edgebuild build --model digits-cnn --target desktop-int8   (writes artifacts/ here)")


@click.group()
def cache() -> None:
    """Inspect or clear the stage cache (<workspace>/artifacts/cache)."""


@cache.command("info")
@artifacts_option
def cache_info(artifacts: Path | None) -> None:
    """Entries and size per stage."""
    from compiler.engine.cache import Cache

    stages = Cache(artifacts_dir(artifacts) / "cache").info()
    if not stages:
        click.echo("cache is empty")
    for stage, info in stages.items():
        click.echo(f"{stage:<32} {info['entries']:>4} entries {info['bytes'] / 1e6:>10.1f} MB")


@cache.command("clear")
@artifacts_option
@click.option(
    "--measurements", is_flag=True, help="Also forget this host's recorded latencies (the next build re-times)."
)
def cache_clear(artifacts: Path | None, measurements: bool) -> None:
    """Remove every cache entry."""
    from compiler.engine.cache import Cache

    click.echo(f"freed {Cache(artifacts_dir(artifacts) / 'cache').clear() / 1e6:.1f} MB")
    if measurements:
        from compiler.engine.measurements import forget_all, ledger_dir

        click.echo(f"forgot {forget_all()} recorded measurements in {ledger_dir()}")


@click.group()
def keys() -> None:
    """Manage signing keys (development keys for local builds)."""


@keys.command("init")
@click.option("--dir", "directory", type=click.Path(path_type=Path), help="Default: ~/.config/edgebuild/keys.")
def keys_init(directory: Path | None) -> None:
    """Create a DEVELOPMENT ECDSA P-256 key pair (refuses to overwrite)."""
    from compiler.packaging.signing import default_key_dir, init_keys

    private_path, public_path = init_keys(directory or default_key_dir())
    click.echo(f"development private key: {private_path} (never commit; not for release bundles)")
    click.echo(f"development public key:  {public_path}")


COMMANDS = (init, cache, keys)
