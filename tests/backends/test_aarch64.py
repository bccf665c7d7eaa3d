"""ARM64 TVM artifacts run under qemu-aarch64 through the shipped C++ runner and match ONNX Runtime on x86.

The first run installs the cross toolchain (as root) and downloads the aarch64 TVM wheels; both are
cached under .toolchains/, so later runs only compile the models (a few seconds each).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from compiler.backends import aarch64
from compiler.errors import UserError
from tests.onnx_helpers import run_ort, tiny_cnn

tvm = pytest.importorskip("tvm")


def _target() -> tvm.target.Target:
    return tvm.target.Target(
        {"kind": "llvm", "mtriple": "aarch64-linux-gnu", "mcpu": "cortex-a72", "mattr": ["+neon"], "num-cores": 2}
    )


def _compile_aarch64(model: onnx.ModelProto, shapes: dict[str, list[int]], path: Path) -> Path:
    """The ONNX `model` imported into Relax with static `shapes`, fused, and exported as an aarch64 model.so."""
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    mod = from_onnx(model, shape_dict=shapes)
    mod = relax.transform.DecomposeOpsForInference()(mod)
    mod = relax.get_pipeline("zero")(mod)  # the default CPU pipeline does no fusion (DESIGN.md)
    executable = tvm.compile(mod, _target())
    executable.export_library(str(path), fcompile=tvm.support.cc.cross_compiler("aarch64-linux-gnu-g++"))
    return path


def _embedding_model(ids: str = "ids", mask: str = "mask") -> onnx.ModelProto:
    """int64 token ids + float mask -> (masked embeddings, sum over the sequence): int64 input, two outputs."""
    rng = np.random.default_rng(1)
    table = helper.make_tensor("table", TensorProto.FLOAT, [50, 8], rng.standard_normal((50, 8)).astype(np.float32))
    nodes = [
        helper.make_node("Gather", ["table", ids], ["embedded"]),
        helper.make_node("Unsqueeze", [mask, "axis2"], ["mask3"]),
        helper.make_node("Mul", ["embedded", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "axis1"], ["pooled"], keepdims=0),
    ]
    graph = helper.make_graph(
        nodes,
        "embed",
        [
            helper.make_tensor_value_info(ids, TensorProto.INT64, [2, 6]),
            helper.make_tensor_value_info(mask, TensorProto.FLOAT, [2, 6]),
        ],
        [
            helper.make_tensor_value_info("masked", TensorProto.FLOAT, [2, 6, 8]),
            helper.make_tensor_value_info("pooled", TensorProto.FLOAT, [2, 8]),
        ],
        initializer=[
            table,
            helper.make_tensor("axis2", TensorProto.INT64, [1], [2]),
            helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture(scope="module")
def runner() -> Path:
    try:
        return aarch64.build_runner()
    except UserError as error:  # no root/apt or no network: nothing here can run
        pytest.skip(str(error))


def test_is_aarch64_elf(tmp_path: Path, runner: Path) -> None:
    assert aarch64.is_aarch64_elf(runner)
    assert not aarch64.is_aarch64_elf(Path(np.__file__))
    (tmp_path / "x86.bin").write_bytes(b"\x7fELF\x02\x01" + bytes(12) + (62).to_bytes(2, "little"))
    assert not aarch64.is_aarch64_elf(tmp_path / "x86.bin")


def test_cnn_matches_onnxruntime(tmp_path: Path, runner: Path) -> None:
    model, feeds = tiny_cnn()
    batch = np.concatenate([feed["image"] for feed in feeds[:4]])  # batch of 4 images
    model_so = _compile_aarch64(model, {"image": list(batch.shape)}, tmp_path / "model.so")
    assert aarch64.is_aarch64_elf(model_so)

    outputs = aarch64.run_under_qemu(model_so, {"image": batch}, "cortex-a72", output_count=1)

    (expected,) = run_ort(model, {"image": batch})
    assert outputs[0].dtype == np.float32 and outputs[0].shape == expected.shape
    np.testing.assert_allclose(outputs[0], expected, atol=1e-4, rtol=0)


def test_int64_input_tuple_output(tmp_path: Path, runner: Path) -> None:
    model = _embedding_model()
    rng = np.random.default_rng(2)
    feeds = {"ids": rng.integers(0, 50, (2, 6)).astype(np.int64), "mask": (rng.random((2, 6)) > 0.3).astype(np.float32)}
    model_so = _compile_aarch64(model, {"ids": [2, 6], "mask": [2, 6]}, tmp_path / "embed.so")

    outputs = aarch64.run_under_qemu(model_so, feeds, "cortex-a72", output_count=2)

    for actual, expected in zip(outputs, run_ort(model, feeds), strict=True):
        assert actual.shape == expected.shape
        np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=0)


def test_build_path_feeds_inputs_in_graph_order(tmp_path: Path, runner: Path) -> None:
    """The build's path (compile_for writes io.json, outputs_for runs qemu): inputs whose names sort
    in the other order than the graph's (MiniLM: input_ids, attention_mask) reach main in graph order."""
    from compiler.backends.base import CompileRequest
    from compiler.backends.catalogue import backend_for
    from compiler.engine import config

    model = _embedding_model(ids="zeta_ids", mask="alpha_mask")
    onnx.save(model, tmp_path / "embed.onnx")
    shapes = {"zeta_ids": [2, 6], "alpha_mask": [2, 6]}
    (tmp_path / "out").mkdir()
    backend = backend_for(config.load_target("arm64-fp32"))
    request = CompileRequest(tmp_path / "embed.onnx", "embed", "model", shapes, tmp_path / "cache")
    backend.compile(request, tmp_path / "out")
    assert backend.execution(tmp_path / "out" / "model.so").where == "emulated"
    rng = np.random.default_rng(3)
    feeds = {
        "zeta_ids": rng.integers(0, 50, (2, 6)).astype(np.int64),
        "alpha_mask": (rng.random((2, 6)) > 0.3).astype(np.float32),
    }

    (outputs,) = backend.outputs_for(tmp_path / "out" / "model.so", [feeds])

    for actual, expected in zip(outputs, run_ort(model, feeds), strict=True):
        np.testing.assert_allclose(actual, expected, atol=1e-4, rtol=0)


def test_failure_is_one_line_user_error(tmp_path: Path, runner: Path) -> None:
    model, feeds = tiny_cnn()
    model_so = _compile_aarch64(model, {"image": [1, 1, 8, 8]}, tmp_path / "model.so")
    with pytest.raises(UserError, match="failed under qemu-aarch64") as error:
        aarch64.run_under_qemu(model_so, {"image": feeds[0]["image"], "extra": feeds[0]["image"]}, "cortex-a72")
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="not an AArch64"):
        aarch64.run_under_qemu(Path(np.__file__), {}, "cortex-a72")
