"""The TVM backend with real TVM: import, compile, run against ONNX Runtime, tune into a persistent
database and reuse it, cross-compile for AArch64, and one-line errors for what a user can fix."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from compiler.backends.tvm_relax import TuneOptions, TvmError, TvmTarget, compile_model, host_isa_features, load_runner
from compiler.errors import UserError
from tests.onnx_helpers import run_ort, tiny_cnn

HOST = TvmTarget(kind="llvm", mtriple="x86_64-linux-gnu", mcpu=None, mattr=(), num_cores=2)
UNTUNED = TuneOptions(trials=0, max_trials_per_task=None)


def _matmul_relu() -> onnx.ModelProto:
    """One fused workload (matmul + add + relu): the cheapest graph MetaSchedule can tune."""
    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((32, 32)).astype(np.float32), "w")
    bias = numpy_helper.from_array(rng.standard_normal(32).astype(np.float32), "b")
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["x", "w"], ["h"]),
            helper.make_node("Add", ["h", "b"], ["a"]),
            helper.make_node("Relu", ["a"], ["y"]),
        ],
        "matmul_relu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])],
        [weight, bias],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, onnx.ModelProto]:
    model, _ = tiny_cnn()
    path = tmp_path_factory.mktemp("cnn") / "model.onnx"
    onnx.save(model, path)
    return path, model


def test_target_dict_is_complete_and_json(tmp_path: Path) -> None:
    as_dict = HOST.as_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["mcpu"] and as_dict["num-cores"] == 2  # None resolves to the host CPU's name
    assert HOST.is_host()
    arm = TvmTarget("llvm", "aarch64-linux-gnu", "cortex-a72", ("+neon",), 4)
    assert not arm.is_host()
    assert arm.as_dict() == {
        "kind": "llvm",
        "mtriple": "aarch64-linux-gnu",
        "mcpu": "cortex-a72",
        "mattr": ["+neon"],
        "num-cores": 4,
    }
    assert "sse2" in host_isa_features()


def test_untuned_cnn_matches_onnx_runtime(cnn: tuple[Path, onnx.ModelProto], tmp_path: Path) -> None:
    path, model = cnn
    meta = compile_model(path, {"image": [4, 1, 8, 8]}, HOST, UNTUNED, tmp_path / "db", tmp_path)
    assert (tmp_path / "model.so").stat().st_size > 0
    assert meta["inputs"] == [{"name": "image", "dtype": "float32", "shape": [4, 1, 8, 8]}]
    assert meta["outputs"] == [{"name": "logits", "dtype": "float32", "shape": [4, 10]}]
    assert meta["tuning"]["source"] == "untuned" and meta["tuning"]["new_trials"] == 0
    assert meta["runtime"] == "tvm" and meta["target"] == HOST.as_dict()
    run = load_runner(tmp_path / "model.so", ["image"])
    image = np.random.default_rng(1).standard_normal((4, 1, 8, 8)).astype(np.float32)
    (expected,) = run_ort(model, {"image": image})
    (actual,) = run({"image": image})
    np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_tuning_records_are_reused(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(_matmul_relu(), path)
    database, tune = tmp_path / "db", TuneOptions(trials=8, max_trials_per_task=8)
    first = compile_model(path, {"x": [16, 32]}, HOST, tune, database, tmp_path)
    assert first["tuning"]["source"] == "tuned" and first["tuning"]["new_trials"] > 0
    assert first["tuning"]["database_records"] >= first["tuning"]["new_trials"]
    assert any(task["best_us"] for task in first["tuning"]["tasks"])
    assert (database / "database_tuning_record.json").stat().st_size > 0

    started = time.perf_counter()
    second = compile_model(path, {"x": [16, 32]}, HOST, tune, database, tmp_path)
    assert second["tuning"]["new_trials"] == 0 and second["tuning"]["source"] == "database"
    assert time.perf_counter() - started < first["tuning"]["wall_s"] / 2
    x = np.random.default_rng(2).standard_normal((16, 32)).astype(np.float32)
    (expected,) = run_ort(_matmul_relu(), {"x": x})
    np.testing.assert_allclose(load_runner(tmp_path / "model.so", ["x"])({"x": x})[0], expected, atol=1e-4)


def test_cross_compiles_for_aarch64(cnn: tuple[Path, onnx.ModelProto], tmp_path: Path) -> None:
    from compiler.backends import aarch64

    try:
        cross_compiler = aarch64.cross_compiler()  # installs the cross toolchain with apt when root
    except UserError as error:
        pytest.skip(f"no AArch64 cross toolchain here: {error}")
    arm = TvmTarget("llvm", "aarch64-linux-gnu", "cortex-a72", ("+neon",), 4)
    tune = TuneOptions(trials=16, max_trials_per_task=None)  # not the host: reads the database only
    meta = compile_model(cnn[0], {"image": [1, 1, 8, 8]}, arm, tune, tmp_path / "db", tmp_path, cross_compiler)
    assert meta["tuning"]["new_trials"] == 0 and meta["tuning"]["source"] == "untuned"
    header = (tmp_path / "model.so").read_bytes()[:20]
    assert header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183  # EM_AARCH64


def test_errors_a_user_can_act_on(cnn: tuple[Path, onnx.ModelProto], tmp_path: Path) -> None:
    with pytest.raises(TvmError, match="static shape for input 'image'"):
        compile_model(cnn[0], {}, HOST, UNTUNED, tmp_path / "db", tmp_path)
    with pytest.raises(UserError, match='runner = "rpc" needs tracker = "HOST:PORT"'):
        compile_model(cnn[0], {"image": [1, 1, 8, 8]}, HOST, TuneOptions(4, None, "rpc"), tmp_path / "db", tmp_path)

    node = helper.make_node(
        "QLinearConv", ["x", "s", "z", "w", "s", "z", "s", "z"], ["y"], kernel_shape=[1, 1], name="qconv"
    )
    init = [
        numpy_helper.from_array(np.array(0.1, np.float32), "s"),
        numpy_helper.from_array(np.array(0, np.uint8), "z"),
        numpy_helper.from_array(np.ones((1, 1, 1, 1), np.uint8), "w"),
    ]
    graph = helper.make_graph(
        [node],
        "q",
        [helper.make_tensor_value_info("x", TensorProto.UINT8, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.UINT8, [1, 1, 4, 4])],
        init,
    )
    path = tmp_path / "q.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    with pytest.raises(TvmError, match="QLinearConv") as caught:
        compile_model(path, {"x": [1, 1, 4, 4]}, HOST, UNTUNED, tmp_path / "db", tmp_path)
    assert "\n" not in str(caught.value) and "desktop-fp32" in str(caught.value)
