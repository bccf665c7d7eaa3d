"""The one driver: the "after passes" gate runs before anything is compiled or tuned."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli.main import main
from tests.toml_variants import variant

FOLD = '  { pass = "fold-constants" },\n]'
WRECK = '{ pass = "prune-magnitude", sparsity = 0.95 }'  # 95% of every weight zeroed

WRECK = '{ pass = "prune-magnitude", sparsity = 0.95 }'  # 95% of every weight zeroed


@pytest.mark.slow
def test_a_fidelity_breaking_pass_list_on_desktop_tvm_fails_before_tuning(tmp_path: Path) -> None:
    """95% of every weight zeroed wrecks digits-cnn: the build must stop at the gate, seconds in,
    with no compile stage and no tuning database, although the target asks for 64 trials."""
    target = variant(
        tmp_path,
        "desktop-tvm",
        {FOLD: f"{FOLD[:-1]}  {WRECK},\n]"},
        name="desktop-tvm-wrecked",
    )
    artifacts = tmp_path / "artifacts"
    result = CliRunner().invoke(
        main, ["build", "-m", "digits-cnn", "-t", str(target), "--artifacts", str(artifacts), "--no-package"]
    )
    assert result.exit_code == 3, result.output
    assert "after passes fidelity over budget" in result.output
    assert "first over budget after pass 'prune-magnitude'" in result.output
    assert "tvm:" not in result.output  # nothing was imported into TVM, fused or tuned
    cache = artifacts / "cache"
    assert (cache / "pass-prune-magnitude").is_dir()
    assert not (cache / "compile").exists() and not (cache / "tuning").exists()
