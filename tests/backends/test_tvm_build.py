"""desktop-tvm through the whole pipeline: digits-cnn compiled by TVM for this host, tuned with a
small MetaSchedule budget, verified on TVM's VM against the FP32 reference, packaged; a rebuild
that bypasses the stage cache reuses the tuning database (0 new trials)."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli.main import main
from tests.toml_variants import variant

pytestmark = pytest.mark.slow  # end-to-end builds of real models (minutes)

TRIALS = 8


def run_cli(*args: str) -> str:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def tvm_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    artifacts = tmp_path_factory.mktemp("tvm-artifacts")
    run_cli(
        "build", "-t", "desktop-tvm", "-m", "digits-cnn", "--artifacts", str(artifacts), "--tune-trials", str(TRIALS)
    )
    record = json.loads((artifacts / "digits-cnn" / "desktop-tvm" / "report.json").read_text())
    return artifacts, record


def test_digits_on_tvm_is_tuned_verified_and_packaged(tvm_build: tuple[Path, dict]) -> None:
    artifacts, record = tvm_build
    assert record["artifact"] == "digits-cnn.so"
    compile_stage = record["stages"][-1]
    tuning = compile_stage["stats"]["tuning"]
    assert tuning["requested_trials"] == TRIALS and tuning["new_trials"] > 0 and tuning["tasks"]
    assert record["metrics"]["fidelity"]["within_budget"] is True  # run on TVM's VM, not ORT
    assert record["target"]["platform"]["features"]  # the host ISA the code was built for
    bundle = artifacts / "digits-cnn" / "desktop-tvm" / "digits-cnn-1.0.0-desktop-tvm.tar"
    with tarfile.open(bundle) as tar:
        names = tar.getnames()
        manifest = json.loads(tar.extractfile("manifest.json").read())  # type: ignore[union-attr]
    assert "digits-cnn.so" in names and manifest["target"]["runtime"] == "tvm"
    assert manifest["target"]["isa_features"] == record["target"]["platform"]["features"]
    assert Path(artifacts / "digits-cnn" / "desktop-tvm" / "digits-cnn.so").read_bytes()[:4] == b"\x7fELF"


def test_rebuild_reuses_the_tuning_database(tvm_build: tuple[Path, dict]) -> None:
    artifacts, first = tvm_build
    run_cli(
        "build", "-t", "desktop-tvm", "-m", "digits-cnn", "--artifacts", str(artifacts), "--tune-trials", str(TRIALS),
        "--no-cache", "--no-package",
    )  # fmt: skip
    record = json.loads((artifacts / "digits-cnn" / "desktop-tvm" / "report.json").read_text())
    tuning = record["stages"][-1]["stats"]["tuning"]
    assert tuning["new_trials"] == 0 and tuning["source"] == "database", tuning
    # The compile stage itself (tuning included the first time) is over 10x faster with the records;
    # the whole --no-cache rebuild also re-trains and re-verifies, so its wall time is mostly noise.
    assert record["stages"][-1]["seconds"] * 10 < first["stages"][-1]["seconds"], (record["stages"][-1], first)


def test_tune_trials_is_refused_for_onnxruntime_targets() -> None:
    result = CliRunner().invoke(main, ["build", "-t", "desktop-int8", "-m", "digits-cnn", "--tune-trials", "4"])
    assert result.exit_code == 2 and "tuning options apply to TVM targets" in result.output
    rpc = ["--rpc-tracker", "127.0.0.1:9190", "--rpc-key", "rpi4"]
    result = CliRunner().invoke(main, ["build", "-t", "desktop-int8", "-m", "digits-cnn", *rpc])
    assert result.exit_code == 2 and "runs on onnxruntime" in result.output


def test_rpc_options_go_together() -> None:
    tune = ["tune", "digits-cnn", "-t", "desktop-tvm"]
    result = CliRunner().invoke(main, [*tune, "--rpc-tracker", "127.0.0.1:9190"])
    assert result.exit_code == 2 and "--rpc-tracker HOST:PORT and --rpc-key KEY go together" in result.output
    result = CliRunner().invoke(main, [*tune, "--rpc-tracker", "x", "--rpc-key", "k"])
    assert result.exit_code == 2 and "give the tracker as HOST:PORT" in result.output


def test_bad_mattr_is_named(tmp_path: Path) -> None:
    path = variant(tmp_path, "desktop-tvm", {"features = [] }": 'features = [], mattr = "+neon" }'})
    result = CliRunner().invoke(main, ["build", "-t", str(path), "-m", "digits-cnn", "--artifacts", str(tmp_path)])
    assert result.exit_code == 2 and "platform.mattr" in result.output and "Traceback" not in result.output
