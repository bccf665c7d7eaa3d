"""Every bad input gives a one-line error, a non-zero exit, no traceback and nothing in artifacts/.

These run the real CLI in a subprocess, as a user would, and look at stderr and the artifacts dir.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.toml_variants import variant


def edgebuild(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    return subprocess.run(
        [sys.executable, "-m", "compiler.cli.main", *args], env=env, capture_output=True, text=True, timeout=600
    )


def assert_user_error(result: subprocess.CompletedProcess[str], pattern: str, artifacts: Path) -> None:
    import re

    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("edgebuild: error:")]
    assert len(errors) == 1, result.stderr
    assert re.search(pattern, errors[0]), errors[0]
    leftovers = (
        [p for p in artifacts.rglob("*") if p.is_file() and "cache" not in p.parts] if artifacts.exists() else []
    )
    assert leftovers == [], leftovers


def test_unknown_target(tmp_path: Path) -> None:
    result = edgebuild("build", "-t", "desktop-int9", "-m", "digits-cnn", "--artifacts", str(tmp_path))
    assert_user_error(
        result, r"unknown target 'desktop-int9'; did you mean 'desktop-int8'\? valid: .*desktop-fp32", tmp_path
    )


def test_unknown_model(tmp_path: Path) -> None:
    result = edgebuild("build", "-t", "desktop-int8", "-m", "digit-cnn", "--artifacts", str(tmp_path))
    assert_user_error(result, r"unknown model 'digit-cnn'; did you mean 'digits-cnn'", tmp_path)


def test_malformed_target_toml(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "bad"\npasses = [ { pass = "fuse" \n')
    result = edgebuild("build", "-t", str(bad), "-m", "digits-cnn", "--artifacts", str(tmp_path / "a"))
    assert_user_error(result, r"bad\.toml: malformed TOML", tmp_path / "a")


def test_corrupt_onnx(tmp_path: Path) -> None:
    from tests.onnx_helpers import tiny_cnn

    data = tiny_cnn()[0].SerializeToString()
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(data[: len(data) // 2])
    result = edgebuild("build", "--onnx", str(corrupt), "-t", "desktop-fp32", "--artifacts", str(tmp_path / "a"))
    assert_user_error(result, r"corrupt\.onnx: not a readable ONNX model", tmp_path / "a")


def test_not_onnx_at_all(tmp_path: Path) -> None:
    text = tmp_path / "notes.onnx"
    text.write_text("this is a text file, not a model\n")
    result = edgebuild("build", "--onnx", str(text), "-t", "desktop-fp32", "--artifacts", str(tmp_path / "a"))
    assert_user_error(result, r"notes\.onnx: not (a readable ONNX model|an ONNX model)", tmp_path / "a")


def test_model_inputs_do_not_match_recipe(tmp_path: Path) -> None:
    from tests.onnx_helpers import tiny_cnn

    model_path = tmp_path / "cnn.onnx"
    model_path.write_bytes(tiny_cnn()[0].SerializeToString())
    recipe = tmp_path / "mismatch.toml"
    recipe.write_text(f'''name = "mismatch"
version = "1.0.0"
family = "cnn"
[source]
onnx = "{model_path}"
[[inputs]]
name = "pixels"
dtype = "float32"
shape = ["batch", 1, 8, 8]
[metric]
kind = "output_cosine"
''')
    result = edgebuild("build", "-m", str(recipe), "-t", "desktop-fp32", "--artifacts", str(tmp_path / "a"))
    assert_user_error(result, r"model inputs \['image'\] do not match the recipe's inputs \['pixels'\]", tmp_path / "a")


@pytest.mark.parametrize("content", ["", "\n\n  \n"])
def test_missing_or_empty_calibration_data(tmp_path: Path, content: str) -> None:
    data = tmp_path / "empty.txt"
    data.write_text(content)
    recipe = variant(
        tmp_path, "minilm", {'representative = "data/sentences.txt"': f'representative = "{data}"'}, kind="model"
    )
    result = edgebuild("build", "-m", str(recipe), "-t", "desktop-int8", "--artifacts", str(tmp_path / "a"))
    assert_user_error(result, r"field 'data.representative': .*empty\.txt has 0 non-empty lines", tmp_path / "a")


def test_missing_data_file(tmp_path: Path) -> None:
    recipe = variant(
        tmp_path, "minilm", {'representative = "data/sentences.txt"': 'representative = "nowhere.txt"'}, kind="model"
    )
    result = edgebuild("build", "-m", str(recipe), "-t", "desktop-int8", "--artifacts", str(tmp_path / "a"))
    assert_user_error(result, r"nowhere\.txt does not exist", tmp_path / "a")


def test_pass_that_cannot_apply_names_the_pass(tmp_path: Path) -> None:
    """convert-fp16 told to keep a node the graph does not have: the pass says which."""
    from tests.onnx_helpers import tiny_cnn

    model, _ = tiny_cnn()
    path = tmp_path / "convonly.onnx"
    path.write_bytes(model.SerializeToString())
    target = variant(
        tmp_path,
        "desktop-fp32",
        {'{ pass = "fuse" },': '{ pass = "convert-fp16", node_block_list = ["/no/such/node"] },'},
        "fp16-block",
    )
    result = edgebuild("build", "--onnx", str(path), "-t", str(target), "--artifacts", str(tmp_path / "a"))
    assert_user_error(
        result, r"error in pass 'convert-fp16' after \['fold-constants'\]: .*not in the graph", tmp_path / "a"
    )
    # The failing pass left a reproducer; `edgebuild replay` re-runs just that pass and fails the same way.
    import re

    where = re.search(r"reproducer: edgebuild replay (\S+)\)", result.stderr).group(1)
    assert Path(where).is_relative_to(tmp_path / "a" / "cache")
    replayed = edgebuild("replay", where)
    assert replayed.returncode == 2 and "Traceback" not in replayed.stderr
    assert "error in pass 'convert-fp16' after ['fold-constants']" in replayed.stderr


def test_pass_with_nothing_to_do_passes_the_model_on(tmp_path: Path) -> None:
    """INT4 weight quantization on a model with no MatMul: the build says so and goes on."""
    from tests.onnx_helpers import tiny_cnn

    model, _ = tiny_cnn()
    path = tmp_path / "convonly.onnx"
    path.write_bytes(model.SerializeToString())
    target = variant(
        tmp_path, "desktop-fp32", {'{ pass = "fuse" },': '{ pass = "quantize-int4-weights" },'}, "int4-only"
    )
    result = edgebuild("build", "--onnx", str(path), "-t", str(target), "--artifacts", str(tmp_path / "a"))
    assert result.returncode == 0, result.stderr
    output = result.stdout + result.stderr
    assert "pass quantize-int4-weights: nothing to do (no MatMul with a constant float weight" in output
