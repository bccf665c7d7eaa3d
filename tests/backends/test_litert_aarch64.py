"""arm64-litert-int8: the android-int8 .tflite on LiteRT's aarch64 wheel (XNNPACK), under qemu-aarch64.

Fast: the catalogue tells a Linux board from an Android phone of the same runtime and ISA; the
board's lock pins the tflite toolchain's own LiteRT; the guest worker imports only what the
userland has, and binds inputs and outputs as the host's tflite worker does.
Slow (an end-to-end build of digits-cnn, minutes on first use): verified on the Cortex-A72 model,
counted in instructions with integer kernels and an XNNPACK partition, bit-identical to the
host's LiteRT on the same file, and packaged as a .tflite naming the board's runtime.
"""

from __future__ import annotations

import ast
import json
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from compiler.backends import host, litert_aarch64_worker
from compiler.backends.catalogue import backend_for, target_backend_class
from compiler.backends.litert_aarch64 import LOCK, WORKER, LiteRtAarch64Backend
from compiler.backends.ort_aarch64 import OrtAarch64Backend
from compiler.backends.tflite import TOOLCHAIN, LiteRtBackend
from compiler.cli.main import main
from compiler.engine import config
from compiler.toolchains import read_pins


@pytest.fixture
def x86_host(monkeypatch: pytest.MonkeyPatch) -> None:
    # The selection depends on the build host's ISA (an aarch64 host runs these targets natively).
    monkeypatch.setattr(host, "host_arch", lambda: "x86_64")


@pytest.mark.usefixtures("x86_host")
@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("arm64-litert-int8", LiteRtAarch64Backend),
        ("android-int8", LiteRtBackend),  # same runtime and ISA, os "android": the host interpreter
        ("android-fp32", LiteRtBackend),
        ("arm64-int8", OrtAarch64Backend),
    ],
)
def test_catalogue_tells_a_linux_board_from_a_phone(target: str, expected: type) -> None:
    assert target_backend_class(config.load_target(target)) is expected


@pytest.mark.usefixtures("x86_host")
def test_board_target_runs_under_emulation_and_is_not_timed_on_the_host() -> None:
    backend = backend_for(config.load_target("arm64-litert-int8"))
    assert isinstance(backend, LiteRtAarch64Backend) and backend.cpu == "cortex-a72"
    execution = backend.execution(Path("model.tflite"))
    assert execution.where == "emulated" and "-cpu cortex-a72" in execution.how and not execution.timed
    assert backend.counts_instructions and not backend.times_off_host
    assert backend.time_against_ort(Path("model.onnx"), {}, {}, 1) is None


def test_board_target_builds_what_android_int8_builds() -> None:
    board, phone = config.load_target("arm64-litert-int8"), config.load_target("android-int8")
    assert board.precision == phone.precision == "int8" and board.runtime == phone.runtime == "litert"
    assert board.passes == phone.passes
    assert board.platform["os"] == "linux" and board.platform["triple"] == "aarch64-linux-gnu"


def test_lock_pins_the_tflite_toolchains_litert() -> None:
    pins = read_pins(LOCK, LOCK.name)
    board = dict(pin.split("==", 1) for pin in pins)
    assert board["ai-edge-litert"] == TOOLCHAIN.versions()["ai-edge-litert"] == "2.1.0"
    assert board["numpy"] == TOOLCHAIN.versions()["numpy"]
    assert "onnxruntime" not in board and "tensorflow" not in board
    assert all(len(line) <= 100 for line in LOCK.read_text().splitlines())


