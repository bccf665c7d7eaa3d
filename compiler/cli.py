"""The `edgebuild` command line.

User errors (bad recipe, unknown target, corrupt model, over budget) print one line and exit
non-zero; anything else is a bug and keeps its traceback. Heavy libraries are imported inside
commands so that `edgebuild targets` and an up-to-date `edgebuild build` stay fast.
"""

from __future__ import annotations

import json
import logging
import shlex
import sys
from pathlib import Path

import click
from rich.markup import escape

from compiler import config
from compiler.errors import UserError
from compiler.pipeline import ARTIFACTS
from compiler.progress import console, step

KEY_HELP = "Signing key (default: $EDGEBUILD_SIGNING_KEY, else the development key)."


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except UserError as error:
            click.echo(f"edgebuild: error: {error}", err=True)
            sys.exit(error.exit_code)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edgebuild")
def main() -> None:
    """edgebuild: build a model for a hardware target into a verified, cached artifact."""
    # Some libraries (ORT's quantizers) call logging.basicConfig(INFO) on import; claim it first.
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def _onnx_recipe(path: Path) -> config.ModelRecipe:
    """A recipe for a bare ONNX file: inputs from its signature, generated data, output cosine."""
    from compiler.importers.onnx_file import load_onnx, signature

    model = load_onnx(path)
    family = "cnn" if any(n.op_type == "Conv" for n in model.graph.node) else "generic"
    return config.ModelRecipe(
        name=path.stem,
        version="0.0.0",
        description=f"ONNX file {path}",
        path=None,
        family=family,
        source_kind="onnx",
        source=str(path.resolve()),
        inputs=signature(model, str(path)),
        outputs=signature(model, str(path), outputs=True),
        data={},
        metric={"kind": "output_cosine", "min_mean": 0.99},
        bench={},
    )


@main.command()
@click.option("-t", "--target", required=True, help="Target name (see `edgebuild targets`) or a .toml path.")
@click.option(
    "-m", "--model", default="minilm", show_default=True, help="Recipe name (see `edgebuild models`) or a .toml path."
)
@click.option("--onnx", "onnx_path", type=click.Path(path_type=Path), help="Build this ONNX file instead of a recipe.")
@click.option("--no-cache", is_flag=True, help="Ignore and do not fill the stage cache.")
@click.option("--json", "as_json", is_flag=True, help="Print the build record as JSON on stdout.")
@click.option(
    "--artifacts",
    type=click.Path(path_type=Path),
    default=ARTIFACTS,
    show_default=True,
    help="Where builds (<model>/<target>/) and the cache (cache/) go.",
)
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
    no_cache: bool,
    as_json: bool,
    artifacts: Path,
    make_bundle: bool,
    key: Path | None,
    tune_trials: int | None,
    rpc_tracker: str | None,
    rpc_key: str | None,
) -> None:
    """Build MODEL (or an ONNX file) for TARGET: import, passes, verify, compile, verify, package."""
    from compiler.cache import Cache
    from compiler.pipeline import build as run_build
    from compiler.pipeline import output_dir

    spec = config.load_target(target, check_passes=False)  # passes checked by build()
    spec = _with_tuning(spec, tune_trials, rpc_tracker, rpc_key)
    recipe = _onnx_recipe(onnx_path) if onnx_path else config.load_recipe(model)
    command = _canonical_command(spec.name, recipe.name, onnx_path, tune_trials)
    outcome = run_build(
        recipe,
        spec,
        Cache(artifacts / "cache", enabled=not no_cache),
        out_dir=output_dir(recipe, spec, artifacts),
        command=command,
    )
    record = outcome.record
    if outcome.up_to_date:
        step(f"{recipe.name} -> {spec.name}: up to date")
    for warning in outcome.warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}")
    metrics = record["metrics"]
    step(f"fidelity: {metrics['fidelity']['summary']}")
    step(
        f"size: {metrics['size_bytes'] / 1e6:.2f} MB ({100 * metrics['size_ratio']:.1f}% of FP32); "
        + (
            f"latency {metrics['latency']['ratio_vs_ort_fp32']:.2f}x ORT FP32 on this host"
            if metrics["latency"]["ratio_vs_ort_fp32"] is not None
            else "latency not measured (LiteRT model: its speed is the phone's)"
            if record["target"]["runtime"] == "litert"
            else "latency not measured (Core ML: verified in a reference interpreter; its speed is the iPhone's)"
            if record["target"]["runtime"] == "coreml"
            else "latency not measured (cross-compiled; verified under emulation)"
        )
    )
    from compiler.inspect_model import artifact_names

    step(f"artifact: {outcome.out_dir}/{artifact_names(record)}")
    step(f"report:   {outcome.out_dir / 'report.md'} (record: report.json, plot: report.png)")
    if make_bundle:
        _package(outcome.out_dir, key)
    if as_json:
        click.echo(json.dumps(record, indent=2, sort_keys=True))


