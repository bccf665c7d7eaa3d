"""Run TVM's Linux AArch64 artifacts on an x86 build host, under qemu-aarch64 with the board's CPU model.

What: an ARM64 `model.so` (a Relax VM executable exported with TVM's cross compiler) is executed by
a small C++ runner (templates/tvm_runner.cc) linked against the aarch64 apache-tvm wheel's
libtvm_runtime.so + libtvm_ffi.so: the same loader and runtime a device ships. qemu-user emulates
the CPU; the build compares the outputs with its FP32 reference. Timings under emulation mean
nothing, so this module only returns outputs.

Needs: Debian's gcc/g++-aarch64-linux-gnu (with its sysroot /usr/aarch64-linux-gnu) and
qemu-user (the dynamic qemu-aarch64, run with -cpu from the target file by
compiler/toolchains/arm64.py; installed on demand when running as root), pip, and the network once to download
the two aarch64 wheels. binfmt_misc is not assumed: qemu is called explicitly.

Guarantees: the runtime libraries and the runner are built once and cached under the toolchains
directory (written into a temporary directory and renamed, so a half-written entry is never
seen); every failure is a `UserError` of one line saying what to do.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from compiler.errors import UserError
from compiler.progress import step
from compiler.shipped import shipped
from compiler.toolchains.apt import ensure_programs, first_line

RUNNER_SOURCE = shipped("templates/tvm_runner.cc")
RUNNER_HEADER = shipped("templates/tvm_npy.h")  # shared by every runner source
SYSROOT = Path("/usr/aarch64-linux-gnu")
TVM_VERSION = "0.27.0.post1"
TVM_FFI_VERSION = "0.1.14.post1"  # 0.1.15.x segfaults in JSON serialisation (DESIGN.md)
APT_PACKAGES = ("gcc-aarch64-linux-gnu", "g++-aarch64-linux-gnu")
TOOLS = {"gxx": "aarch64-linux-gnu-g++", "gcc": "aarch64-linux-gnu-gcc"}
EM_AARCH64 = 183

# Files taken from each wheel: archive prefix -> destination inside the runtime directory.
_WHEEL_FILES = {
    "apache_tvm-": {"tvm/lib/libtvm_runtime.so": "libtvm_runtime.so", "tvm/include/": "include/"},
    "apache_tvm_ffi-": {"tvm_ffi/lib/libtvm_ffi.so": "libtvm_ffi.so", "tvm_ffi/include/": "include/"},
}


def is_aarch64_elf(path: Path) -> bool:
    """True when `path` is a little-endian 64-bit ELF file for AArch64 (e_machine 183)."""
    try:
        with open(path, "rb") as handle:
            header = handle.read(20)
    except OSError:
        return False
    # e_ident: magic, EI_CLASS=2 (64-bit), EI_DATA=1 (little-endian); e_machine is a u16 at offset 18.
    elf64_le = len(header) == 20 and header[:4] == b"\x7fELF" and header[4] == 2 and header[5] == 1
    return elf64_le and int.from_bytes(header[18:20], "little") == EM_AARCH64


def ensure_cross_toolchain() -> dict[str, str]:
    """Paths and versions of the AArch64 cross compilers, installing them if needed.

    Returns keys gxx, gcc (paths), sysroot, and gxx_version, gcc_version (first line of `--version`)
    for cache keys and manifests. As root on a Debian-like host the missing packages are installed
    with apt-get; otherwise a UserError gives the command to run.
    """
    paths = ensure_programs(TOOLS, APT_PACKAGES, "ARM64 cross toolchain", (SYSROOT,))
    versions = {f"{key}_version": first_line([path, "--version"]) for key, path in paths.items()}
    return {**paths, "sysroot": str(SYSROOT), **versions}


def default_toolchains() -> Path:
    """Where the aarch64 TVM runtime and runners are kept: the workspace's .toolchains/tvm-aarch64."""
    from compiler import workspace

    return workspace.current().toolchains / "tvm-aarch64"


def cross_compiler() -> Any:
    """TVM's `fcompile` for export_library that links with the AArch64 g++ (installed if missing)."""
    import tvm.support.cc

    return tvm.support.cc.cross_compiler(ensure_cross_toolchain()["gxx"])


def device_files(toolchains_dir: Path | None = None) -> dict[str, tuple[Path, str]]:
    """Files an ARM64 bundle carries beside the model: name -> (path, manifest role)."""
    toolchains_dir = toolchains_dir or default_toolchains()
    libs = tvm_runtime_libs(toolchains_dir)
    return {
        "libtvm_runtime.so": (libs / "libtvm_runtime.so", "runtime"),
        "libtvm_ffi.so": (libs / "libtvm_ffi.so", "runtime"),
        "tvm_runner.cc": (RUNNER_SOURCE, "source"),
        "tvm_npy.h": (RUNNER_HEADER, "source"),
    }