def test_worker_imports_only_what_the_userland_has() -> None:
    tree = ast.parse(WORKER.read_text())
    imported = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    imported |= {
        node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert imported - set(sys.stdlib_module_names) == {"numpy", "ai_edge_litert"}


def test_worker_binds_nchw_images_and_orders_outputs_by_onnx_name() -> None:
    image = np.arange(2 * 3 * 4 * 5, dtype=np.float64).reshape(2, 3, 4, 5)
    details = {"image": {"shape_signature": [2, 4, 5, 3], "dtype": np.float32}}
    bound = litert_aarch64_worker.bind(details, {"image": image})
    assert bound["image"].shape == (2, 4, 5, 3) and bound["image"].dtype == np.float32
    np.testing.assert_array_equal(bound["image"], image.transpose(0, 2, 3, 1))
    tokens = np.ones((1, 8), np.int64)  # not an image: passes unchanged
    assert litert_aarch64_worker.to_nhwc(tokens, [1, 8]) is tokens
    first, second = np.zeros(1), np.ones(1)
    # Quantized variants name their outputs output_0..N-1; float ones keep the ONNX names.
    assert litert_aarch64_worker.ordered({"output_1": second, "logits": first}, ["logits", "probs"]) == [first, second]
    with pytest.raises(KeyError, match="no output 'probs'"):
        litert_aarch64_worker.ordered({"logits": first}, ["logits", "probs"])


# -- end to end ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def a72(tmp_path_factory: pytest.TempPathFactory) -> Path:
    artifacts = tmp_path_factory.mktemp("arm64-litert-int8")
    arguments = ["build", "-t", "arm64-litert-int8", "-m", "digits-cnn", "--artifacts", str(artifacts), "--package"]
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 0, result.output
    assert "ORT FP32's instructions per inference under qemu -cpu cortex-a72" in result.output
    return artifacts / "digits-cnn" / "arm64-litert-int8"


@pytest.mark.slow
def test_tflite_is_verified_on_the_a72_and_counted_against_ort_fp32(a72: Path) -> None:
    record = json.loads((a72 / "report.json").read_text())
    metrics = record["metrics"]
    assert metrics["fidelity"]["within_budget"]
    stats = record["stages"][-1]["stats"]
    assert "verified with ai-edge-litert 2.1.0 (aarch64 wheel" in stats["execution"]
    assert "under qemu-aarch64 -cpu cortex-a72" in stats["execution"]
    assert stats["runtime_version"] == "2.1.0" and stats["device_wheels"]["ai-edge-litert"] == "2.1.0"
    counted = metrics["latency"]["instructions"]
    assert counted["cpu"] == "cortex-a72" and counted["calls"] >= 2
    # Full-integer INT8 on XNNPACK: integer multiply-accumulate work, no dot product on a Pi 4's core.
    assert counted["integer_mac"] > 0 and counted["artifact"]["sdot_udot"] == 0
    assert counted["integer_mac"] == sum(counted["artifact"][k] for k in ("sdot_udot", "smull_smlal", "sadalp"))
    assert counted["litert"]["interpreter_nodes"]["DELEGATE"] >= 1  # XNNPACK took the graph
    assert counted["ort_fp32"]["fmla"] > 0 and counted["ort_fp32"]["smull_smlal"] == 0
    assert counted["ratio_vs_ort_fp32"] == pytest.approx(counted["artifact"]["total"] / counted["ort_fp32"]["total"])
    assert 0 < counted["ratio_vs_ort_fp32"] < 1


@pytest.mark.slow
def test_board_outputs_are_bit_identical_to_this_hosts_litert(a72: Path) -> None:
    record = json.loads((a72 / "report.json").read_text())
    artifact = Path(record["stages"][-1]["path"])  # the compiled stage, with its io.json beside it
    rng = np.random.default_rng(0)
    batches = [{"image": rng.uniform(0, 16, (n, 1, 8, 8)).astype(np.float32)} for n in (1, 5)]
    board = LiteRtAarch64Backend(config.load_target("arm64-litert-int8")).outputs_for(artifact, batches)
    phone = LiteRtBackend(config.load_target("android-int8")).outputs_for(artifact, batches)
    for on_board, on_host, feeds in zip(board, phone, batches, strict=True):
        assert on_board[0].shape == (len(feeds["image"]), 10)
        np.testing.assert_array_equal(on_board[0], on_host[0])


@pytest.mark.slow
def test_bundle_is_a_tflite_naming_the_boards_runtime(a72: Path) -> None:
    with tarfile.open(a72 / "digits-cnn-1.0.0-arm64-litert-int8.tar") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        names = tar.getnames()
    assert "digits-cnn.tflite" in names
    roles = {entry["name"]: entry["role"] for entry in manifest["files"]}
    assert roles["digits-cnn.tflite"] == "artifact"
    target = manifest["target"]
    assert target["arch"] == "aarch64" and target["cpu"] == "cortex-a72" and target["os"] == "linux"
    assert target["runtime"] == "litert" and target["runtime_version"] == "2.1.0"
    assert manifest["metrics"]["latency"]["instructions"]["integer_mac"] > 0
    assert manifest["conversion"]["converter"]["int8"] == "full-integer"
