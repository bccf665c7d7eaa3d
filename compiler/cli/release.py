"""Release commands: release (the model x target matrix, gated, signed, published) and ci."""

from __future__ import annotations

from pathlib import Path

import click

from compiler.cli.build import artifacts_dir, artifacts_option
from compiler.errors import UserError
from compiler.progress import step

RELEASE_FILE_HELP = "Default: the workspace's release.toml."


@click.command()
@click.option("-f", "--file", "release_file", type=click.Path(path_type=Path), help=RELEASE_FILE_HELP)
@click.option("-j", "--jobs", default=2, show_default=True, help="Builds run at the same time.")
@click.option("--key", type=click.Path(path_type=Path), help="Release signing key (or EDGEBUILD_SIGNING_KEY).")
@click.option("--repo", type=click.Path(path_type=Path), help="OTA repository [default: <workspace>/ota].")
@click.option("--report-dir", type=click.Path(path_type=Path), help="Default: artifacts/releases/<release name>/.")
@artifacts_option
@click.option("--publish/--no-publish", default=True, show_default=True, help="Publish when every pair passes.")
@click.option("--only-target", help="Build only this target's pairs (a CI matrix job); never publishes.")
def release(
    release_file: Path | None,
    jobs: int,
    key: Path | None,
    repo: Path | None,
    report_dir: Path | None,
    artifacts: Path | None,
    publish: bool,
    only_target: str | None,
) -> None:
    """Build release.toml's model x target matrix, gate it, sign it, publish it to its first channel."""
    from compiler import workspace
    from compiler.release.config import load_release
    from compiler.release.pipeline import default_report_dir, run_release

    definition = load_release(release_file)
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: run at least one build at a time")
    root = artifacts_dir(artifacts)
    directory = report_dir or default_report_dir(definition.name, root)
    repository = repo or workspace.current().root / "ota"
    run_release(definition, key, repository, directory, root, jobs=jobs, publish=publish, only_target=only_target)


@click.command()
@click.option("-f", "--file", "release_file", type=click.Path(path_type=Path), help=RELEASE_FILE_HELP)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path(".github/workflows/release.yml"),
    show_default=True,
)
def ci(release_file: Path | None, output: Path) -> None:
    """Render the CI workflow (GitHub Actions: a build job per target, then publish) from release.toml."""
    from compiler.release.ci import render_workflow
    from compiler.release.config import load_release

    definition = load_release(release_file)
    render_workflow(definition, output)
    step(f"wrote {output}: {len(definition.targets())} build jobs + publish, from {definition.path.name}")


COMMANDS = (release, ci)
