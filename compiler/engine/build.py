"""A build: recipe + target -> the driver's stages -> a build directory with report.json.

Each stage runs through the content-addressed cache (cache.py), keyed by its input digests, its
resolved config, the code on its path and its tools' versions, so a changed pass option re-runs
from that pass on and a rebuild with nothing changed does no work. Before any of that, `build_key`
digests every input of the whole build without importing torch or onnxruntime: when it matches
the existing build record and the files are intact, the build is "up to date" in well under a
second. The build directory (<workspace>/artifacts/<model>/<target>/) is written beside the old
one and swapped in with renames.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler import __version__, workspace
from compiler.digests import canonical_json, sha256_bytes, sha256_file, sha256_tree, tool_versions
from compiler.engine.cache import Cache
from compiler.engine.record import BuildResult
from compiler.engine.specs import ModelRecipe, TargetSpec
from compiler.errors import ConfigError
from compiler.progress import step
from compiler.shipped import PACKAGES, builtin_root, shipped

RECORD = "report.json"
RECORD_SCHEMA = "edgebuild.build-result/1"
CORE_TOOLS = (
    "edgebuild",
    "torch",
    "onnx",
    "onnxruntime",
    "onnxslim",
    "onnxsim",
    "transformers",
    "numpy",
    "apache-tvm",
    "apache-tvm-ffi",
)


@dataclass
class BuildOutcome:
    record: dict[str, Any]
    out_dir: Path
    up_to_date: bool
    warnings: list[str]


def output_dir(recipe: ModelRecipe, target: TargetSpec, artifacts: Path | None = None) -> Path:
    """<artifacts>/<model>/<target>, in the current workspace's artifacts/ unless told otherwise."""
    return (artifacts or workspace.current().artifacts) / recipe.name / target.name


def source_files(recipe: ModelRecipe) -> list[Path]:
    """Files whose bytes are the model's source (weights, factory code, ONNX file), per its family."""
    from compiler.families.catalogue import family

    return family(recipe.family).source_files(recipe)


def code_fingerprint() -> str:
    """sha256 of every edgebuild source file: the whole-build key must go stale when code changes."""
    return sha256_tree([PACKAGES / "compiler", PACKAGES / "passes", shipped("templates")])


def build_key(recipe: ModelRecipe, target: TargetSpec) -> str:
    """Digest of every input of the build, computed without loading any model."""
    from compiler.families.catalogue import family

    return sha256_bytes(
        canonical_json(
            {
                "recipe": sha256_file(recipe.path) if recipe.path else canonical_json(recipe.__dict__),
                "target": sha256_file(target.path),
                "tune": target.tune,  # `--tune-trials` overrides the file
                "source": sha256_tree(source_files(recipe)),
                "data": sha256_tree(family(recipe.family).data_files(recipe)),
                "code": code_fingerprint(),
                "tools": tool_versions(*CORE_TOOLS),
            }
        ).encode()
    )


def is_up_to_date(out_dir: Path, key: str) -> dict[str, Any] | None:
    """The existing record when it was built from `key` and its files are intact."""
    record_path = out_dir / RECORD
    if not record_path.is_file():
        return None
    try:
        record = json.loads(record_path.read_text())
    except json.JSONDecodeError:
        return None
    if record.get("build_key") != key:
        return None
    for entry in record.get("files", []):
        path = out_dir / entry["name"]
        if not path.is_file() or path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            return None
    return record


def build(
    recipe: ModelRecipe, target: TargetSpec, cache: Cache, out_dir: Path | None = None, command: str = ""
) -> BuildOutcome:
    """Run (or reuse) every stage and write the build directory atomically."""
    out_dir = out_dir or output_dir(recipe, target)
    key = build_key(recipe, target)
    if cache.enabled:
        existing = is_up_to_date(out_dir, key)
        if existing is not None:
            return BuildOutcome(existing, out_dir, True, existing.get("verdict", {}).get("warnings", []))
    from compiler.engine.config import check_target_passes
    from compiler.engine.driver import run_build

    check_target_passes(target)
    check_source_fits(recipe, target)
    check_owner(out_dir, recipe)

    started = time.perf_counter()
    try:
        result = run_build(recipe, target, cache)
        record = _record(recipe, target, key, result, command)
        _publish(out_dir, result, record)
    finally:
        cache.close()
    step(f"built in {time.perf_counter() - started:.1f} s")
    return BuildOutcome(record, out_dir, False, record["verdict"]["warnings"])


