"""`edgebuild bench-arm` (part of `make bench`): the ARM64 targets side by side, in instructions.

For each recipe (default digits-cnn and MiniLM) it builds arm64-fp32 (TVM), arm64-int8 (ONNX
Runtime for AArch64, Cortex-A72), arm64-litert-int8 (LiteRT for AArch64 with XNNPACK, Cortex-A72)
and arm64-int8-a76 (Cortex-A76) through the normal cached pipeline, and tabulates what each build
counted under qemu with the board's CPU model: executed instructions per inference by class, for
the artifact and for ONNX Runtime FP32 on the same CPU model and inputs, beside the shipped size
and the fidelity verified under emulation. A build that fails is a row saying why.

Counts, not times: the build host cannot time a board, and qemu models no caches or pipelines.
They repeat to within about 0.01% between builds (the same code translates the same way; allocator
paths differ slightly), so one count per configuration is the figure; the spread is stated in
BUILD.md rather than measured per run. This is a benchmark, not a test: it prints a table and
asserts nothing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from compiler.engine import config
from compiler.engine.cache import Cache
from compiler.errors import UserError
from compiler.progress import step

MODELS = ("digits-cnn", "minilm")
TARGETS = (
    ("TVM FP32", "arm64-fp32"),
    ("ORT INT8", "arm64-int8"),
    ("LiteRT INT8", "arm64-litert-int8"),
    ("ORT INT8", "arm64-int8-a76"),
)


@dataclass
class ArmRow:
    configuration: str
    cpu: str = "-"
    instructions: int | None = None
    ratio_vs_ort_fp32: float | None = None
    integer_mac_share: float | None = None
    classes: dict[str, int] | None = None
    size_bytes: int | None = None
    size_ratio: float | None = None
    fidelity: str = "-"
    note: str = ""


def _counted_row(label: str, counts: dict[str, int], reference: dict[str, int], cpu: str) -> ArmRow:
    from compiler.toolchains.arm64 import INTEGER_MAC

    return ArmRow(
        label,
        cpu=cpu,
        instructions=counts["total"],
        ratio_vs_ort_fp32=counts["total"] / reference["total"],
        integer_mac_share=sum(counts[name] for name in INTEGER_MAC) / counts["total"],
        classes=counts,
    )


def bench_arm_model(name: str) -> list[ArmRow]:
    """Build (or reuse) every ARM64 target for recipe `name`; one row per artifact and per CPU model's
    ONNX Runtime FP32 reference, in the order A72 rows, then A76 rows."""
    from compiler.engine.build import build

    recipe = config.load_recipe(name)
    built: list[tuple[str, str, dict[str, Any] | None, str]] = []
    for label, target_name in TARGETS:
        step(f"bench-arm {name}: building {target_name}")
        try:
            record = build(
                recipe, config.load_target(target_name), Cache(), None, command=f"edgebuild bench-arm -m {name}"
            )
            built.append((label, target_name, record.record, ""))
        except UserError as error:
            built.append((label, target_name, None, f"build failed: {error}"))
    rows: list[ArmRow] = []
    references: dict[str, ArmRow] = {}
    for label, target_name, record, failure in built:
        if record is None:
            rows.append(ArmRow(f"{label} ({target_name})", note=failure))
            continue
        metrics = record["metrics"]
        counted = metrics["latency"].get("instructions")
        if not counted:
            rows.append(ArmRow(f"{label} ({target_name})", note="the build recorded no instruction count"))
            continue
        cpu = counted["cpu"]
        if cpu not in references:
            fp32_size = round(metrics["size_bytes"] / metrics["size_ratio"])
            reference = _counted_row("ORT FP32 (the imported model)", counted["ort_fp32"], counted["ort_fp32"], cpu)
            reference.size_bytes, reference.size_ratio = fp32_size, 1.0
            reference.note = "onnxruntime aarch64 wheel, same inputs"
            references[cpu] = reference
        row = _counted_row(f"{label} ({target_name})", counted["artifact"], counted["ort_fp32"], cpu)
        row.size_bytes, row.size_ratio = metrics["size_bytes"], metrics["size_ratio"]
        row.fidelity = metrics["fidelity"]["summary"]
        rows.append(row)
    ordered = []
    for cpu, reference in references.items():
        ordered += [reference, *(row for row in rows if row.cpu == cpu)]
    ordered += [row for row in rows if row.cpu == "-"]
    return ordered


def _millions(value: int | None) -> str:
    return "-" if value is None else f"{value / 1e6:,.1f} M"


def print_arm_table(model: str, rows: list[ArmRow], shape: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{model} on ARM64: instructions per inference under qemu-aarch64 -cpu, batch shape {shape}")
    columns = (
        "configuration", "cpu", "instructions", "vs ORT FP32", "integer MAC", "SDOT/UDOT", "SMULL/SMLAL",
        "SADALP", "FMLA", "scalar FP", "size (MB)", "size vs FP32", "fidelity under qemu", "note",
    )  # fmt: skip
    for column in columns:
        table.add_column(
            column, justify="left" if column in ("configuration", "cpu", "fidelity under qemu", "note") else "right"
        )
    for row in rows:
        classes = row.classes or {}
        table.add_row(
            row.configuration,
            row.cpu,
            _millions(row.instructions),
            f"{row.ratio_vs_ort_fp32:.2f}x" if row.ratio_vs_ort_fp32 is not None else "-",
            f"{100 * row.integer_mac_share:.0f}%" if row.integer_mac_share is not None else "-",
            *(_millions(classes.get(name)) for name in ("sdot_udot", "smull_smlal", "sadalp", "fmla", "scalar_fp")),
            f"{row.size_bytes / 1e6:.2f}" if row.size_bytes else "-",
            f"{100 * row.size_ratio:.1f}%" if row.size_ratio else "-",
            escape(row.fidelity.split(";")[0]),
            escape(row.note),
        )
    Console(width=max(Console().width, 220)).print(table)


def run_arm_bench(models: list[str], json_path: Path | None = None) -> dict[str, Any]:
    """The ARM64 table for each recipe; the rows by recipe (also as JSON)."""
    import json

    results: dict[str, Any] = {}
    for name in models:
        rows = bench_arm_model(name)
        print_arm_table(name, rows, config.load_recipe(name).bench)
        results[name] = {"bench_shape": config.load_recipe(name).bench, "rows": [asdict(row) for row in rows]}
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2))
    return results


__all__ = ["MODELS", "ArmRow", "bench_arm_model", "print_arm_table", "run_arm_bench"]
