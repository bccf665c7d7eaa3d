"""Build commands: build, package, verify, tune, replay, compare."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

import click
from rich.markup import escape

from compiler.engine import config
from compiler.engine.specs import TargetSpec
from compiler.errors import UserError
from compiler.progress import console, step

KEY_HELP = "Signing key (default: $EDGEBUILD_SIGNING_KEY, else the development key)."
ARTIFACTS_HELP = "Where builds (<model>/<target>/) and the cache (cache/) go [default: <workspace>/artifacts]."


def artifacts_option(function: click.decorators.FC) -> click.decorators.FC:
    return click.option("--artifacts", type=click.Path(path_type=Path), help=ARTIFACTS_HELP)(function)


def artifacts_dir(artifacts: Path | None) -> Path:
    from compiler import workspace

    return artifacts if artifacts is not None else workspace.current().artifacts


@click.command()
@click.option("-t", "--target", required=True, help="Target name (see `edgebuild targets`) or a .toml path.")
@click.option(
    "-m", "--model", default="minilm", show_default=True, help="Recipe name (see `edgebuild models`) or a .toml path."
)
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), help="Build this ONNX file instead of a recipe.")
@click.option(
    "--name", help="With --onnx: the model's name (its artifacts/<name>/ directory) [default: the file's stem]."
)
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path),
    help="With --onnx: an .npz of input arrays named by input, one sample per row (else random data).",
)
@click.option(
    "--dynamic-axis",
    "dynamic_axes",
    multiple=True,
    metavar="NAME",
    help="With --onnx: an output axis name that must stay dynamic (input axes always do); repeatable.",
)
@click.option("--no-cache", is_flag=True, help="Ignore and do not fill the stage cache.")
@click.option("--json", "as_json", is_flag=True, help="Print the build record as JSON on stdout.")
@artifacts_option
@click.option(
    "--package/--no-package",
    "make_bundle",
    default=True,
    show_default=True,
    help="Also write the signed bundle (skipped when up to date).",
)
@click.option("--key", type=click.Path(path_type=Path), help=KEY_HELP)
@click.option("--tune-trials", type=int, help="TVM targets: MetaSchedule trials (0 = untuned), instead of [tune].")
@click.option("--rpc-tracker", metavar="HOST:PORT", help="TVM targets: tune on the boards of this TVM RPC tracker.")
@click.option("--rpc-key", metavar="KEY", help="The device key the boards register with at --rpc-tracker.")
def build(
    target: str,
    model: str,
    onnx_path: Path | None,
    name: str | None,
    data_path: Path | None,
    dynamic_axes: tuple[str, ...],
    no_cache: bool,
    as_json: bool,
    artifacts: Path | None,
    make_bundle: bool,
    key: Path | None,
    tune_trials: int | None,
    rpc_tracker: str | None,
    rpc_key: str | None,
) -> None:
    """Build MODEL (or an ONNX file) for TARGET: import, passes, verify, compile, verify, package."""
    from compiler.backends.catalogue import backend_class, target_backend_class
    from compiler.engine.build import build as run_build
    from compiler.engine.build import output_dir
    from compiler.engine.cache import Cache

    spec = config.load_target(target, check_passes=False)  # passes checked by build()
    spec = backend_class(spec.runtime).tuned(spec, tune_trials, rpc_tracker, rpc_key)
    recipe = _recipe(model, onnx_path, name, data_path, dynamic_axes)
    command = canonical_command(spec.name, recipe.name, onnx_path, tune_trials, name, data_path, dynamic_axes)
    root = artifacts_dir(artifacts)
    outcome = run_build(
        recipe,
        spec,
        Cache(root / "cache", enabled=not no_cache),
        out_dir=output_dir(recipe, spec, root),
        command=command,
    )
    record = outcome.record
    if outcome.up_to_date:
        step(f"{recipe.name} -> {spec.name}: up to date")
    for warning in outcome.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    metrics = record["metrics"]
    step(f"fidelity: {metrics['fidelity']['summary']}")
    ratio = metrics["latency"]["ratio_vs_ort_fp32"]
    counted = metrics["latency"].get("instructions")
    latency = (
        f"latency {ratio:.2f}x ORT FP32 on this host"
        if ratio is not None
        else f"latency not measured ({target_backend_class(spec).untimed_summary})"
    )
    if counted:
        latency = (
            f"{counted['ratio_vs_ort_fp32']:.2f}x ORT FP32's instructions per inference under qemu -cpu "
            f"{counted['cpu']} ({100 * counted['integer_mac_share']:.0f}% integer multiply-accumulate; a count, "
            "not a time)"
        )
    step(f"size: {metrics['size_bytes'] / 1e6:.2f} MB ({100 * metrics['size_ratio']:.1f}% of FP32); {latency}")
    if "precision" in metrics:  # records built before precision was measured have none
        step(f"precision: {metrics['precision']['summary']}")
    from compiler.cli.inspect import artifact_names

    step(f"artifact: {outcome.out_dir}/{artifact_names(record)}")
    step(f"report:   {outcome.out_dir / 'report.md'} (record: report.json, plot: report.png)")
    if make_bundle:
        package_build(outcome.out_dir, key)
    if as_json:
        click.echo(json.dumps(record, indent=2, sort_keys=True))


def _recipe(
    model: str,
    onnx_path: Path | None,
    name: str | None = None,
    data_path: Path | None = None,
    dynamic_axes: tuple[str, ...] = (),
) -> config.ModelRecipe:
    if onnx_path is None:
        given = [
            option
            for option, value in (("--name", name), ("--data", data_path), ("--dynamic-axis", dynamic_axes))
            if value
        ]
        if given:
            raise UserError(f"{', '.join(given)} go with --onnx; a recipe names its model, data and axes itself")
        return config.load_recipe(model)
    from compiler.families.catalogue import recipe_for_onnx_file

    return recipe_for_onnx_file(onnx_path, name, data_path, dynamic_axes)


def canonical_command(
    target: str,
    model: str,
    onnx_path: Path | None,
    trials: int | None = None,
    name: str | None = None,
    data_path: Path | None = None,
    dynamic_axes: tuple[str, ...] = (),
) -> str:
    """The build command recorded in provenance: only what decides the output (no paths of this
    host such as --artifacts or --key), so the same build on another machine records the same."""
    source = f"--onnx {shlex.quote(onnx_path.name)}" if onnx_path else f"--model {shlex.quote(model)}"
    if name:
        source += f" --name {shlex.quote(name)}"
    if data_path:
        source += f" --data {shlex.quote(data_path.name)}"
    source += "".join(f" --dynamic-axis {shlex.quote(axis)}" for axis in dynamic_axes)
    tuning = f" --tune-trials {trials}" if trials is not None else ""
    return f"edgebuild build --target {shlex.quote(target)} {source}{tuning}"


def package_build(build_dir: Path, key: Path | None) -> None:
    from compiler.packaging.bundle import package as make_package

    outcome = make_package(build_dir, key)
    if outcome.development_key:
        step("note: signed with the DEVELOPMENT key (not for release; use --key or EDGEBUILD_SIGNING_KEY)")
    state = "up to date" if outcome.up_to_date else "written"
    step(f"bundle:   {outcome.bundle} ({state}; signed, signature.sig inside)")


@click.command()
@click.option("-t", "--target", required=True, help="Target name (see `edgebuild targets`) or a .toml path.")
@click.option("-m", "--model", default="minilm", show_default=True, help="Recipe name or a .toml path.")
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), help="The ONNX file the build was made from.")
@click.option("--name", help="With --onnx: the name it was built under (build --name).")
@click.option("--key", type=click.Path(path_type=Path), help=KEY_HELP)
@artifacts_option
def package(
    target: str, model: str, onnx_path: Path | None, name: str | None, key: Path | None, artifacts: Path | None
) -> None:
    """Package an existing build (its report.json) into the signed <model>-<version>-<target>.tar."""
    name = (name or onnx_path.stem) if onnx_path is not None else config.load_recipe(model).name
    spec_name = config.load_target(target, check_passes=False).name
    package_build(artifacts_dir(artifacts) / name / spec_name, key)


@click.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--public-key", required=True, type=click.Path(path_type=Path), help="PEM public key to verify with.")
@click.option(
    "--signature", type=click.Path(path_type=Path), help="Detached signature to check instead of signature.sig."
)
def verify(bundle: Path, public_key: Path, signature: Path | None) -> None:
    """Check a bundle: tar safety, manifest schema, file digests, model-signing signature."""
    from compiler.packaging.bundle import verify_bundle

    problems = verify_bundle(bundle, public_key, signature)
    for problem in problems:
        click.echo(f"edgebuild: verify: {problem}", err=True)
    if problems:
        sys.exit(4)
    click.echo(f"OK: {bundle} is intact and signed by {public_key}")


@click.command()
@click.argument("model")
@click.option("-t", "--target", required=True, help="A TVM target (see `edgebuild targets`) or a .toml path.")
@click.option("--trials", type=int, help="MetaSchedule trials (default: the target's [tune] trials).")
@click.option("--rpc-tracker", metavar="HOST:PORT", help="Measure candidates on the boards of this TVM RPC tracker.")
@click.option("--rpc-key", metavar="KEY", help="The device key the boards register with at --rpc-tracker.")
@artifacts_option
def tune(
    model: str, target: str, trials: int | None, rpc_tracker: str | None, rpc_key: str | None, artifacts: Path | None
) -> None:
    """Tune MODEL for a TVM TARGET into its tuning database (reused by later builds), then report."""
    from compiler.backends.catalogue import backend_class
    from compiler.engine.build import build as run_build
    from compiler.engine.build import output_dir
    from compiler.engine.cache import Cache

    spec: TargetSpec = config.load_target(target, check_passes=False)
    backend = backend_class(spec.runtime)
    if not backend.tunable:
        raise UserError(f"{spec.name} runs on {spec.runtime}: only TVM targets are tuned (e.g. desktop-tvm)")
    spec = backend.tuned(spec, trials, rpc_tracker, rpc_key)
    recipe = config.load_recipe(model)
    command = canonical_command(spec.name, recipe.name, None, trials)
    root = artifacts_dir(artifacts)
    outcome = run_build(recipe, spec, Cache(root / "cache"), output_dir(recipe, spec, root), command)
    tuning = outcome.record["stages"][-1]["stats"].get("tuning", {})
    step(
        f"tuning ({tuning.get('source', 'n/a')}): {tuning.get('new_trials', 0)} new trials of "
        f"{tuning.get('requested_trials', 0)} requested, {len(tuning.get('tasks', []))} tasks, "
        f"{tuning.get('wall_s', 0.0):.1f} s; per-task table in {outcome.out_dir / 'report.md'}"
    )


@click.command()
@click.argument("directory", type=click.Path(path_type=Path))
def replay(directory: Path) -> None:
    """Re-run just the pass that failed, from the reproducer a failed build printed."""
    from compiler.engine.reproducer import replay as run_replay

    stats = run_replay(directory)
    click.echo(json.dumps(stats, indent=2, sort_keys=True, default=str))


@click.command()
@click.argument("before", type=click.Path(path_type=Path))
@click.argument("after", type=click.Path(path_type=Path))
def compare(before: Path, after: Path) -> None:
    """Compare two build records (report.json, or directories of them) ignoring provenance, code
    digests and timings; exits 1 when they differ."""
    from compiler.engine.record_diff import compare_paths

    differences = compare_paths(before, after)
    for line in differences:
        click.echo(line)
    if differences:
        sys.exit(1)
    click.echo(f"same: {after} records what {before} records (provenance, digests and timings aside)")


COMMANDS = (build, package, verify, tune, replay, compare)
