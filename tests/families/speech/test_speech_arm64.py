"""whisper-tiny-en for arm64-int8: both graphs cross-compiled by TVM for AArch64, and the whole greedy
loop (templates/whisper_runner.cc, shipped in the bundle) run under qemu-aarch64 to score the WER
gate on one clip; no timings (emulated time means nothing)."""

from __future__ import annotations

import json
import tarfile

import pytest

from compiler.backends import aarch64
from compiler.errors import UserError
from tests.families.speech.test_speech_build import build, small_recipe

pytestmark = pytest.mark.slow  # end-to-end builds of real models (minutes)


def test_arm64_int8_whisper_is_verified_under_qemu(tmp_path_factory: pytest.TempPathFactory) -> None:
    try:
        aarch64.ensure_cross_toolchain()
    except UserError as error:
        pytest.skip(f"no AArch64 cross toolchain here: {error}")
    recipe = small_recipe(
        tmp_path_factory.mktemp("recipe"), **{"limit = 3": "limit = 1", "emulated_clips = 6": "emulated_clips = 1"}
    )
    artifacts = tmp_path_factory.mktemp("arm64-speech")
    code, output = build(recipe, "arm64-int8", artifacts)
    assert code == 0, output
    out = artifacts / "whisper-tiny-en" / "arm64-int8"
    assert aarch64.is_aarch64_elf(out / "encoder.so") and aarch64.is_aarch64_elf(out / "decoder.so")
    record = json.loads((out / "report.json").read_text())
    fidelity = record["metrics"]["fidelity"]
    assert fidelity["within_budget"] and fidelity["detail"]["clips"] == 1
    assert "(on 1 of 2 clips, run under qemu-aarch64)" in fidelity["summary"]
    assert record["metrics"]["latency"]["artifact_ms"] is None
    with tarfile.open(out / "whisper-tiny-en-1.0.0-arm64-int8.tar") as tar:
        names = set(tar.getnames())
    assert {"encoder.so", "decoder.so", "whisper_runner.cc", "tvm_npy.h", "libtvm_runtime.so"} <= names
