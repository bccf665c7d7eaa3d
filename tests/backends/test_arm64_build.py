"""arm64-fp32 through the whole pipeline: digits-cnn cross-compiled by TVM for Cortex-A72, verified
by executing the AArch64 library under qemu-aarch64 against the FP32 reference, packaged with the
TVM runtime libraries and the C++ runner a board needs. No timings: emulated time means nothing."""

from __future__ import annotations

import json
import subprocess
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.backends import aarch64
from compiler.cli.main import main
from compiler.errors import UserError
from compiler.shipped import PACKAGES as ROOT

pytestmark = pytest.mark.slow  # end-to-end builds of real models (minutes)


@pytest.fixture(scope="module")
def arm64_build(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        aarch64.ensure_cross_toolchain()
    except UserError as error:
        pytest.skip(f"no AArch64 cross toolchain here: {error}")
    artifacts = tmp_path_factory.mktemp("arm64-artifacts")
    # The shipped target, verifying the emulated library on 3 of digits-cnn's 6 batches (the
    # default, 24, covers all of them): the subset path MiniLM takes with 173 batches.
    text = (ROOT / "targets" / "arm64-fp32.toml").read_text()
    verify = '[verify]\nspeed_gate = "off"\n'
    assert verify in text
    target = tmp_path_factory.mktemp("targets") / "arm64-fp32.toml"
    target.write_text(text.replace(verify, verify + "emulated_batches = 3\n"))
    result = CliRunner().invoke(
        main, ["build", "-t", str(target), "-m", "digits-cnn", "--artifacts", str(artifacts)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    assert "ORT FP32's instructions per inference under qemu -cpu cortex-a72" in result.output
    return artifacts / "digits-cnn" / "arm64-fp32"


def test_artifact_is_aarch64_and_was_executed_under_qemu(arm64_build: Path) -> None:
    record = json.loads((arm64_build / "report.json").read_text())
    assert aarch64.is_aarch64_elf(arm64_build / "digits-cnn.so")
    stats = record["stages"][-1]["stats"]
    assert "qemu-aarch64" in stats["execution"] and stats["target"]["mtriple"] == "aarch64-linux-gnu"
    assert "-cpu cortex-a72" in stats["execution"]  # the Pi 4's core, not qemu's "max"
    assert record["metrics"]["fidelity"]["within_budget"] is True
    assert record["metrics"]["latency"]["artifact_ms"] is None
    assert "emulated" in (arm64_build / "report.md").read_text()
    shown = CliRunner().invoke(main, ["inspect", str(arm64_build)])
    assert shown.exit_code == 0 and "latency: not measured" in shown.output, shown.output


def test_tvm_library_is_counted_on_the_boards_cpu_model(arm64_build: Path) -> None:
    counted = json.loads((arm64_build / "report.json").read_text())["metrics"]["latency"]["instructions"]
    assert counted["cpu"] == "cortex-a72"
    library, fp32 = counted["artifact"], counted["ort_fp32"]
    assert library["total"] > 0 and fp32["total"] > 0
    assert counted["ratio_vs_ort_fp32"] == pytest.approx(library["total"] / fp32["total"], rel=1e-6)
    # An FP32 library: floating-point multiply-adds, no dot products on a core without them.
    assert library["fmla"] > 0 and library["sdot_udot"] == 0


def test_emulated_library_is_scored_on_an_evenly_spaced_subset(arm64_build: Path) -> None:
    record = json.loads((arm64_build / "report.json").read_text())
    final = record["metrics"]["fidelity"]
    assert final["detail"]["verified_batches"] == 3 and final["detail"]["total_batches"] == 6
    assert "(on 3 of 6 batches, run under qemu-aarch64 -cpu cortex-a72)" in final["summary"]
    # Stages that run on this host are scored on every batch.
    assert all("verified_batches" not in stage["fidelity"]["detail"] for stage in record["stages"][:-1])


def test_bundle_carries_runtime_and_runner(arm64_build: Path) -> None:
    with tarfile.open(arm64_build / "digits-cnn-1.0.0-arm64-fp32.tar") as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
        readme = tar.extractfile("README.md").read().decode()  # type: ignore[union-attr]
    roles = {entry["name"]: entry["role"] for entry in manifest["files"]}
    assert roles["digits-cnn.so"] == "artifact" and roles["tvm_runner.cc"] == "source"
    assert roles["libtvm_runtime.so"] == roles["libtvm_ffi.so"] == "runtime"
    assert manifest["target"]["arch"] == "aarch64" and manifest["target"]["runtime"] == "tvm"
    assert "tvm_runner.cc" in readme and "Latency: not measured" in readme


def test_shipped_library_carries_no_debug_info(arm64_build: Path) -> None:
    sections = subprocess.run(
        ["aarch64-linux-gnu-readelf", "-S", "-W", str(arm64_build / "digits-cnn.so")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert ".dynsym" in sections and ".debug_info" not in sections
