"""End to end through the CLI: digits-cnn for desktop-int8, cache behaviour, concurrent builds.

One artifacts directory is shared by the module so the digits model trains once (import stage
cache); each test then checks one behaviour of a real build.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from compiler.cli.main import main
from tests.toml_variants import variant


def run_cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("artifacts")


@pytest.fixture(scope="module")
def int8_build(artifacts: Path) -> dict:
    code, output = run_cli("build", "-t", "desktop-int8", "-m", "digits-cnn", "--artifacts", str(artifacts))
    assert code == 0, output
    return json.loads((artifacts / "digits-cnn" / "desktop-int8" / "report.json").read_text())


@pytest.mark.slow
def test_digits_int8_meets_its_budget_and_is_quantized(int8_build: dict, artifacts: Path) -> None:
    out = artifacts / "digits-cnn" / "desktop-int8"
    assert {"digits-cnn.onnx", "report.json", "report.md", "report.png"} <= {p.name for p in out.iterdir()}
    fidelity = int8_build["metrics"]["fidelity"]
    assert fidelity["within_budget"] and fidelity["detail"]["accuracy_drop"] <= 0.5
    assert [s["stage"] for s in int8_build["stages"]] == [
        "import",
        "fold-constants",
        "fuse",
        "quantize-static-int8",
        "compile (onnxruntime)",
    ]
    assert int8_build["metrics"]["size_ratio"] < 0.5  # int8 weights
    record_files = {f["name"]: f for f in int8_build["files"]}
    assert record_files["digits-cnn.onnx"]["bytes"] == (out / "digits-cnn.onnx").stat().st_size
    assert "| quantize-static-int8 |" in (out / "report.md").read_text()


@pytest.mark.slow
def test_identical_rebuild_is_up_to_date(int8_build: dict, artifacts: Path) -> None:
    before = (artifacts / "digits-cnn" / "desktop-int8" / "report.json").stat().st_mtime_ns
    started = time.perf_counter()
    code, output = run_cli("build", "-t", "desktop-int8", "-m", "digits-cnn", "--artifacts", str(artifacts))
    assert code == 0 and "up to date" in output
    assert time.perf_counter() - started < 3
    assert (artifacts / "digits-cnn" / "desktop-int8" / "report.json").stat().st_mtime_ns == before


@pytest.mark.slow
def test_option_change_reruns_from_that_pass(int8_build: dict, artifacts: Path, tmp_path: Path) -> None:
    static = '{ pass = "quantize-static-int8", per_channel = true, mixed_precision = true'
    target = variant(tmp_path, "desktop-int8", {static + " }": static + ", calibration_samples = 64 }"})
    code, output = run_cli("build", "-t", str(target), "-m", "digits-cnn", "--artifacts", str(artifacts))
    assert code == 0, output
    record = json.loads((artifacts / "digits-cnn" / "desktop-int8" / "report.json").read_text())
    cached = {s["stage"]: s["cached"] for s in record["stages"]}
    assert cached == {
        "import": True,
        "fold-constants": True,
        "fuse": True,
        "quantize-static-int8": False,
        "compile (onnxruntime)": False,
    }


@pytest.mark.slow
def test_two_concurrent_builds_do_not_corrupt_each_other(int8_build: dict, artifacts: Path) -> None:
    env = {**os.environ, "ORT_DISABLE_TELEMETRY": "1"}
    command = [
        sys.executable,
        "-m",
        "compiler.cli.main",
        "build",
        "-t",
        "desktop-fp32",
        "-m",
        "digits-cnn",
        "--artifacts",
        str(artifacts),
    ]
    processes = [
        subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)
    ]
    results = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], results
    out = artifacts / "digits-cnn" / "desktop-fp32"
    record = json.loads((out / "report.json").read_text())
    from compiler.engine.cache import sha256_file

    assert sha256_file(out / "digits-cnn.onnx") == record["files"][0]["sha256"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no staging debris


def test_build_from_onnx_file(artifacts: Path, tmp_path: Path) -> None:
    from tests.onnx_helpers import tiny_cnn

    model, _ = tiny_cnn()
    path = tmp_path / "tiny.onnx"
    path.write_bytes(model.SerializeToString())
    code, output = run_cli("build", "--onnx", str(path), "-t", "desktop-fp32", "--artifacts", str(artifacts))
    assert code == 0, output
    record = json.loads((artifacts / "tiny" / "desktop-fp32" / "report.json").read_text())
    assert record["model"]["source"]["kind"] == "onnx"
    assert record["inputs"][0]["name"] == "image"
    assert record["metrics"]["fidelity"]["value"] > 0.999


@pytest.mark.slow
def test_speed_gate_fails_a_slower_optimised_build(int8_build: dict, artifacts: Path, tmp_path: Path) -> None:
    """Dynamic INT8 on convolutions (ConvInteger) is slower than FP32: a 'fail' gate refuses it."""
    edits = {
        '{ pass = "fuse" },': '{ pass = "fuse" },\n  { pass = "quantize-dynamic-int8", op_types = ["Conv"] },',
        'speed_gate = "warn"\nmax_latency_ratio = 1.10': 'speed_gate = "fail"\nmax_latency_ratio = 1.0',
    }
    target = variant(tmp_path, "desktop-fp32", edits, "cnn-dynamic")
    code, output = run_cli("build", "-t", str(target), "-m", "digits-cnn", "--artifacts", str(artifacts))
    assert code == 3
    # Judged on per-round CPU-time ratios, beyond their spread (7x slower is far beyond any noise).
    assert "the CPU time per call of ORT FP32" in output and "beyond the measured spread" in output
    assert "speed_gate" in output
    assert not (artifacts / "digits-cnn" / "cnn-dynamic").exists()


@pytest.mark.slow
def test_minilm_desktop_int8_end_to_end(tmp_path: Path) -> None:
    """The README's main job on the real MiniLM: budget met, INT8-sized, faster than ORT FP32."""
    code, output = run_cli("build", "-t", "desktop-int8", "-m", "minilm", "--artifacts", str(tmp_path))
    assert code == 0, output
    record = json.loads((tmp_path / "minilm" / "desktop-int8" / "report.json").read_text())
    fidelity = record["metrics"]["fidelity"]
    assert fidelity["within_budget"] and fidelity["detail"]["mean_cosine"] >= 0.99
    assert record["metrics"]["size_ratio"] <= 0.26
    assert record["metrics"]["latency"]["ratio_vs_ort_fp32"] < 1.0  # loose: shared CI machines are noisy
    assert [i["name"] for i in record["inputs"]] == ["input_ids", "attention_mask", "token_type_ids"]
    assert record["provenance"]["export_check"]["min_cosine"] > 0.9999


