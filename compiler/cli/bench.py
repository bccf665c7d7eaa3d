"""Benchmark commands: bench (every recipe's family bench), bench-arm (ARM64 instruction counts) and
bench-ota (delivery figures)."""

from __future__ import annotations

from pathlib import Path

import click

from compiler.errors import UserError


@click.command()
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
    """Benchmark every recipe with its family's bench: desktop targets side by side with their peers."""
    from compiler.bench import BenchOptions, run_bench
    from compiler.engine import config

    try:
        budgets = [] if tvm_trials == "none" else [int(t) for t in tvm_trials.split(",") if t.strip()]
    except ValueError as error:
        raise UserError(f"--tvm-trials '{tvm_trials}': give budgets like 64,256 or 'none'") from error
    if any(b <= 0 for b in budgets):
        raise UserError(f"--tvm-trials '{tvm_trials}': budgets must be positive (the untuned row is always there)")
    options = BenchOptions(repeats=repeats, olive=not no_olive, tvm_trials=tuple(budgets))
    run_bench(list(models_) or config.available("models"), options, json_path)


@click.command("bench-arm")
@click.option("-m", "--model", "models_", multiple=True, help="Recipe(s) to count (default: digits-cnn and minilm).")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the table as JSON here.")
def bench_arm(models_: tuple[str, ...], json_path: Path | None) -> None:
    """Benchmark the ARM64 targets: instructions per inference under qemu with the board's CPU model."""
    from compiler.bench.arm import MODELS, run_arm_bench

    run_arm_bench(list(models_) or list(MODELS), json_path)


@click.command("bench-ota")
@click.option("--kills", default=200, show_default=True, help="kill -9 rounds per install method.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Also write the figures as JSON here.")
def bench_ota(kills: int, json_path: Path | None) -> None:
    """Benchmark delivery: verify MB/s, delta size, metadata bytes for 10,000 bundles, kills survived."""
    from compiler.bench.delivery import run_ota_bench

    run_ota_bench(kills, json_path)


COMMANDS = (bench, bench_arm, bench_ota)
