"""Android ONNX Runtime Mobile target end to end: digits-cnn's INT8 graph converted to ORT format by
ONNX Runtime's own converter, verified by running the .ort in onnxruntime, packaged with the
reduced-build operator config; and the canonical re-serialisation that makes the .ort reproducible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from compiler.backends import ort_mobile
from compiler.cli.main import main
from compiler.errors import ModelError
from compiler.ort_session import session


@pytest.fixture(scope="module")
def build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    artifacts = tmp_path_factory.mktemp("ort-mobile")
    result = CliRunner().invoke(
        main, ["build", "-t", "android-ort-int8", "-m", "digits-cnn", "--artifacts", str(artifacts)]
    )
    assert result.exit_code == 0, result.output
    return artifacts / "digits-cnn" / "android-ort-int8"


@pytest.mark.slow
def test_ort_model_is_int8_verified_and_bundled_with_its_op_config(build: Path) -> None:
    record = json.loads((build / "report.json").read_text())
    stats = record["stages"][-1]["stats"]
    assert record["metrics"]["fidelity"]["within_budget"] and record["metrics"]["fidelity"]["value"] >= 99.5
    assert stats["tensor_dtypes"].get("int8", 0) > 0 and "ai.onnx:QuantizeLinear" in stats["ops"]
    assert stats["converter"]["optimization_style"] == "Runtime" and stats["converter"]["target_platform"] == "arm"
    with tarfile.open(build / "digits-cnn-1.0.0-android-ort-int8.tar") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        config = tar.extractfile("required_operators_and_types.config").read().decode()  # type: ignore[union-attr]
        readme = tar.extractfile("README.md").read().decode()  # type: ignore[union-attr]
        ort_bytes = tar.extractfile("digits-cnn.ort").read()  # type: ignore[union-attr]
    assert manifest["target"]["runtime"] == "onnxruntime-mobile" and manifest["target"]["os"] == "android"
    assert {f["name"]: f["role"] for f in manifest["files"]}["required_operators_and_types.config"] == "config"
    assert "/tmp" not in config and "QuantizeLinear" in config  # temp paths stripped, ops kept
    assert ort_mobile.operator_list(config) == manifest["conversion"]["ops"]
    assert "include_ops_by_config" in readme and "OrtSession" in readme
    assert ort_bytes[4:8] == b"ORTM" and ort_mobile.canonical_ort(ort_bytes) == ort_bytes


def _many_op_model() -> onnx.ModelProto:
    """A chain over a dozen op types: enough kernel-table entries for the converter's hash order to vary."""
    rng = np.random.default_rng(0)
    values = rng.standard_normal((16, 8)).astype(np.float32).ravel()
    weight = helper.make_tensor("w", TensorProto.FLOAT, [16, 8], values)
    unary = ["Relu", "Sigmoid", "Tanh", "Abs", "Neg", "Exp", "Erf", "Floor", "Ceil", "Identity", "Softsign"]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["t0"])]
    nodes += [helper.make_node(op, [f"t{i}"], [f"t{i + 1}"]) for i, op in enumerate(unary)]
    nodes += [helper.make_node("Softmax", [f"t{len(unary)}"], ["z"], axis=-1)]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 16])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, [2, 8])],
        [weight],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _convert(model: Path, workdir: Path) -> bytes:
    """The raw converter output, as compile_model runs it (a fresh process each time)."""
    workdir.mkdir(parents=True)
    (workdir / "m.onnx").write_bytes(model.read_bytes())
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    command = [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", "m.onnx"]
    subprocess.run([*command, "--optimization_style", "Runtime"], cwd=workdir, env=env, check=True, capture_output=True)
    return (workdir / "m.with_runtime_opt.ort").read_bytes()


@pytest.mark.slow
def test_canonical_ort_is_stable_loadable_and_identical_in_outputs(tmp_path: Path) -> None:
    source = tmp_path / "m.onnx"
    onnx.save(_many_op_model(), str(source))
    raw = [_convert(source, tmp_path / f"run{i}") for i in range(6)]
    assert len(set(raw)) > 1  # the converter really is nondeterministic (3 distinct files in 4 runs, measured)
    canonical = {ort_mobile.canonical_ort(data) for data in raw}
    assert len(canonical) == 1
    (only,) = canonical
    assert ort_mobile.canonical_ort(only) == only
    (tmp_path / "c.ort").write_bytes(only)
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 16)).astype(np.float32)}
    expected = session(source).run(None, feeds)[0]
    np.testing.assert_array_equal(session(tmp_path / "c.ort").run(None, feeds)[0], expected)


def test_canonical_ort_refuses_what_is_not_an_ort_model() -> None:
    with pytest.raises(ModelError, match="not an ORT-format model"):
        ort_mobile.canonical_ort(b"\x00" * 64)


def test_operator_list_reads_types_inside_braces() -> None:
    config = '# comment\nai.onnx;13;Cast{"inputs": {"0": ["int64_t", "int8_t"]}},Gather\ncom.microsoft;1;Gelu\n'
    assert ort_mobile.operator_list(config) == ["ai.onnx:Cast", "ai.onnx:Gather", "com.microsoft:Gelu"]
