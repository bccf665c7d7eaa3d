"""Workspaces: `edgebuild init`, finding the workspace from the working directory, names resolved
in the workspace first and the built-ins second, builds and the cache written inside it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler import workspace
from compiler.cli.main import main
from compiler.digests import sha256_file
from compiler.engine import config
from compiler.errors import ConfigError
from compiler.shipped import shipped


def _cli(cwd: Path, *args: str, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    """`edgebuild ARGS` run as a user would: a fresh process in `cwd`."""
    command = [sys.executable, "-m", "compiler.cli.main", *args]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def test_init_makes_a_workspace_and_refuses_twice(tmp_path: Path) -> None:
    made = _cli(tmp_path, "init")
    assert made.returncode == 0, made.stderr
    assert {p.name for p in tmp_path.iterdir()} >= {"edgebuild.toml", "models", "targets", ".gitignore"}
    assert "artifacts/" in (tmp_path / ".gitignore").read_text()
    again = _cli(tmp_path, "init")
    assert again.returncode == 2 and "already an edgebuild workspace" in again.stderr


def test_the_workspace_is_found_from_a_subdirectory(tmp_path: Path) -> None:
    workspace.init(tmp_path)
    deep = tmp_path / "models" / "deeper"
    deep.mkdir()
    found = workspace.find(deep)
    assert found is not None and found.root == tmp_path.resolve()
    assert found.artifacts == tmp_path.resolve() / "artifacts"


def test_outside_any_workspace_a_build_says_what_to_do(tmp_path: Path) -> None:
    done = _cli(tmp_path, "build", "-m", "digits-cnn", "-t", "desktop-int8")
    assert done.returncode == 2, done.stderr
    assert "no edgebuild workspace" in done.stderr and "edgebuild init" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "artifacts").exists()


def test_names_resolve_in_the_workspace_first_then_the_builtins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workspace.init(tmp_path)
    text = shipped("targets/desktop-int8.toml").read_text().replace("x86-64 desktop CPU", "our own desktop")
    (tmp_path / "targets" / "desktop-int8.toml").write_text(text)
    monkeypatch.chdir(tmp_path)
    assert config.load_target("desktop-int8").path == (tmp_path / "targets" / "desktop-int8.toml").resolve()
    assert config.load_target("desktop-fp32").path == shipped("targets/desktop-fp32.toml").resolve()
    assert "digits-cnn" in config.available("models") and "desktop-tvm" in config.available("targets")
    listed = CliRunner().invoke(main, ["targets"])
    assert "our own desktop" in listed.output and "desktop-tvm" in listed.output
    with pytest.raises(ConfigError, match="unknown target 'desktop-int9'; did you mean 'desktop-int8'"):
        config.load_target("desktop-int9")


def test_a_malformed_marker_is_refused(tmp_path: Path) -> None:
    workspace.init(tmp_path)
    (tmp_path / "edgebuild.toml").write_text("[workspace]\nnmae = 'x'\n")
    done = _cli(tmp_path, "targets")
    assert done.returncode == 2 and "field 'workspace.nmae' is not a known field; did you mean 'name'" in done.stderr


@pytest.mark.slow
def test_a_workspace_builds_its_own_recipe_with_its_own_factory(tmp_path: Path) -> None:
    """A copy of digits-cnn under another name, with its factory module in the workspace's models/:
    the build imports that module from the workspace, writes artifacts/ there, and records the
    workspace's git commit."""
    assert _cli(tmp_path, "init").returncode == 0
    models = tmp_path / "models"
    (models / "__init__.py").write_text("")
    factory = shipped("models/digits_cnn.py").read_text() + "\nWORKSPACE_COPY = True\n"
    (models / "my_cnn.py").write_text(factory)
    recipe = shipped("models/digits-cnn.toml").read_text().replace("digits_cnn", "my_cnn")
    (models / "my-cnn.toml").write_text(recipe.replace('name = "digits-cnn"', 'name = "my-cnn"'))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "workspace"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()

    done = _cli(tmp_path, "build", "--model", "my-cnn", "--target", "desktop-int8", "--no-package")
    assert done.returncode == 0, done.stdout + done.stderr
    record = json.loads((tmp_path / "artifacts" / "my-cnn" / "desktop-int8" / "report.json").read_text())
    assert record["model"]["recipe"] == "models/my-cnn.toml"
    assert record["model"]["source"]["spec"] == "models.my_cnn:build"
    assert record["provenance"]["git_commit"] == head
    assert record["metrics"]["fidelity"]["within_budget"]
    assert (tmp_path / "artifacts" / "cache" / "import").is_dir()
    from compiler.digests import sha256_tree

    assert record["model"]["source"]["digest"] == sha256_tree([models / "my_cnn.py"])
    assert sha256_file(models / "my_cnn.py") != sha256_file(shipped("models/digits_cnn.py"))
    shutil.rmtree(tmp_path / "artifacts")
