"""`edgebuild bench` / `make bench`: every desktop target side by side, per model, in one run.

For each recipe: PyTorch eager FP32, ONNX Runtime FP32 (the imported model), every desktop
target's artifact (built through the normal cached pipeline) and, as a peer, Olive's `auto-opt`
INT8 output. Latency is timed interleaved in one process at the recipe's benchmark shape with one
thread (the machine is shared and noisy: ratios measured together are the figures to quote);
size is the shipped file; fidelity is the recipe's metric against the PyTorch FP32 reference.
This is a benchmark, not a test: it prints a table and asserts nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compiler import config
from compiler.cache import Cache
from compiler.errors import UserError
from compiler.progress import step

THREADS = 1


@dataclass
class Row:
    name: str
    latency_ms: float | None = None
    size_bytes: int | None = None
    fidelity: float | None = None
    fidelity_summary: str = ""
    note: str = ""
    ratio_vs_ort: float | None = None
    speedup_vs_torch: float | None = None


def _torch_module(recipe: config.ModelRecipe) -> Any:
    if recipe.source_kind == "torch":
        from compiler.importers.torch_factory import load_factory_module

        return load_factory_module(recipe).eval()
    from compiler.importers.huggingface import load_huggingface_module

    return load_huggingface_module(recipe)[0].eval()


def bench_model(name: str, repeats: int, olive: bool, workdir: Path) -> list[Row]:
    """Build every desktop target for recipe `name` and time everything side by side.

    `workdir` holds scratch files (Olive's output) until the timing is done.
    """
    import torch

    from compiler.pipeline import build
    from compiler.runtime import measure_latency, ort_runner, session
    from compiler.stages import Evaluator, tokenizer_dir

    recipe = config.load_recipe(name)
    targets = [t for t in config.available(config.TARGETS_DIR) if t.startswith("desktop-")]
    records: dict[str, dict[str, Any]] = {}
    rows: dict[str, Row] = {}
    paths: dict[str, Path] = {}
    for target_name in targets:
        step(f"bench {recipe.name}: building {target_name}")
        target = config.load_target(target_name)
        try:
            outcome = build(recipe, target, Cache(), command=f"edgebuild bench -m {name}")
        except UserError as error:
            rows[target_name] = Row(target_name, note=f"build failed: {error}")
            continue
        records[target_name] = outcome.record
        paths[target_name] = outcome.out_dir / outcome.record["artifact"]
        fidelity = outcome.record["metrics"]["fidelity"]
        rows[target_name] = Row(
            target_name,
            size_bytes=outcome.record["metrics"]["size_bytes"],
            fidelity=fidelity["value"],
            fidelity_summary=fidelity["summary"],
        )
    if not records:
        raise UserError(f"bench {recipe.name}: no desktop target built; see the errors above")
    first = next(iter(records.values()))
    imported = Path(first["stages"][0]["path"])
    from compiler.data import load_dataset
    from compiler.importers.torch_export import load_reference

    dataset = load_dataset(recipe, tokenizer_dir=tokenizer_dir(recipe))
    evaluate = Evaluator(recipe, dataset, load_reference(imported.parent / "reference.npz"))
    ort_fp32 = evaluate(imported)
    rows["ort-fp32"] = Row(
        "ORT FP32", size_bytes=imported.stat().st_size, fidelity=ort_fp32.value, fidelity_summary=ort_fp32.summary
    )
    paths["ort-fp32"] = imported

    if olive:
        from compiler.olive_peer import auto_opt_int8

        step(f"bench {recipe.name}: Olive auto-opt INT8 (peer)")
        try:
            source = imported if recipe.source_kind == "torch" else _olive_source(recipe)
            olive_path = auto_opt_int8(source, workdir / recipe.name, is_onnx=source.suffix == ".onnx")
            olive_fidelity = evaluate(olive_path)
            size = sum(p.stat().st_size for p in olive_path.parent.glob(olive_path.name + "*"))
            rows["olive"] = Row(
                "Olive auto-opt INT8",
                size_bytes=size,
                fidelity=olive_fidelity.value,
                fidelity_summary=olive_fidelity.summary,
            )
            paths["olive"] = olive_path
        except UserError as error:
            rows["olive"] = Row("Olive auto-opt INT8", note=f"not measured: {error}")

    step(f"bench {recipe.name}: PyTorch eager FP32 reference")
    torch.set_num_threads(THREADS)
    module = _torch_module(recipe)
    names = [spec.name for spec in recipe.inputs]
    bench_inputs = tuple(torch.from_numpy(dataset.bench[n]) for n in names)
    torch_params = sum(t.numel() * t.element_size() for t in module.state_dict().values())
    rows["torch"] = Row(
        "PyTorch eager FP32",
        size_bytes=torch_params,
        fidelity=_reference_value(ort_fp32),
        fidelity_summary="the reference",
    )

    def torch_run() -> object:
        with torch.inference_mode():
            return module(*bench_inputs)

    runners = {"torch": torch_run}
    runners.update({key: ort_runner(session(path, threads=THREADS), dataset.bench) for key, path in paths.items()})
    seconds = measure_latency(runners, repeats=repeats, label=f"{recipe.name}: timing {len(runners)} configurations")
    for key, value in seconds.items():
        rows[key].latency_ms = value * 1000
        rows[key].ratio_vs_ort = value / seconds["ort-fp32"]
        rows[key].speedup_vs_torch = seconds["torch"] / value
    order = ["torch", "ort-fp32", *targets, "olive"]
    return [rows[key] for key in order if key in rows]


def _olive_source(recipe: config.ModelRecipe) -> Path:
    from compiler.importers.huggingface import model_directory

    return model_directory(recipe)


def _reference_value(fidelity: Any) -> float:
    """PyTorch FP32 is the reference itself: cosine 1, or the reference's own accuracy."""
    return float(fidelity.detail.get("reference_accuracy", 1.0)) if fidelity.metric == "top1_accuracy" else 1.0


def print_table(model: str, rows: list[Row], shape: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"{model}: batch shape {shape}, {THREADS} thread, interleaved medians (one run)")
    for column in (
        "configuration",
        "latency vs ORT FP32",
        "speed-up vs PyTorch",
        "size (MB)",
        "size vs ORT FP32",
        "fidelity",
        "note",
    ):
        table.add_column(column, justify="left" if column in ("configuration", "note", "fidelity") else "right")
    fp32_size = next(r.size_bytes for r in rows if r.name == "ORT FP32") or 1
    for row in rows:
        table.add_row(
            row.name,
            f"{row.ratio_vs_ort:.2f}x" if row.ratio_vs_ort else "-",
            f"{row.speedup_vs_torch:.2f}x" if row.speedup_vs_torch else "-",
            f"{row.size_bytes / 1e6:.1f}" if row.size_bytes else "-",
            f"{100 * row.size_bytes / fp32_size:.0f}%" if row.size_bytes else "-",
            row.fidelity_summary.split(";")[0] if row.fidelity_summary else "-",
            escape(row.note),
        )
    # Tables are the benchmark's output: stdout, wide enough to stay readable when piped to a file.
    Console(width=max(Console().width, 170)).print(table)


def run_bench(models: list[str], repeats: int = 50, olive: bool = True, json_path: Path | None = None) -> None:
    results: dict[str, Any] = {}
    scratch = Cache()
    try:
        for name in models:
            rows = bench_model(name, repeats, olive, scratch.scratch())
            recipe = config.load_recipe(name)
            print_table(name, rows, recipe.bench)
            results[name] = {"bench_shape": recipe.bench, "threads": THREADS, "rows": [asdict(r) for r in rows]}
    finally:
        scratch.close()
    if json_path is not None:
        json_path.write_text(
            json.dumps(results, indent=2, default=lambda v: float(v) if isinstance(v, np.floating) else v)
        )
