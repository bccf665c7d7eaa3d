"""whisper-tiny-en for ARM boards, the WER gate scored under qemu-aarch64 -cpu cortex-a72 on one clip:

- arm64-fp32 (TVM): both graphs cross-compiled for AArch64, the whole greedy loop
  (templates/whisper_runner.cc, shipped in the bundle) run as one native program under emulation;
- arm64-int8 (ONNX Runtime for AArch64): the INT8 .onnx pair run by the aarch64 onnxruntime wheel in
  two emulated sessions that this process's greedy loop calls step by step.

No timings: emulated time means nothing."""

from __future__ import annotations

import json
import tarfile

import pytest

from compiler.backends import aarch64
from compiler.errors import UserError
from tests.families.speech.test_speech_build import build, small_recipe

pytestmark = pytest.mark.slow  # end-to-end builds of real models (minutes)


def test_arm64_fp32_whisper_is_verified_under_qemu(tmp_path_factory: pytest.TempPathFactory) -> None:
    try:
        aarch64.ensure_cross_toolchain()
    except UserError as error:
        pytest.skip(f"no AArch64 cross toolchain here: {error}")
    recipe = small_recipe(
        tmp_path_factory.mktemp("recipe"), **{"limit = 3": "limit = 1", "emulated_clips = 6": "emulated_clips = 1"}
    )
    artifacts = tmp_path_factory.mktemp("arm64-speech")
    code, output = build(recipe, "arm64-fp32", artifacts)
    assert code == 0, output
    out = artifacts / "whisper-tiny-en" / "arm64-fp32"
    assert aarch64.is_aarch64_elf(out / "encoder.so") and aarch64.is_aarch64_elf(out / "decoder.so")
    record = json.loads((out / "report.json").read_text())
    fidelity = record["metrics"]["fidelity"]
    assert fidelity["within_budget"] and fidelity["detail"]["clips"] == 1
    assert "(on 1 of 2 clips, run under qemu-aarch64 -cpu cortex-a72)" in fidelity["summary"]
    assert record["metrics"]["latency"]["artifact_ms"] is None
    with tarfile.open(out / "whisper-tiny-en-1.0.0-arm64-fp32.tar") as tar:
        names = set(tar.getnames())
    assert {"encoder.so", "decoder.so", "whisper_runner.cc", "tvm_npy.h", "libtvm_runtime.so"} <= names


def test_arm64_int8_whisper_runs_on_onnx_runtime_for_aarch64(tmp_path_factory: pytest.TempPathFactory) -> None:
    recipe = small_recipe(
        tmp_path_factory.mktemp("recipe"), **{"limit = 3": "limit = 1", "emulated_clips = 6": "emulated_clips = 1"}
    )
    artifacts = tmp_path_factory.mktemp("arm64-int8-speech")
    code, output = build(recipe, "arm64-int8", artifacts)
    assert code == 0, output
    out = artifacts / "whisper-tiny-en" / "arm64-int8"
    record = json.loads((out / "report.json").read_text())
    fidelity = record["metrics"]["fidelity"]
    assert fidelity["within_budget"] and fidelity["detail"]["clips"] == 1
    assert "(on 1 of 2 clips, run under qemu-aarch64 -cpu cortex-a72)" in fidelity["summary"]
    assert record["stages"][-1]["stats"]["encoder"]["execution"].startswith("verified with onnxruntime 1.31.1")
    with tarfile.open(out / "whisper-tiny-en-1.0.0-arm64-int8.tar") as tar:
        names = set(tar.getnames())
    assert {"encoder.onnx", "decoder.onnx", "encoder.operators.txt", "decoder.operators.txt"} <= names
    assert "whisper_runner.cc" not in names  # the device runs the Python loop of the bundle README