def _with_tuning(
    spec: config.TargetSpec, trials: int | None, tracker: str | None = None, key: str | None = None
) -> config.TargetSpec:
    """`spec` with the command line's tuning options (--tune-trials, --rpc-tracker, --rpc-key)."""
    if trials is None and tracker is None and key is None:
        return spec
    if spec.runtime != "tvm":
        raise UserError(f"tuning options apply to TVM targets; {spec.name} runs on {spec.runtime}")
    from compiler.backends.tvm_build import with_rpc, with_trials

    return with_rpc(with_trials(spec, trials), tracker, key)


def _canonical_command(target: str, model: str, onnx_path: Path | None, trials: int | None = None) -> str:
    """The build command recorded in provenance: only what decides the output (no paths of this
    host such as --artifacts or --key), so the same build on another machine records the same."""
    source = f"--onnx {shlex.quote(onnx_path.name)}" if onnx_path else f"--model {shlex.quote(model)}"
    tuning = f" --tune-trials {trials}" if trials is not None else ""
    return f"edgebuild build --target {shlex.quote(target)} {source}{tuning}"


def _package(build_dir: Path, key: Path | None) -> None:
    from compiler.packaging import package as make_package

    outcome = make_package(build_dir, key)
    if outcome.development_key:
        step("note: signed with the DEVELOPMENT key (not for release; use --key or EDGEBUILD_SIGNING_KEY)")
    state = "up to date" if outcome.up_to_date else "written"
    step(f"bundle:   {outcome.bundle} ({state}; signed, signature.sig inside)")


@main.command()
@click.option("-t", "--target", required=True, help="Target name (see `edgebuild targets`) or a .toml path.")
@click.option("-m", "--model", default="minilm", show_default=True, help="Recipe name or a .toml path.")
@click.option("--key", type=click.Path(path_type=Path), help=KEY_HELP)
@click.option("--artifacts", type=click.Path(path_type=Path), default=ARTIFACTS, show_default=True)
def package(target: str, model: str, key: Path | None, artifacts: Path) -> None:
    """Package an existing build (its report.json) into the signed <model>-<version>-<target>.tar."""
    name = config.load_recipe(model).name if not model.endswith(".onnx") else Path(model).stem
    spec_name = config.load_target(target, check_passes=False).name
    _package(artifacts / name / spec_name, key)


@main.command()
@click.argument("model")
@click.option("-t", "--target", required=True, help="A TVM target (see `edgebuild targets`) or a .toml path.")
@click.option("--trials", type=int, help="MetaSchedule trials (default: the target's [tune] trials).")
@click.option("--rpc-tracker", metavar="HOST:PORT", help="Measure candidates on the boards of this TVM RPC tracker.")
@click.option("--rpc-key", metavar="KEY", help="The device key the boards register with at --rpc-tracker.")
@click.option("--artifacts", type=click.Path(path_type=Path), default=ARTIFACTS, show_default=True)
def tune(
    model: str, target: str, trials: int | None, rpc_tracker: str | None, rpc_key: str | None, artifacts: Path
) -> None:
    """Tune MODEL for a TVM TARGET into its tuning database (reused by later builds), then report."""
    from compiler.cache import Cache
    from compiler.pipeline import build as run_build
    from compiler.pipeline import output_dir

    spec = config.load_target(target, check_passes=False)
    if spec.runtime != "tvm":
        raise UserError(f"{spec.name} runs on {spec.runtime}: only TVM targets are tuned (e.g. desktop-tvm)")
    spec = _with_tuning(spec, trials, rpc_tracker, rpc_key)
    recipe = config.load_recipe(model)
    command = _canonical_command(spec.name, recipe.name, None, trials)
    outcome = run_build(recipe, spec, Cache(artifacts / "cache"), output_dir(recipe, spec, artifacts), command)
    tuning = outcome.record["stages"][-1]["stats"].get("tuning", {})
    step(
        f"tuning ({tuning.get('source', 'n/a')}): {tuning.get('new_trials', 0)} new trials of "
        f"{tuning.get('requested_trials', 0)} requested, {len(tuning.get('tasks', []))} tasks, "
        f"{tuning.get('wall_s', 0.0):.1f} s; per-task table in {outcome.out_dir / 'report.md'}"
    )


