"""arm64-int8 and arm64-int8-a76 on ONNX Runtime for AArch64, end to end with digits-cnn.

The INT8 .onnx runs in the aarch64 onnxruntime wheel under qemu-aarch64 with the board's CPU model
(an arm64 Debian userland made on first use); its cost is counted in instructions per inference by
class against ORT FP32 on the same emulated CPU. Checked: the artifact is a quarter of FP32, scored
within budget on the emulated board, bit-identical to this host's ONNX Runtime on the same file,
integer kernels ran (SMULL/SADALP on the A72 model, SDOT on the A76), the bundle names the exact
runtime and lists the operators, and an "INT8" target that quantizes nothing fails its gate.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from compiler.backends.catalogue import backend_for
from compiler.cli.main import main
from compiler.engine import config
from compiler.shipped import PACKAGES as ROOT

pytestmark = pytest.mark.slow  # end-to-end builds under emulation (minutes)


def _build(target: str, artifacts: Path, *extra: str) -> tuple[int, str]:
    arguments = ["build", "-t", target, "-m", "digits-cnn", "--artifacts", str(artifacts), *extra]
    result = CliRunner().invoke(main, arguments)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def a72(tmp_path_factory: pytest.TempPathFactory) -> Path:
    artifacts = tmp_path_factory.mktemp("arm64-int8")
    code, output = _build("arm64-int8", artifacts, "--package")
    assert code == 0, output
    assert "ORT FP32's instructions per inference under qemu -cpu cortex-a72" in output
    return artifacts / "digits-cnn" / "arm64-int8"


def test_int8_artifact_is_verified_on_the_a72_and_counted(a72: Path) -> None:
    record = json.loads((a72 / "report.json").read_text())
    metrics = record["metrics"]
    assert metrics["size_ratio"] <= 0.27
    assert metrics["fidelity"]["within_budget"]
    assert "under qemu-aarch64 -cpu cortex-a72" in record["stages"][-1]["stats"]["execution"]
    counted = metrics["latency"]["instructions"]
    assert counted["cpu"] == "cortex-a72" and counted["calls"] >= 2
    # The Pi 4 has no dot product: ORT's A72 kernels widen and accumulate pairwise instead.
    assert counted["artifact"]["sdot_udot"] == 0
    assert counted["artifact"]["smull_smlal"] > 0 and counted["artifact"]["sadalp"] > 0
    assert counted["integer_mac"] == sum(counted["artifact"][k] for k in ("sdot_udot", "smull_smlal", "sadalp"))
    # ORT FP32 on the same core runs FMLA and no integer kernels; the INT8 artifact executes fewer.
    assert counted["ort_fp32"]["fmla"] > 0 and counted["ort_fp32"]["smull_smlal"] == 0
    assert 0 < counted["ratio_vs_ort_fp32"] < 1
    report = (a72 / "report.md").read_text()
    assert "instructions per inference" in report and "integer multiply-accumulate" in report


def test_board_outputs_are_bit_identical_to_this_hosts_onnx_runtime(a72: Path) -> None:
    backend = backend_for(config.load_target("arm64-int8"))
    artifact = a72 / "digits-cnn.onnx"
    assert backend.execution(artifact).where == "emulated"
    rng = np.random.default_rng(0)
    batches = [{"image": rng.uniform(0, 16, (n, 1, 8, 8)).astype(np.float32)} for n in (1, 5)]
    from compiler.ort_session import predictor

    on_host = predictor(artifact, 1)
    for board, feeds in zip(backend.outputs_for(artifact, batches), batches, strict=True):
        np.testing.assert_array_equal(board[0], on_host(feeds)[0])
    session = backend.predictor(artifact)  # the long-lived guest session a generation loop uses
    np.testing.assert_array_equal(session(batches[1])[0], on_host(batches[1])[0])


def test_bundle_names_the_exact_runtime_and_its_operators(a72: Path) -> None:
    with tarfile.open(a72 / "digits-cnn-1.0.0-arm64-int8.tar") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        readme = tar.extractfile("README.md").read().decode()  # type: ignore[union-attr]
        operators = tar.extractfile("operators.txt").read().decode()  # type: ignore[union-attr]
    target = manifest["target"]
    assert target["arch"] == "aarch64" and target["cpu"] == "cortex-a72" and target["runtime"] == "onnxruntime"
    import onnxruntime

    assert target["runtime_version"] == onnxruntime.__version__
    assert manifest["metrics"]["latency"]["instructions"]["integer_mac"] > 0
    assert "ai.onnx:QLinearConv" in operators
    assert f"pip install onnxruntime=={onnxruntime.__version__}" in readme and "Instructions per inference" in readme


def test_a76_runs_sdot_kernels(a72: Path, tmp_path: Path) -> None:
    # After the A72 build of the same model (same cache, same INT8 bytes): the A76 build is its own
    # stage entry, verified and recorded on the A76 model.
    code, output = _build("arm64-int8-a76", tmp_path)
    assert code == 0, output
    record = json.loads((tmp_path / "digits-cnn" / "arm64-int8-a76" / "report.json").read_text())
    counted = record["metrics"]["latency"]["instructions"]
    assert counted["cpu"] == "cortex-a76" and counted["artifact"]["sdot_udot"] > 0
    assert "-cpu cortex-a76 (Raspberry Pi 5)" in record["stages"][-1]["stats"]["execution"]


def test_int8_target_that_quantizes_nothing_fails_its_gate(tmp_path: Path) -> None:
    text = (ROOT / "targets" / "arm64-int8.toml").read_text()
    quantize = '  { pass = "quantize-static-int8", per_channel = true, mixed_precision = true },\n'
    assert quantize in text
    target = tmp_path / "arm64-int8-unquantized.toml"
    target.write_text(text.replace('name = "arm64-int8"', 'name = "arm64-int8-unquantized"').replace(quantize, ""))
    code, output = _build(str(target), tmp_path / "artifacts")
    assert code == 3, output
    assert "INT8 in name only" in output and "none of them integer multiply-accumulate" in output
    assert "Traceback" not in output
