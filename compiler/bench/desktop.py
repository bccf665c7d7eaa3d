"""`edgebuild bench` / `make bench`: every desktop target side by side, per model, in one run.

For each recipe: PyTorch eager FP32, ONNX Runtime FP32 (the imported model), every desktop
target's artifact (built through the normal cached pipeline) and, as a peer, Olive's `auto-opt`
INT8 output, and TVM (`desktop-tvm`) untuned and at each tuning budget asked for (`--tvm-trials`),
each tuned from an empty database of its own, tuning and timing with one thread; the note gives
the tuning wall time. The phone targets add size and fidelity rows: android-* LiteRT models with
their latency a ratio to ONNX Runtime FP32 timed in the LiteRT toolchain's own process,
android-ort-int8's .ort timed here beside ORT FP32 (host figures, not phone figures), and ios-*
with no latency (Core ML runs only on Apple devices; fidelity comes from the MIL reference
interpreter). Latency is timed interleaved in one process at the recipe's benchmark shape with one
thread (the machine is shared and noisy: ratios measured together are the figures to quote);
size is the shipped file; fidelity is the recipe's metric against the PyTorch FP32 reference.
Other families bring their own bench (compiler/bench/__init__.py runs each recipe's).
This is a benchmark, not a test: it prints a table and asserts nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from compiler.backends.base import Backend
from compiler.bench import BenchOptions
from compiler.engine import config
from compiler.engine.cache import Cache
from compiler.errors import UserError
from compiler.progress import step

THREADS = 1
TVM_TARGET = "desktop-tvm"
DEFAULT_TVM_TRIALS = (64, 256)


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
    from compiler.families.single_graph.importing import torch_module

    return torch_module(recipe).eval()


def _backend(record: dict[str, Any]) -> Backend:
    """The backend of a build record's target (what runs its artifact)."""
    from compiler.backends.catalogue import backend_for

    return backend_for(config.load_target(record["target"]["name"], check_passes=False))


def _build_row(
    recipe: config.ModelRecipe, target: config.TargetSpec, label: str, cache: Cache, out_dir: Path | None = None
) -> tuple[Row, dict[str, Any] | None]:
    """Build (or reuse) one target through the normal pipeline: its row (size, fidelity) and record,
    or a row saying why the build failed and no record."""
    from compiler.engine.build import build

    step(f"bench {recipe.name}: building {label}")
    try:
        record = build(recipe, target, cache, out_dir, command=f"edgebuild bench -m {recipe.name}").record
    except UserError as error:
        return Row(label, note=f"build failed: {error}"), None
    fidelity = record["metrics"]["fidelity"]
    row = Row(
        label,
        size_bytes=record["metrics"]["size_bytes"],
        fidelity=fidelity["value"],
        fidelity_summary=fidelity["summary"],
    )
    return row, record


def _artifact(record: dict[str, Any]) -> Path:
    """The compile stage's artifact in the cache (a TVM model.so has its io.json beside it)."""
    return Path(record["stages"][-1]["path"])


def _tvm_variants(
    recipe: config.ModelRecipe, budgets: Sequence[int], workdir: Path
) -> tuple[dict[str, Row], dict[str, Path], dict[str, dict[str, Any]]]:
    """desktop-tvm untuned and at each budget: rows, artifact paths, records (builds go to `workdir`).

    Each variant gets its own cache (artifacts/cache/bench-tvm/<trials>/) so its tuning database
    starts empty: "untuned" means no records at all, and each budget's tuning time is from scratch.
    TVM_NUM_THREADS=1 makes the tuner measure with the thread count the table is timed with.
    """
    from compiler.backends.tvm import with_trials
    from compiler.backends.tvm_tuning import thread_env

    rows: dict[str, Row] = {}
    paths: dict[str, Path] = {}
    records: dict[str, dict[str, Any]] = {}
    base = config.load_target(TVM_TARGET)
    with thread_env(THREADS):
        for trials in (0, *budgets):
            key = f"{TVM_TARGET}@{trials}"
            label = f"{TVM_TARGET} untuned" if trials == 0 else f"{TVM_TARGET} {trials} trials"
            cache = Cache(Cache().root / "bench-tvm" / str(trials))
            rows[key], record = _build_row(recipe, with_trials(base, trials), label, cache, workdir / key)
            if record is None:
                continue
            tuning = record["stages"][-1]["stats"].get("tuning", {})
            tasks = len(tuning.get("tasks", []))
            covered = f"{tuning.get('tasks_with_records', 0)}/{tasks} tasks with records"
            if not trials:
                rows[key].note = f"no tuning records ({tasks} tasks)"
            elif tuning.get("new_trials"):
                rows[key].note = f"tuning {tuning.get('wall_s', 0):.0f} s, {covered}"
            else:  # a rebuild after a code change reads the records: no tuning time to report
                rows[key].note = f"records from an earlier bench run (tuning time not re-measured), {covered}"
            paths[key] = _artifact(record)
            records[key] = record
    return rows, paths, records


