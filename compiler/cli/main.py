"""The `edgebuild` command line: one group, with its commands in the modules beside this one.

User errors (bad recipe, unknown target, corrupt model, over budget) print one line and exit
non-zero; anything else is a bug and keeps its traceback. Heavy libraries are imported inside
commands so that `edgebuild targets` and an up-to-date `edgebuild build` stay fast. The workspace
is found from the working directory upward (edgebuild.toml), or named with -C DIR.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from compiler.errors import UserError


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except UserError as error:
            click.echo(f"edgebuild: error: {error}", err=True)
            sys.exit(error.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgebuild")
@click.option(
    "-C",
    "--workspace",
    "workspace_dir",
    type=click.Path(path_type=Path, file_okay=False),
    help="Work in this workspace (a directory with edgebuild.toml) instead of the one found from here upward.",
)
def main(workspace_dir: Path | None) -> None:
    """edgebuild: build a model for a hardware target into a verified, signed, cached artifact."""
    # Some libraries (ORT's quantizers) call logging.basicConfig(INFO) on import; claim it first.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if workspace_dir is not None:
        from compiler import workspace

        try:
            workspace.use(workspace_dir)
        except UserError as error:
            click.echo(f"edgebuild: error: {error}", err=True)
            sys.exit(error.exit_code)


def _attach() -> None:
    from compiler.cli import bench, build, listing, ota, release, workspace_commands

    for module in (build, listing, workspace_commands, bench, release, ota):
        for command in module.COMMANDS:
            main.add_command(command)


_attach()

if __name__ == "__main__":
    main()
