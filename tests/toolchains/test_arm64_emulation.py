"""The emulated ARM board: the target's CPU model is enforced, and the instruction counter counts by class.

Tiny aarch64 programs built with Debian's cross compiler run under the dynamic qemu-aarch64 through
compiler/toolchains/arm64.py, the path every ARM verification takes: an SDOT program built for a
dot-product core fails on the Cortex-A72 model (a Pi 4 would SIGILL too) and runs on the A76; the
counting plugin (built from Debian's qemu source header on first use) counts exactly one SDOT,
SMULL, SADALP and FMLA per loop iteration between two marks.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from compiler.backends import aarch64
from compiler.errors import ConfigError, UserError
from compiler.shipped import PACKAGES as ROOT
from compiler.toolchains import arm64

pytestmark = pytest.mark.slow  # installs qemu-user, fetches Debian's qemu source on first use

PROGRAM = r"""
#include <arm_neon.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#define MARK(n) lseek(-1, 0x6564676562756964LL, (n))

int main(int argc, char **argv) {
  int iterations = atoi(argv[1]);
  int8x16_t a = vdupq_n_s8((signed char)argc), b = vdupq_n_s8(3);
  int8x8_t c = vdup_n_s8(2);
  int32x4_t dot = vdupq_n_s32(0), pairs = vdupq_n_s32(0);
  int16x8_t wide = vdupq_n_s16(0);
  float32x4_t f = vdupq_n_f32(1.0f), g = vdupq_n_f32(0.5f);
  MARK(1);
  for (int i = 0; i < iterations; i++) {
    DOT_STEP
    wide = vmull_s8(c, c);
    pairs = vpadalq_s16(pairs, wide);
    f = vfmaq_f32(f, g, g);
    __asm__ volatile("" : "+w"(dot), "+w"(pairs), "+w"(f), "+w"(c));
  }
  MARK(2);
  printf("%d %d %f\n", vgetq_lane_s32(dot, 0), vgetq_lane_s32(pairs, 0), vgetq_lane_f32(f, 0));
  return 0;
}
"""


@pytest.fixture(scope="module")
def cross() -> dict[str, str]:
    try:
        return aarch64.ensure_cross_toolchain()
    except UserError as error:
        pytest.skip(f"no AArch64 cross toolchain here: {error}")


def _build(tmp: Path, cross: dict[str, str], with_sdot: bool) -> Path:
    source = tmp / "kernels.c"
    source.write_text(PROGRAM.replace("DOT_STEP", "dot = vdotq_s32(dot, a, b);" if with_sdot else ""))
    binary = tmp / ("with-sdot" if with_sdot else "no-sdot")
    march = "-march=armv8.2-a+dotprod" if with_sdot else "-march=armv8-a"
    subprocess.run([cross["gcc"], "-O1", march, str(source), "-o", str(binary)], check=True)
    return binary


def test_sdot_fails_on_the_a72_model_and_runs_on_the_a76(tmp_path: Path, cross: dict[str, str]) -> None:
    binary = _build(tmp_path, cross, with_sdot=True)
    with pytest.raises(UserError, match="instruction the cortex-a72 .Raspberry Pi 4. does not have") as error:
        arm64.run_guest("cortex-a72", Path(cross["sysroot"]), [str(binary), "10"], "kernels", 120)
    assert "\n" not in str(error.value)
    result = arm64.run_guest("cortex-a76", Path(cross["sysroot"]), [str(binary), "10"], "kernels", 120)
    assert result.stdout.split()[0] == str(10 * 4 * 2 * 3)  # 10 SDOTs of 4 products argc (2) x 3 per lane


def test_counter_counts_one_of_each_class_per_iteration(tmp_path: Path, cross: dict[str, str]) -> None:
    binary = _build(tmp_path, cross, with_sdot=True)
    counts_file = tmp_path / "counts.json"
    iterations = 1000
    arm64.run_guest(
        "cortex-a76", Path(cross["sysroot"]), [str(binary), str(iterations)], "kernels", 120, None, counts_file
    )
    per_iteration = arm64.per_call(counts_file, iterations)
    assert {name: per_iteration[name] for name in ("sdot_udot", "smull_smlal", "sadalp", "fmla")} == {
        "sdot_udot": 1,
        "smull_smlal": 1,
        "sadalp": 1,
        "fmla": 1,
    }
    assert 4 < per_iteration["total"] < 20  # the four, plus the loop's own few instructions
    # Start-up (the dynamic loader, libc, printf) lies outside the marks.
    marks = arm64.mark_counts(counts_file)
    assert marks[1]["total"] > 10_000


def test_without_dot_product_the_same_loop_counts_no_sdot(tmp_path: Path, cross: dict[str, str]) -> None:
    binary = _build(tmp_path, cross, with_sdot=False)
    counts_file = tmp_path / "counts.json"
    arm64.run_guest("cortex-a72", Path(cross["sysroot"]), [str(binary), "500"], "kernels", 120, None, counts_file)
    per_iteration = arm64.per_call(counts_file, 500)
    assert per_iteration["sdot_udot"] == 0 and per_iteration["smull_smlal"] == 1


def test_unknown_cpu_model_is_a_config_error() -> None:
    known = "valid: cortex-a53, cortex-a72, cortex-a76"
    with pytest.raises(ConfigError, match=f"platform.cpu 'cortex-a73' is not a CPU model .*{known}"):
        arm64.cpu_model("cortex-a73", "targets/board.toml")


@pytest.mark.parametrize("lock", [arm64.LOCK, arm64.DEVICE_LOCK], ids=lambda lock: lock.name)
def test_board_packages_are_the_hosts_own_versions(lock: Path) -> None:
    # The board must run the runtime and client this host tests: every pin is requirements.lock's.
    from compiler.toolchains import read_pins

    host = {line.lower() for line in read_pins(ROOT / "requirements.lock", "requirements.lock")}
    assert [pin for pin in read_pins(lock, lock.name) if pin.lower() not in host] == []


def test_board_litert_is_the_tflite_toolchains_own() -> None:
    # LiteRT is not in the host's environment but in the tflite toolchain that converts for it:
    # the board runs that toolchain's ai-edge-litert, numpy and dependencies, every pin tflite.lock's.
    from compiler.backends.litert_aarch64 import LOCK as LITERT_LOCK
    from compiler.toolchains import read_pins

    toolchain = {line.lower() for line in read_pins(ROOT / "compiler/toolchains/tflite.lock", "tflite.lock")}
    assert [pin for pin in read_pins(LITERT_LOCK, LITERT_LOCK.name) if pin.lower() not in toolchain] == []


def test_locks_share_one_root_filesystem_and_keep_separate_wheels(tmp_path: Path) -> None:
    from compiler.backends.litert_aarch64 import LOCK as LITERT_LOCK

    runtime, device = arm64.Userland(tmp_path), arm64.Userland(tmp_path, arm64.DEVICE_LOCK)
    litert = arm64.Userland(tmp_path, LITERT_LOCK)
    assert runtime.rootfs == device.rootfs == litert.rootfs
    assert len({runtime.site, device.site, litert.site}) == 3
    assert runtime.site.parent == device.site.parent == litert.site.parent == tmp_path
    assert device.versions()["tuf"] and device.versions()["onnxruntime"] == runtime.versions()["onnxruntime"]
    assert litert.versions()["ai-edge-litert"] and "onnxruntime" not in litert.versions()