def bench_model(name: str, repeats: int, olive: bool, workdir: Path, tvm_trials: Sequence[int] = ()) -> list[Row]:
    """Build every desktop target for recipe `name` and time everything side by side.

    `workdir` holds scratch files (Olive's output, TVM build directories) until the timing is done.
    `tvm_trials` adds desktop-tvm rows: untuned, then each budget (none when empty).
    """
    import torch

    from compiler.engine.latency import measure_latency
    from compiler.families.single_graph.evaluator import Evaluator
    from compiler.families.single_graph.importing import tokenizer_dir
    from compiler.ort_session import predictor as ort_predictor

    recipe = config.load_recipe(name)
    # desktop-tvm is measured by _tvm_variants (untuned and per budget), not at its file's budget.
    targets = [t for t in config.available("targets") if t.startswith("desktop-") and t != TVM_TARGET]
    records: dict[str, dict[str, Any]] = {}
    rows: dict[str, Row] = {}
    paths: dict[str, Path] = {}
    backends: dict[str, Backend | None] = {}
    for target_name in targets:
        rows[target_name], record = _build_row(recipe, config.load_target(target_name), target_name, Cache())
        if record is not None:
            records[target_name] = record
            paths[target_name] = _artifact(record)
            backends[target_name] = _backend(record)
    if tvm_trials:
        tvm_rows, tvm_paths, tvm_records = _tvm_variants(recipe, tvm_trials, workdir)
        rows.update(tvm_rows)
        paths.update(tvm_paths)
        records.update(tvm_records)
        backends.update({key: _backend(record) for key, record in tvm_records.items()})
        targets += list(tvm_rows)
    if not records:
        raise UserError(f"bench {recipe.name}: no desktop target built; see the errors above")
    first = next(iter(records.values()))
    imported = Path(first["stages"][0]["path"])
    from compiler.families.single_graph.data import load_dataset
    from compiler.importers.torch_export import load_reference

    dataset = load_dataset(recipe, tokenizer_dir=tokenizer_dir(recipe))
    evaluate = Evaluator(recipe, dataset, load_reference(imported.parent / "reference.npz"))
    ort_fp32 = evaluate(imported)
    rows["ort-fp32"] = Row(
        "ORT FP32", size_bytes=imported.stat().st_size, fidelity=ort_fp32.value, fidelity_summary=ort_fp32.summary
    )
    paths["ort-fp32"] = imported

    if olive:
        from compiler.bench.olive_peer import auto_opt_int8

        step(f"bench {recipe.name}: Olive auto-opt INT8 (peer)")
        try:
            source = imported if recipe.source_kind == "torch" else _olive_source(recipe)
            olive_path = auto_opt_int8(source, workdir / recipe.name, is_onnx=source.is_file())
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

    phone_rows, phone_paths, phone_backends, off_host = _phone_rows(recipe)  # timed here when they run here
    rows.update(phone_rows)
    paths.update(phone_paths)
    backends.update(phone_backends)

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
    for key, path in paths.items():
        backend = backends.get(key)  # None: an ONNX graph (ORT FP32, Olive's output)
        run = backend.predictor(path, threads=THREADS) if backend else ort_predictor(path, THREADS)
        runners[key] = lambda run=run: run(dataset.bench)
    seconds = measure_latency(runners, repeats=repeats, label=f"{recipe.name}: timing {len(runners)} configurations")
    for key, value in seconds.items():
        rows[key].latency_ms = value * 1000
        rows[key].ratio_vs_ort = value / seconds["ort-fp32"]
        rows[key].speedup_vs_torch = seconds["torch"] / value
    off_host_rows = _time_off_host(off_host, rows, imported, dataset.bench, repeats)
    order = ["torch", "ort-fp32", *targets, "olive", *off_host_rows, *phone_rows]
    return [rows[key] for key in order if key in rows]


def _time_off_host(
    off_host: dict[str, tuple[Backend, Path]],
    rows: dict[str, Row],
    imported: Path,
    feeds: dict[str, np.ndarray],
    repeats: int,
) -> list[str]:
    """Phone targets whose backend times its artifacts in another process (LiteRT in its toolchain),
    as a ratio to ONNX Runtime FP32 timed in that same process (a host figure)."""
    timed: list[str] = []
    by_backend: dict[str, tuple[Backend, dict[str, Path]]] = {}
    for name, (backend, path) in off_host.items():
        by_backend.setdefault(backend.runtime, (backend, {}))[1][name] = path
    for backend, models in by_backend.values():
        step(f"bench: timing {len(models)} {backend.runtime} models against ORT FP32 in their own process")
        seconds = backend.time_against_ort(imported, models, feeds, repeats)
        if seconds is None:
            continue
        for name in models:
            rows[name].latency_ms = seconds[name] * 1000
            rows[name].ratio_vs_ort = seconds[name] / seconds["ort"]
            timed.append(name)
    return timed


def _phone_rows(
    recipe: config.ModelRecipe,
) -> tuple[dict[str, Row], dict[str, Path], dict[str, Backend | None], dict[str, tuple[Backend, Path]]]:
    """android-* and ios-* targets: rows (size, fidelity, the backend's note), the artifacts timed in
    this process with their backends, and those its backend times in another process (host figures,
    not phone figures; a Core ML package is not timed at all: it runs only on Apple devices)."""
    rows: dict[str, Row] = {}
    paths: dict[str, Path] = {}
    backends: dict[str, Backend | None] = {}
    off_host: dict[str, tuple[Backend, Path]] = {}
    for name in (t for t in config.available("targets") if t.startswith(("android-", "ios-"))):
        rows[name], record = _build_row(recipe, config.load_target(name), name, Cache())
        if record is None:
            continue
        backend = _backend(record)
        rows[name].note = backend.bench_note
        artifact = _artifact(record)
        if backend.execution(artifact).timed:
            paths[name], backends[name] = artifact, backend
        elif backend.times_off_host:
            off_host[name] = (backend, artifact)
    return rows, paths, backends, off_host


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


def bench_recipe(name: str, options: BenchOptions) -> dict[str, Any]:
    """The desktop table for one one-graph recipe (the family's `bench` entry point)."""
    recipe = config.load_recipe(name)
    rows = bench_model(name, options.repeats, options.olive, options.workdir, options.tvm_trials)
    print_table(name, rows, recipe.bench)
    return {"bench_shape": recipe.bench, "threads": THREADS, "rows": [asdict(r) for r in rows]}