@main.command()
def schema() -> None:
    """Print the bundle manifest's JSON Schema (edgebuild.manifest/1)."""
    from compiler.packaging.manifest import SCHEMA_PATH

    click.echo(SCHEMA_PATH.read_text(), nl=False)


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--public-key", required=True, type=click.Path(path_type=Path), help="PEM public key to verify with.")
@click.option(
    "--signature", type=click.Path(path_type=Path), help="Detached signature to check instead of signature.sig."
)
def verify(bundle: Path, public_key: Path, signature: Path | None) -> None:
    """Check a bundle: tar safety, manifest schema, file digests, model-signing signature."""
    from compiler.packaging import verify_bundle

    problems = verify_bundle(bundle, public_key, signature)
    for problem in problems:
        click.echo(f"edgebuild: verify: {problem}", err=True)
    if problems:
        sys.exit(4)
    click.echo(f"OK: {bundle} is intact and signed by {public_key}")


@main.group()
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


@main.command()
def targets() -> None:
    """List hardware targets (one TOML file each in targets/)."""
    for name in config.available(config.TARGETS_DIR):
        spec = config.load_target(name)
        preset = f" [preset: {spec.preset}]" if spec.preset else ""
        click.echo(f"{name:<22} {spec.runtime:<12} {spec.precision:<6} {spec.description}{preset}")


@main.command()
def models() -> None:
    """List model recipes (one TOML file each in models/)."""
    for name in config.available(config.MODELS_DIR):
        recipe = config.load_recipe(name)
        click.echo(f"{name:<14} {recipe.version:<8} {recipe.family:<12} {recipe.description}")


@main.command(name="passes")
def list_passes() -> None:
    """List graph passes with their options and what they do."""
    import dataclasses
    import inspect
    import typing

    from passes.catalogue import CATALOGUE

    for name, pass_class in CATALOGUE.items():
        click.echo(click.style(name, bold=True) + f"  ({', '.join(pass_class.tools)})")
        for line in (inspect.getdoc(pass_class) or "").splitlines():
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
    return getattr(hint, "__name__", None) if typing.get_origin(hint) is None else str(hint).replace("typing.", "")


@main.command()
@click.argument("path", type=click.Path(path_type=Path))
def inspect(path: Path) -> None:
    """Describe an ONNX model or a build directory / report.json."""
    from compiler.inspect_model import describe

    click.echo(describe(path))


@main.command()
@click.argument("directory", type=click.Path(path_type=Path))
def replay(directory: Path) -> None:
    """Re-run just the pass that failed, from the reproducer a failed build printed."""
    from compiler.reproducer import replay as run_replay

    stats = run_replay(directory)
    click.echo(json.dumps(stats, indent=2, sort_keys=True, default=str))


@main.command()
@click.option("-m", "--model", "models_", multiple=True, help="Recipe(s) to benchmark (default: all).")
@click.option("--repeats", default=50, show_default=True, help="Timed runs per model (interleaved).")
@click.option("--no-olive", is_flag=True, help="Skip the Olive auto-opt peer column.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the table as JSON here.")
@click.option(
    "--tvm-trials",
    default="64,256",
    show_default=True,
    help="desktop-tvm rows: untuned plus these MetaSchedule budgets (comma-separated; 'none' skips TVM).",
)
def bench(models_: tuple[str, ...], repeats: int, no_olive: bool, json_path: Path | None, tvm_trials: str) -> None:
    """Benchmark every desktop target side by side against PyTorch eager and ORT FP32."""
    from compiler.bench import run_bench

    try:
        budgets = [] if tvm_trials == "none" else [int(t) for t in tvm_trials.split(",") if t.strip()]
    except ValueError as error:
        raise UserError(f"--tvm-trials '{tvm_trials}': give budgets like 64,256 or 'none'") from error
    if any(b <= 0 for b in budgets):
        raise UserError(f"--tvm-trials '{tvm_trials}': budgets must be positive (the untuned row is always there)")
    run_bench(
        list(models_) or config.available(config.MODELS_DIR),
        repeats=repeats,
        olive=not no_olive,
        json_path=json_path,
        tvm_trials=budgets,
    )


