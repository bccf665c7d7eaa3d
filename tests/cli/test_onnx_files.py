"""Bare ONNX files the way users bring them: old IR/opset, index inputs, user data, names, refusals.

The real CLI in a subprocess, as in test_bad_input.py: user errors are one line, no traceback.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from tests.cli.test_bad_input import assert_user_error, edgebuild


def embedding_model(rows: int = 4) -> onnx.ModelProto:
    """ids int64[batch, 8] -> Gather from a `rows`-row table -> ReduceMean: random ids >= rows crash it."""
    table = numpy_helper.from_array(np.random.default_rng(0).standard_normal((rows, 6)).astype(np.float32), "table")
    axes = numpy_helper.from_array(np.array([1], np.int64), "axes")
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["table", "ids"], ["rows"]),
            helper.make_node("ReduceMean", ["rows", "axes"], ["y"]),
        ],
        "embedding",
        [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 1, 6])],
        [table, axes],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def old_gemm_model() -> onnx.ModelProto:
    """IR 3, opset 6: Gemm(6) whose weights are also graph inputs, as ONNX's own zoo files are."""
    weights = numpy_helper.from_array(np.random.default_rng(1).standard_normal((4, 3)).astype(np.float32), "w")
    bias = numpy_helper.from_array(np.zeros(3, np.float32), "b")
    inputs = [
        helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in (("x", [2, 4]), ("w", [4, 3]), ("b", [3]))
    ]
    graph = helper.make_graph(
        [helper.make_node("Gemm", ["x", "w", "b"], ["y"], broadcast=1)],
        "old",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [weights, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 6)])
    model.ir_version = 3
    return model


def save(model: onnx.ModelProto, path: Path) -> Path:
    path.write_bytes(model.SerializeToString())
    return path


def test_index_input_draws_below_its_table_and_builds(tmp_path: Path) -> None:
    path = save(embedding_model(rows=4), tmp_path / "embed.onnx")
    result = edgebuild(
        "build", "--onnx", str(path), "-t", "desktop-fp32", "--artifacts", str(tmp_path / "a"), "--no-package"
    )
    assert result.returncode == 0, result.stderr


def test_user_data_that_the_model_cannot_run_is_one_line_naming_the_input(tmp_path: Path) -> None:
    path = save(embedding_model(rows=4), tmp_path / "embed.onnx")
    data = tmp_path / "ids.npz"
    np.savez(data, ids=np.full((4, 8), 9, np.int64))  # row 9 of a 4-row table
    result = edgebuild(
        "build", "--onnx", str(path), "--data", str(data), "-t", "desktop-fp32", "--artifacts", str(tmp_path / "a")
    )
    assert_user_error(result, r"cannot run the model on batch \d+ \('ids' int64\[1, 8\] in \[9, 9\]\)", tmp_path / "a")


def test_user_data_builds_and_is_part_of_the_key(tmp_path: Path) -> None:
    path = save(embedding_model(rows=4), tmp_path / "embed.onnx")
    data = tmp_path / "ids.npz"
    np.savez(data, ids=np.random.default_rng(0).integers(0, 4, (6, 8)))
    arguments = [
        "build",
        "--onnx",
        str(path),
        "--data",
        str(data),
        "-t",
        "desktop-fp32",
        "--artifacts",
        str(tmp_path / "a"),
    ]
    assert edgebuild(*arguments, "--no-package").returncode == 0
    np.savez(data, ids=np.random.default_rng(1).integers(0, 4, (6, 8)))
    again = edgebuild(*arguments, "--no-package")
    assert again.returncode == 0 and "up to date" not in again.stdout + again.stderr  # new data, new build


def test_data_with_a_missing_input_is_one_line(tmp_path: Path) -> None:
    path = save(embedding_model(), tmp_path / "embed.onnx")
    data = tmp_path / "wrong.npz"
    np.savez(data, tokens=np.zeros((4, 8), np.int64))
    result = edgebuild(
        "build", "--onnx", str(path), "--data", str(data), "-t", "desktop-fp32", "--artifacts", str(tmp_path / "a")
    )
    assert_user_error(result, r"wrong\.npz has no array for input\(s\) \['ids'\]", tmp_path / "a")


def test_old_ir_and_opset_are_normalized_and_said_so(tmp_path: Path) -> None:
    path = save(old_gemm_model(), tmp_path / "old.onnx")
    result = edgebuild(
        "build", "--onnx", str(path), "-t", "desktop-int8", "--artifacts", str(tmp_path / "a"), "--no-package"
    )
    assert result.returncode == 0, result.stderr
    assert "opset 6 upgraded to 17" in result.stdout + result.stderr
    record = json.loads((tmp_path / "a" / "old" / "desktop-int8" / "report.json").read_text())
    assert any("graph inputs" in change for change in record["provenance"]["import_changes"])
    report = (tmp_path / "a" / "old" / "desktop-int8" / "report.md").read_text()
    assert "changed at import" in report and "opset 6 upgraded to 17" in report


def test_same_stem_from_another_file_is_refused_then_built_under_a_name(tmp_path: Path) -> None:
    first, second = tmp_path / "one" / "model.onnx", tmp_path / "two" / "model.onnx"
    first.parent.mkdir()
    second.parent.mkdir()
    save(embedding_model(rows=4), first)
    save(embedding_model(rows=5), second)
    artifacts = tmp_path / "a"
    common = ["-t", "desktop-fp32", "--artifacts", str(artifacts), "--no-package"]
    assert edgebuild("build", "--onnx", str(first), *common).returncode == 0
    refused = edgebuild("build", "--onnx", str(second), *common)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "holds a build of another model named 'model'" in refused.stderr and "--name" in refused.stderr
    named = edgebuild("build", "--onnx", str(second), "--name", "model-two", *common)
    assert named.returncode == 0, named.stderr
    assert (artifacts / "model-two" / "desktop-fp32" / "report.json").is_file()


def test_core_ml_refuses_an_onnx_file_before_any_work(tmp_path: Path) -> None:
    path = save(embedding_model(), tmp_path / "embed.onnx")
    result = edgebuild("build", "--onnx", str(path), "-t", "ios-fp16", "--artifacts", str(tmp_path / "a"))
    assert_user_error(result, r"ios-fp16 converts from PyTorch .* is an ONNX file", tmp_path / "a")
    assert "importing" not in result.stdout + result.stderr


def test_name_and_data_need_onnx(tmp_path: Path) -> None:
    result = edgebuild("build", "-m", "digits-cnn", "--name", "x", "-t", "desktop-fp32", "--artifacts", str(tmp_path))
    assert_user_error(result, r"--name go with --onnx", tmp_path)