@pytest.mark.slow
def test_budget_change_reuses_the_import(int8_build: dict, artifacts: Path, tmp_path: Path) -> None:
    """The metric budget is not part of the import key (no re-export, no retraining)."""
    recipe = variant(tmp_path, "digits-cnn", {"max_drop = 0.5": "max_drop = 1.0"}, kind="model")
    code, output = run_cli("build", "-t", "desktop-int8", "-m", str(recipe), "--artifacts", str(artifacts))
    assert code == 0, output
    record = json.loads((artifacts / "digits-cnn" / "desktop-int8" / "report.json").read_text())
    assert record["stages"][0]["cached"] is True
    assert "budget drop <= 1.0" in record["metrics"]["fidelity"]["summary"]


@pytest.mark.slow
def test_rebuild_from_scratch_is_byte_identical(int8_build: dict, tmp_path: Path) -> None:
    """Same inputs, no cache, another directory (training included): the same artifact bytes."""
    code, output = run_cli(
        "build", "-t", "desktop-int8", "-m", "digits-cnn", "--no-cache", "--artifacts", str(tmp_path)
    )
    assert code == 0, output
    record = json.loads((tmp_path / "digits-cnn" / "desktop-int8" / "report.json").read_text())
    assert record["files"] == int8_build["files"]
    assert list((tmp_path / "cache").iterdir()) == []  # --no-cache keeps nothing