@main.command("bench-ota")
@click.option("--kills", default=200, show_default=True, help="kill -9 rounds per install method.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the figures as JSON here.")
def bench_ota(kills: int, json_path: Path | None) -> None:
    """Benchmark delivery: verify MB/s, delta size, metadata bytes for 10,000 bundles, kills survived."""
    from compiler.ota.bench import run_ota_bench

    run_ota_bench(kills, json_path)


@main.group()
def cache() -> None:
    """Inspect or clear the stage cache (artifacts/cache)."""


@cache.command("info")
@click.option("--artifacts", type=click.Path(path_type=Path), default=ARTIFACTS, show_default=True)
def cache_info(artifacts: Path) -> None:
    """Entries and size per stage."""
    from compiler.cache import Cache

    stages = Cache(artifacts / "cache").info()
    if not stages:
        click.echo("cache is empty")
    for stage, info in stages.items():
        click.echo(f"{stage:<32} {info['entries']:>4} entries {info['bytes'] / 1e6:>10.1f} MB")


@cache.command("clear")
@click.option("--artifacts", type=click.Path(path_type=Path), default=ARTIFACTS, show_default=True)
@click.option(
    "--measurements", is_flag=True, help="Also forget this host's recorded latencies (the next build re-times)."
)
def cache_clear(artifacts: Path, measurements: bool) -> None:
    """Remove every cache entry."""
    from compiler.cache import Cache

    click.echo(f"freed {Cache(artifacts / 'cache').clear() / 1e6:.1f} MB")
    if measurements:
        from compiler.measurements import forget_all, ledger_dir

        click.echo(f"forgot {forget_all()} recorded measurements in {ledger_dir()}")


@main.command()
@click.option("-f", "--file", "release_file", type=click.Path(path_type=Path), help="Default: release.toml.")
@click.option("-j", "--jobs", default=2, show_default=True, help="Builds run at the same time.")
@click.option("--key", type=click.Path(path_type=Path), help="Release signing key (or EDGEBUILD_SIGNING_KEY).")
@click.option("--repo", type=click.Path(path_type=Path), default=Path("ota"), show_default=True, help="OTA repository.")
@click.option("--report-dir", type=click.Path(path_type=Path), help="Default: artifacts/releases/<release name>/.")
@click.option("--artifacts", type=click.Path(path_type=Path), default=ARTIFACTS, show_default=True)
@click.option("--publish/--no-publish", default=True, show_default=True, help="Publish when every pair passes.")
@click.option("--only-target", help="Build only this target's pairs (a CI matrix job); never publishes.")
def release(
    release_file: Path | None,
    jobs: int,
    key: Path | None,
    repo: Path,
    report_dir: Path | None,
    artifacts: Path,
    publish: bool,
    only_target: str | None,
) -> None:
    """Build release.toml's model x target matrix, gate it, sign it, publish it to its first channel."""
    from compiler.release import default_report_dir, run_release
    from compiler.release_config import RELEASE_FILE, load_release

    definition = load_release(release_file or RELEASE_FILE)
    if jobs < 1:
        raise UserError(f"--jobs {jobs}: run at least one build at a time")
    directory = report_dir or default_report_dir(definition.name, artifacts)
    run_release(definition, key, repo, directory, artifacts, jobs=jobs, publish=publish, only_target=only_target)


@main.command()
@click.option("-f", "--file", "release_file", type=click.Path(path_type=Path), help="Default: release.toml.")
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    default=Path(".github/workflows/release.yml"),
    show_default=True,
)
def ci(release_file: Path | None, output: Path) -> None:
    """Render the CI workflow (GitHub Actions: a build job per target, then publish) from release.toml."""
    from compiler.release_ci import render_workflow
    from compiler.release_config import RELEASE_FILE, load_release

    definition = load_release(release_file or RELEASE_FILE)
    render_workflow(definition, output)
    step(f"wrote {output}: {len(definition.targets())} build jobs + publish, from {definition.path.name}")


def _attach_ota_commands() -> None:
    from compiler import cli_ota

    for command in cli_ota.COMMANDS:
        main.add_command(command)


_attach_ota_commands()

if __name__ == "__main__":
    main()