def _extract(wheel: Path, wanted: dict[str, str], dest: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            if name.endswith("/"):  # directory entries; files create their parents
                continue
            for prefix, target in wanted.items():
                if name == prefix or (prefix.endswith("/") and name.startswith(prefix)):
                    out = dest / (target + name[len(prefix) :] if prefix.endswith("/") else target)
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(archive.read(name))


def tvm_runtime_libs(toolchains_dir: Path | None = None) -> Path:
    """A directory with the aarch64 libtvm_runtime.so, libtvm_ffi.so and their C++ headers (include/).

    Downloaded once from PyPI (apache-tvm and apache-tvm-ffi aarch64 wheels, pinned versions) and
    kept under `toolchains_dir`; later calls return the cached directory without network access.
    """
    toolchains_dir = toolchains_dir or default_toolchains()
    final = toolchains_dir / f"runtime-tvm{TVM_VERSION}-ffi{TVM_FFI_VERSION}"
    if (final / "libtvm_runtime.so").is_file():
        return final
    toolchains_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(toolchains_dir / ".runtime.lock")):
        if (final / "libtvm_runtime.so").is_file():  # another build made it while we waited
            return final
        step(f"downloading the aarch64 TVM runtime (apache-tvm {TVM_VERSION}, apache-tvm-ffi {TVM_FFI_VERSION})")
        with tempfile.TemporaryDirectory(dir=toolchains_dir, prefix=".tmp-runtime-") as tmp:
            wheels, staging = Path(tmp) / "wheels", Path(tmp) / "runtime"
            command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
            command += ["--platform", "manylinux_2_28_aarch64", "--python-version", "3.11", "-d", str(wheels)]
            command += [f"apache-tvm=={TVM_VERSION}", f"apache-tvm-ffi=={TVM_FFI_VERSION}"]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                tail = " | ".join(result.stderr.strip().splitlines()[-2:])
                raise UserError(f"cannot download the aarch64 TVM wheels ({tail}); check network access to PyPI")
            for prefix, wanted in _WHEEL_FILES.items():
                found = sorted(wheels.glob(f"{prefix}[0-9]*.whl"))
                if not found:
                    raise UserError(f"pip did not download the {prefix.rstrip('-')} wheel into {wheels}")
                _extract(found[0], wanted, staging)
            for lib in ("libtvm_runtime.so", "libtvm_ffi.so"):
                if not is_aarch64_elf(staging / lib):
                    raise UserError(f"{lib} from the downloaded wheel is not an AArch64 library")
            staging.rename(final)
    return final


def build_runner(toolchains_dir: Path | None = None, source: Path = RUNNER_SOURCE) -> Path:
    """An aarch64 runner executable (default `tvm_runner`), compiled from `source` (a templates/*.cc
    that includes tvm_npy.h) once per source + toolchain.

    The runner sits next to copies of libtvm_runtime.so and libtvm_ffi.so and finds them through
    rpath $ORIGIN, as it would on a device.
    """
    toolchains_dir = toolchains_dir or default_toolchains()
    tools = ensure_cross_toolchain()
    runtime = tvm_runtime_libs(toolchains_dir)
    digest = hashlib.sha256(source.read_bytes() + b"\0" + RUNNER_HEADER.read_bytes())
    for value in (tools["gxx_version"], runtime.name):
        digest.update(b"\0" + value.encode())
    name = source.stem
    final = toolchains_dir / f"{name}-{digest.hexdigest()[:16]}"
    if (final / name).is_file():
        return final / name
    with FileLock(str(toolchains_dir / ".runner.lock")):
        if (final / name).is_file():
            return final / name
        step(f"compiling the aarch64 runner (templates/{source.name})")
        with tempfile.TemporaryDirectory(dir=toolchains_dir, prefix=".tmp-runner-") as tmp:
            staging = Path(tmp) / "runner"
            staging.mkdir()
            for lib in ("libtvm_runtime.so", "libtvm_ffi.so"):
                shutil.copy2(runtime / lib, staging / lib)
            # --no-as-needed: the runner calls nothing in libtvm_runtime directly, but loading it is
            # what registers the Relax VM that model.so's vm_load_executable needs.
            command = [tools["gxx"], "-std=c++17", "-O2", str(source), "-I", str(runtime / "include")]
            command += ["-L", str(staging), "-Wl,--no-as-needed", "-ltvm_runtime", "-ltvm_ffi", "-Wl,--as-needed"]
            command += ["-Wl,-rpath,$ORIGIN", "-o", str(staging / name)]
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                errors = [line for line in result.stderr.splitlines() if "error" in line][:3]
                raise UserError(f"compiling {source.name} failed: {' | '.join(errors) or result.stderr[-400:]}")
            staging.rename(final)
    return final / name


