"""Stage keys from what runs: a module's fingerprint covers every first-party module it imports and
every shipped file it reads, so editing any of them re-runs the stages that run it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from compiler.engine.fingerprint import closure, code_digest
from compiler.shipped import PACKAGES, package_file, shipped


def _names(modules: list[str]) -> set[str]:
    return {path.relative_to(PACKAGES).as_posix() for path in closure(modules) if path.is_relative_to(PACKAGES)}


def test_a_backend_fingerprint_covers_the_code_that_runs_its_artifacts() -> None:
    assert "compiler/backends/mil_interpreter.py" in _names(["compiler.backends.coreml"])
    tflite = closure(["compiler.backends.tflite"])
    assert package_file("compiler/toolchains/tflite_worker.py") in tflite  # run as a script, not imported
    assert package_file("compiler/toolchains/tflite.lock") in tflite
    tvm = closure(["compiler.backends.tvm"])
    assert package_file("compiler/backends/aarch64.py") in tvm and shipped("templates/tvm_runner.cc") in tvm
    assert "compiler/backends/coreml.py" not in _names(["compiler.backends.tvm"])  # only what runs


def test_an_evaluator_fingerprint_covers_its_metrics() -> None:
    assert "compiler/families/single_graph/metrics.py" in _names(["compiler.families.single_graph.evaluator"])
    assert "passes/mixed_precision.py" in _names(["passes.quantize_static_int8"])


def test_function_level_imports_count_and_type_checking_imports_do_not(tmp_path: Path) -> None:
    package = tmp_path / "team"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "factory.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from team import hints\n"
        "def build():\n    from team.training import fit\n    return fit()\n"
    )
    (package / "training.py").write_text("def fit():\n    return 1\n")
    (package / "hints.py").write_text("X = 1\n")
    files = {path.name for path in closure(["team.factory"], [tmp_path])}
    assert files == {"__init__.py", "factory.py", "training.py"}
    before = code_digest(["team.factory"], [tmp_path])
    (package / "training.py").write_text("def fit():\n    return 2\n")
    after = code_digest(["team.factory"], [tmp_path])
    assert after != before
    (package / "hints.py").write_text("X = 2\n")  # imported for type hints only: not on the path
    assert code_digest(["team.factory"], [tmp_path]) == after


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of edgebuild's packages and built-ins, to edit without touching the real tree."""
    root = tmp_path_factory.mktemp("checkout")
    for name in ("compiler", "passes", "models", "targets", "templates", "edgebuild.toml"):
        source = PACKAGES / name
        if source.is_dir():
            shutil.copytree(source, root / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(source, root / name)
    yield root


def _build(checkout: Path, model: str, target: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    command = [sys.executable, "-m", "compiler.cli.main", "build", "-m", model, "-t", target, "--no-package"]
    done = subprocess.run(command, cwd=checkout, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def _edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# edited by the fingerprint test\n")


@pytest.mark.slow
def test_editing_the_mil_interpreter_reverifies_an_ios_build(checkout: Path) -> None:
    first = _build(checkout, "digits-cnn", "ios-fp16")
    assert "MIL reference interpreter" in first
    assert "up to date" in _build(checkout, "digits-cnn", "ios-fp16")
    _edit(checkout / "compiler" / "backends" / "mil_interpreter.py")
    again = _build(checkout, "digits-cnn", "ios-fp16")
    assert "import: cached" in again  # the import does not run the interpreter
    assert "verifying model.mlpackage.zip (run in the MIL reference interpreter)" in again


@pytest.mark.slow
def test_editing_a_metric_reruns_a_cached_mixed_precision_search(checkout: Path) -> None:
    first = _build(checkout, "digits-cnn", "desktop-int8")
    assert "> pass quantize-static-int8\n" in first  # mixed_precision = true in desktop-int8's CNN list
    _edit(checkout / "compiler" / "engine" / "gates.py")  # not on the search's path: nothing re-runs
    assert "pass quantize-static-int8: cached" in _build(checkout, "digits-cnn", "desktop-int8")
    _edit(checkout / "compiler" / "families" / "single_graph" / "metrics.py")
    again = _build(checkout, "digits-cnn", "desktop-int8")
    assert "import: cached" in again
    assert "> pass quantize-static-int8\n" in again and "pass quantize-static-int8: cached" not in again
