"""A model over protobuf's 2 GB limit, end to end: external data in, passes, INT8 out, bundle.

34 MatMuls with 4096 x 4096 float32 weights (2.28 GB in `model.onnx.data`, the form any model this
large must take) built for desktop-int8: imported with its data file, folded and quantized with
every stage writing external data where it must, INT8 at 25% of the FP32 size (571 MB, one
self-contained file again), verified within budget, packaged and signed. About 5 minutes and 8 GB of
memory on 2 cores: `make conformance` runs it.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from compiler import onnx_io
from compiler.cli.main import main

pytestmark = [pytest.mark.slow, pytest.mark.conformance]
WIDTH, LAYERS = 4096, 34  # 34 x 64 MiB of weights


def write_large_model(path: Path) -> Path:
    rng = np.random.default_rng(0)
    nodes, weights, previous = [], [], "x"
    for layer in range(LAYERS):
        matrix = (rng.standard_normal((WIDTH, WIDTH), dtype=np.float32) / np.sqrt(WIDTH)).astype(np.float32)
        weights.append(numpy_helper.from_array(matrix, f"w{layer}"))
        nodes.append(helper.make_node("MatMul", [previous, f"w{layer}"], [f"h{layer}"]))
        previous = f"h{layer}"
    graph = helper.make_graph(
        nodes,
        "large",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [helper.make_tensor_value_info(previous, TensorProto.FLOAT, ["batch", WIDTH])],
        weights,
    )
    onnx_io.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return path


def test_a_model_over_2_gb_builds_to_int8_and_a_signed_bundle(tmp_path: Path) -> None:
    source = write_large_model(tmp_path / "large.onnx")
    assert (tmp_path / "large.onnx.data").stat().st_size > onnx_io.PROTOBUF_LIMIT
    artifacts = tmp_path / "artifacts"
    result = CliRunner().invoke(
        main, ["build", "-t", "desktop-int8", "--onnx", str(source), "--artifacts", str(artifacts)]
    )
    assert result.exit_code == 0, result.output
    out = artifacts / "large" / "desktop-int8"
    record = json.loads((out / "report.json").read_text())
    metrics = record["metrics"]
    assert metrics["fidelity"]["within_budget"]
    assert metrics["fp32_size_bytes"] > onnx_io.PROTOBUF_LIMIT and metrics["size_ratio"] < 0.27
    assert metrics["precision"]["promise_met"]
    bundle = next(out.glob("*.tar"))
    with tarfile.open(bundle) as archive:
        assert "large.onnx" in archive.getnames()