def run_batches_under_qemu(
    model_so: Path,
    batches: list[dict[str, np.ndarray]],
    cpu: str,
    timeout_s: int = 3600,
    toolchains_dir: Path | None = None,
    count_instructions: Path | None = None,
) -> list[list[np.ndarray]]:
    """Outputs of `model_so`'s `main` for every batch, in one qemu-aarch64 -cpu `cpu` process (the
    model is loaded once: verification runs hundreds of batches and a process start costs ~0.3 s).
    With `count_instructions`, the whole process's instructions are counted into that file."""
    toolchains_dir = toolchains_dir or default_toolchains()
    if not is_aarch64_elf(model_so):
        raise UserError(f"{model_so} is not an AArch64 ELF library; compile it for an aarch64-linux-gnu target")
    runner = build_runner(toolchains_dir)
    with tempfile.TemporaryDirectory(prefix="edgebuild-qemu-") as tmp:
        in_dir, out_dir = Path(tmp) / "in", Path(tmp) / "out"
        for call, inputs in enumerate(batches):
            (in_dir / str(call)).mkdir(parents=True)
            for index, array in enumerate(inputs.values()):
                np.save(in_dir / str(call) / f"{index}.npy", np.ascontiguousarray(array, array.dtype.newbyteorder("<")))
        out_dir.mkdir()
        run_runner(cpu, runner, model_so, in_dir, out_dir, timeout_s, None, count_instructions)
        results = []
        for call in range(len(batches)):
            directory = out_dir / str(call)
            results.append([np.load(directory / f"{i}.npy") for i in range(len(list(directory.glob("*.npy"))))])
    return results


def run_runner(
    cpu: str,
    runner: Path,
    model_so: Path,
    in_dir: Path,
    out_dir: Path,
    timeout_s: int,
    arguments: list[str] | None = None,
    count_instructions: Path | None = None,
) -> None:
    """Run `runner` under qemu-aarch64 -cpu `cpu` (the target board's core: an instruction it lacks
    fails here, as on the board) with `arguments` (default: model_so in_dir out_dir)."""
    from compiler.toolchains.arm64 import run_guest

    argv = [str(runner), *(arguments or [str(model_so), str(in_dir), str(out_dir)])]
    what = f"{model_so.name} ({runner.name})"
    env = {"LD_LIBRARY_PATH": str(runner.parent)}
    run_guest(cpu, SYSROOT, argv, what, timeout_s, env, count_instructions)


def run_under_qemu(
    model_so: Path,
    inputs: dict[str, np.ndarray],
    cpu: str,
    output_count: int | None = None,
    timeout_s: int = 600,
    toolchains_dir: Path | None = None,
) -> list[np.ndarray]:
    """Outputs of the aarch64 Relax `model_so`'s `main` on `inputs`, executed under qemu-aarch64 -cpu `cpu`.

    `inputs` are passed positionally in dict order, which must be main's parameter order (the ONNX
    graph's input order for an imported model). A tuple result comes back flattened. When
    `output_count` is given, a different number of outputs is an error.
    """
    toolchains_dir = toolchains_dir or default_toolchains()
    if not is_aarch64_elf(model_so):
        raise UserError(f"{model_so} is not an AArch64 ELF library; compile it for an aarch64-linux-gnu target")
    runner = build_runner(toolchains_dir)
    with tempfile.TemporaryDirectory(prefix="edgebuild-qemu-") as tmp:
        in_dir, out_dir = Path(tmp) / "in", Path(tmp) / "out"
        in_dir.mkdir()
        out_dir.mkdir()
        for index, array in enumerate(inputs.values()):
            # The runner reads little-endian, C-order .npy version 1.
            np.save(in_dir / f"{index}.npy", np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")))
        run_runner(cpu, runner, model_so, in_dir, out_dir, timeout_s)
        outputs = [np.load(out_dir / f"{i}.npy") for i in range(len(list(out_dir.glob("*.npy"))))]
    if output_count is not None and len(outputs) != output_count:
        raise UserError(f"{model_so.name} returned {len(outputs)} outputs under qemu-aarch64, expected {output_count}")
    return outputs