def check_source_fits(recipe: ModelRecipe, target: TargetSpec) -> None:
    """Refuse, before any work, a source the target's backend cannot convert (Core ML needs PyTorch)."""
    from compiler.backends.catalogue import target_backend_class

    if recipe.source_kind == "onnx" and target_backend_class(target).converts_from == "pytorch":
        raise ConfigError(
            f"{target.name} converts from PyTorch ({target.runtime} has no ONNX frontend) and {recipe.name} is an "
            "ONNX file; give a recipe with a torch or huggingface source, or pick another target"
        )


def check_owner(out_dir: Path, recipe: ModelRecipe) -> None:
    """Refuse to overwrite a build directory that holds another model's build (same name, other source)."""
    try:
        existing = json.loads((out_dir / RECORD).read_text())["model"]["source"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # nothing there, or not a build we can read: the build replaces it
    if (existing.get("kind"), existing.get("spec")) != (recipe.source_kind, recipe.source):
        raise ConfigError(
            f"{out_dir} holds a build of another model named '{recipe.name}' ({existing.get('kind')}: "
            f"{existing.get('spec')}); give this one another name (--name) or remove that directory"
        )


def recipe_label(recipe: ModelRecipe) -> str:
    """Where the recipe came from: relative to the workspace, "builtin:models/..." for a built-in."""
    if recipe.path is None:
        return recipe.source
    current = workspace.optional()
    for root, prefix in ((current.root if current else None, ""), (builtin_root(), "builtin:")):
        if root is not None and recipe.path.is_relative_to(root):
            return prefix + str(recipe.path.relative_to(root))
    return str(recipe.path)


def _git_commit() -> str:
    current = workspace.optional()
    return current.git_commit() if current is not None else "unknown"


def _record(recipe: ModelRecipe, target: TargetSpec, key: str, result: BuildResult, command: str) -> dict[str, Any]:
    """The build-result record: the one hand-off that packaging and the OTA stages consume."""
    return {
        "schema": RECORD_SCHEMA,
        "build_key": key,
        "model": {
            "name": recipe.name,
            "version": recipe.version,
            "family": recipe.family,
            "recipe": recipe_label(recipe),
            "source": {"kind": recipe.source_kind, "spec": recipe.source, "digest": result.source_digest},
        },
        "target": {
            "name": target.name,
            "description": target.description,
            # TVM builds for the host CPU name the ISA extensions the code may use.
            "platform": {**target.platform, **({"features": result.compiled_isa} if result.compiled_isa else {})},
            "runtime": target.runtime,
            "runtime_min_version": target.runtime_min_version,
            "precision": target.precision,
            "preset": target.preset,
            # The offline graph optimisation level, for runtimes that have one (ONNX Runtime's).
            "graph_optimization": result.graph_optimization,
        },
        "inputs": result.inputs,
        "outputs": result.outputs,
        "artifact": result.artifact_name,
        "files": result.files,
        "metrics": result.metrics,
        "stages": [row.to_json() for row in result.stages],
        "verdict": result.verdict,
        "provenance": {
            "edgebuild_version": __version__,
            "git_commit": _git_commit(),
            "passes": result.pass_list,
            "tool_versions": tool_versions(*CORE_TOOLS),
            "exporter": result.import_meta.get("exporter"),
            "opset": result.import_meta.get("opset"),
            "export_check": result.import_meta.get("export_check"),
            "import_changes": result.import_meta.get("normalized", []),
            "build_command": command,
        },
        **result.record_extra,
    }


def _publish(out_dir: Path, result: BuildResult, record: dict[str, Any]) -> None:
    """Write the build directory next to the old one, then swap it in with renames."""
    from compiler.engine.report import write_reports

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    try:
        for name, source in result.file_sources.items():
            shutil.copyfile(source, staging / name)
        write_reports(staging, record)
        (staging / RECORD).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
        retired = out_dir.parent / f".{out_dir.name}-retired-{os.getpid()}"
        if out_dir.exists():
            os.rename(out_dir, retired)
        os.rename(staging, out_dir)
        shutil.rmtree(retired, ignore_errors=True)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


__all__ = ["BuildOutcome", "build", "build_key", "output_dir"]
