"""An emulated Linux AArch64 board on the x86 build host: the board's CPU model, its userland, a counter.

What:
- `run_guest(cpu, sysroot, argv, ...)`: runs an aarch64 program under the dynamic `qemu-aarch64`
  with `-cpu <the target's CPU>` (cortex-a72 for a Raspberry Pi 4, cortex-a76 for a Pi 5): qemu's
  default `max` CPU executes instructions (SDOT, i8mm) a Pi 4 does not have, so an artifact that
  needs them would pass verification and crash on the board. An illegal instruction is reported as
  such. The guest runs in a private mount namespace with an ARM /proc/cpuinfo for that CPU bound
  over the host's: qemu-user passes the host's x86 text through, and ONNX Runtime's cpuinfo
  parser crashes on it.
- `Userland`: an arm64 Debian bookworm root filesystem with python3.11 (`mmdebstrap
  --variant=extract`, shared) plus the aarch64 wheels of one lock (`pip install --target`, one site
  directory per lock: arm64-userland.lock for ONNX Runtime, arm64-litert.lock for LiteRT,
  arm64-device.lock for the device client), created on first use under the workspace's
  .toolchains/ and reused; `run_python` runs a script or module in it on the emulated CPU.
- `count_instructions=PATH`: loads a TCG plugin (templates/qemu_insn_count.c, built on first use
  against include/qemu/qemu-plugin.h of the Debian qemu source package matching the installed
  qemu-user) that counts executed instructions by class; a guest marks points with `mark(n)`
  (ort_aarch64_worker.py does) and `per_call()` turns two marks into the cost of one call.

Instruction counts repeat to within about 0.01% (ORT FP32 digits-cnn on the A72 model: 196,943,613,
196,945,785 and 196,945,998 in three builds; what differs is allocator and start-up paths) but are
not a time: qemu models no caches, pipelines or latencies. Compare them between artifacts on one CPU model.

Guarantees: every directory is built in a temporary directory and renamed when complete, under a
file lock; every failure is one UserError line saying what to do.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from compiler.errors import ConfigError, UserError, did_you_mean
from compiler.progress import elapsed, heartbeat, step
from compiler.shipped import package_file, shipped
from compiler.toolchains import read_pins
from compiler.toolchains.apt import ensure_programs, first_line, package_version, source_version

LOCK = package_file("compiler/toolchains/arm64-userland.lock")  # the board's ONNX Runtime (verification)
DEVICE_LOCK = package_file("compiler/toolchains/arm64-device.lock")  # the device client (edgebuild device)
PLUGIN_SOURCE = shipped("templates/qemu_insn_count.c")
DEBIAN_SUITE = "bookworm"
DEBIAN_PACKAGES = ("python3.11", "libpython3.11-stdlib", "libstdc++6", "libgomp1")
# Every manylinux tag bookworm (glibc 2.36) satisfies: wheels are tagged 2_17, 2_27, 2_28 ...
WHEEL_PLATFORMS = (*(f"manylinux_2_{minor}_aarch64" for minor in range(36, 16, -1)), "manylinux2014_aarch64")
GUEST_PYTHON = "usr/bin/python3.11"
CLASSES = ("total", "sdot_udot", "smull_smlal", "sadalp", "fmla", "scalar_fp")
INTEGER_MAC = ("sdot_udot", "smull_smlal", "sadalp")  # integer multiply(-accumulate) work of INT8 kernels
MARK_MAGIC = 0x6564676562756964  # lseek(-1, MARK_MAGIC, n): see templates/qemu_insn_count.c
SIGILL = 4


@dataclass(frozen=True)
class CpuModel:
    """One qemu CPU model and the /proc/cpuinfo a board with that core shows."""

    name: str
    part: str  # MIDR part number
    features: str  # the cpuinfo "Features" line (what the kernel's HWCAPs say)
    board: str


CPU_MODELS = {
    model.name: model
    for model in (
        CpuModel("cortex-a53", "0xd03", "fp asimd evtstrm crc32 cpuid", "Raspberry Pi 3 / Zero 2"),
        CpuModel("cortex-a72", "0xd08", "fp asimd evtstrm crc32 cpuid", "Raspberry Pi 4"),
        CpuModel(
            "cortex-a76",
            "0xd0b",
            "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
            "Raspberry Pi 5",
        ),
    )
}


def cpu_model(name: str | None, where: str) -> CpuModel:
    """The CPU model a target file names in `platform.cpu` (an emulated board needs one)."""
    if name not in CPU_MODELS:
        given = f"'{name}'" if name else "none"
        raise ConfigError(
            f"{where}: platform.cpu {given} is not a CPU model the ARM emulation knows; "
            f"{did_you_mean(str(name or ''), CPU_MODELS)}"
        )
    return CPU_MODELS[name]


def qemu_tools() -> dict[str, str]:
    """The dynamic qemu-aarch64 (the -static one cannot load plugins) and unshare, installed if missing;
    with `qemu_version` (its first --version line) for keys and reports."""
    tools = ensure_programs({"qemu": "qemu-aarch64", "unshare": "unshare"}, ("qemu-user",), "qemu user emulation")
    return {**tools, "qemu_version": first_line([tools["qemu"], "--version"])}


def default_home() -> Path:
    from compiler import workspace

    return workspace.current().toolchains


def _cpuinfo(model: CpuModel, home: Path) -> Path:
    """An ARM /proc/cpuinfo text for `model` (4 cores), written once under `home`."""
    core = (
        "processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
        "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 1\n\n"
    )
    text = "".join(core.format(n=n, features=model.features, part=model.part) for n in range(4))
    path = home / "cpuinfo" / f"{model.name}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_name(f".{path.name}.{os.getpid()}")
        staging.write_text(text)
        staging.replace(path)
    return path


def guest_command(
    cpu: str,
    sysroot: Path,
    argv: list[str],
    env: dict[str, str] | None = None,
    count_instructions: Path | None = None,
    home: Path | None = None,
) -> list[str]:
    """The host command that runs the aarch64 program `argv` under qemu-aarch64 -cpu `cpu`."""
    home = home or default_home()
    model = CPU_MODELS[cpu]
    tools = qemu_tools()
    emulator = [tools["qemu"], "-cpu", model.name, "-L", str(sysroot)]
    if count_instructions is not None:
        emulator += ["-plugin", f"{counting_plugin(home)},out={count_instructions}"]
    for key, value in sorted((env or {}).items()):
        emulator += ["-E", f"{key}={value}"]
    # A private mount namespace (unprivileged: with a user namespace) so the bind mount of the ARM
    # cpuinfo is seen by the guest alone.
    namespace = [tools["unshare"], "-m"] if os.geteuid() == 0 else [tools["unshare"], "-r", "-m"]
    bind = 'mount --bind "$0" /proc/cpuinfo && exec "$@"'
    return [*namespace, "sh", "-c", bind, str(_cpuinfo(model, home)), *emulator, *argv]


def guest_failure(cpu: str, what: str, returncode: int, stderr: str) -> UserError:
    """The one-line error for a guest that exited with `returncode`: an illegal instruction says the
    artifact needs a CPU newer than `cpu`."""
    model = CPU_MODELS[cpu]
    if returncode in (-SIGILL, 128 + SIGILL) or "signal 4 (Illegal instruction)" in stderr:
        return UserError(
            f"{what} executed an instruction the {model.name} ({model.board}) does not have (illegal instruction "
            f"under qemu-aarch64 -cpu {model.name}): it was compiled for a newer CPU; build it for platform.cpu "
            f"'{model.name}' (no features beyond '{model.features}')"
        )
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    tail = " | ".join(lines[-3:]) or "no output"
    return UserError(f"{what} failed under qemu-aarch64 -cpu {model.name} (exit {returncode}): {tail}")


def run_guest(
    cpu: str,
    sysroot: Path,
    argv: list[str],
    what: str,
    timeout_s: int,
    env: dict[str, str] | None = None,
    count_instructions: Path | None = None,
    home: Path | None = None,
    status: Callable[[], str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the aarch64 program `argv` under qemu-aarch64 -cpu `cpu`, libraries from `sysroot`.

    `what` names the program in messages. With `count_instructions`, the counting plugin writes its
    JSON there when the program exits. `status` adds to the periodic "still running" line (e.g.
    BatchProgress). Returns the finished process (exit 0); anything else is a UserError (see
    `guest_failure`).
    """
    command = guest_command(cpu, sysroot, argv, env, count_instructions, home)
    try:
        with heartbeat(f"{what} under qemu-aarch64 -cpu {cpu}", status):
            result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as error:
        raise UserError(f"{what} did not finish within {timeout_s} s under qemu-aarch64 -cpu {cpu}") from error
    if result.returncode != 0:
        raise guest_failure(cpu, what, result.returncode, result.stderr or result.stdout)
    return result


# -- the counting plugin ---------------------------------------------------------------------------


def _deb_src_list(directory: Path) -> Path:
    """An apt sources list with the deb-src lines of the host's Debian release (private to one fetch)."""
    codename = DEBIAN_SUITE
    release = Path("/etc/os-release")
    if release.is_file():
        for line in release.read_text().splitlines():
            if line.startswith("VERSION_CODENAME="):
                codename = line.split("=", 1)[1].strip().strip('"') or codename
    keyring = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    signed = f"[signed-by={keyring}] " if keyring.is_file() else ""
    lines = [
        f"deb-src {signed}http://deb.debian.org/debian {codename} main",
        f"deb-src {signed}http://deb.debian.org/debian {codename}-updates main",
        f"deb-src {signed}http://deb.debian.org/debian-security {codename}-security main",
    ]
    path = directory / "sources.list"
    path.write_text("\n".join(lines) + "\n")
    return path


def _plugin_header(version: str, directory: Path) -> Path:
    """include/qemu/qemu-plugin.h of Debian's qemu source package `version`, extracted into `directory`."""
    directory.mkdir(parents=True)
    sources = _deb_src_list(directory)
    (directory / "lists" / "partial").mkdir(parents=True)
    (directory / "cache" / "archives" / "partial").mkdir(parents=True)
    apt = ["apt-get", "-qq", "-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=/dev/null"]
    apt += ["-o", f"Dir::State::Lists={directory / 'lists'}", "-o", f"Dir::Cache={directory / 'cache'}"]
    for args in (["update"], ["source", "--download-only", f"qemu={version}"]):
        with heartbeat(f"apt-get {args[0]} (Debian qemu {version} source, for its plugin header)"):
            result = subprocess.run([*apt, *args], cwd=directory, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = " | ".join(line for line in result.stderr.strip().splitlines()[-2:] if line)
            raise UserError(
                f"cannot fetch Debian's qemu {version} source package ({tail}); check access to deb.debian.org"
            )
    originals = sorted(directory.glob("qemu_*.orig.tar.*"))
    if not originals:
        raise UserError(f"apt-get source qemu={version} left no qemu_*.orig.tar.* in {directory}")
    patches = sorted(directory.glob("qemu_*.debian.tar.*"))
    if patches:
        with tarfile.open(patches[0]) as archive:
            for member in archive.getmembers():
                handle = archive.extractfile(member) if member.name.startswith("debian/patches/") else None
                if handle is not None and b"include/qemu/qemu-plugin.h" in handle.read():
                    raise UserError(
                        f"Debian's qemu {version} patches qemu-plugin.h ({member.name}); the counting plugin "
                        "needs the patched header: report this with the qemu-user version"
                    )
    with tarfile.open(originals[0]) as archive:
        member = next((m for m in archive.getmembers() if m.name.endswith("/include/qemu/qemu-plugin.h")), None)
        handle = archive.extractfile(member) if member is not None else None
        if handle is None:
            raise UserError(f"{originals[0].name} has no include/qemu/qemu-plugin.h")
        header = directory / "include" / "qemu-plugin.h"
        header.parent.mkdir()
        header.write_bytes(handle.read())
    return header


def counting_plugin(home: Path | None = None) -> Path:
    """The instruction-counting plugin (libinsn_count.so) for the installed qemu-user, built once."""
    home = home or default_home()
    qemu_tools()
    version = source_version("qemu-user")
    gcc = ensure_programs({"gcc": "gcc"}, ("gcc",), "a C compiler")["gcc"]
    digest = hashlib.sha256(PLUGIN_SOURCE.read_bytes())
    for value in (version, first_line([gcc, "--version"])):
        digest.update(b"\0" + value.encode())
    final = home / f"qemu-plugin-{digest.hexdigest()[:12]}"
    plugin = final / "libinsn_count.so"
    if plugin.is_file():
        return plugin
    home.mkdir(parents=True, exist_ok=True)
    with FileLock(str(home / ".qemu-plugin.lock")):
        if plugin.is_file():
            return plugin
        step(f"building the qemu instruction-counting plugin (templates/{PLUGIN_SOURCE.name}, qemu {version})")
        with tempfile.TemporaryDirectory(dir=home, prefix=".tmp-qemu-plugin-") as tmp:
            header = _plugin_header(version, Path(tmp) / "source")
            staging = Path(tmp) / "plugin"
            staging.mkdir()
            command = [gcc, "-O2", "-shared", "-fPIC", "-Wall", "-I", str(header.parent), str(PLUGIN_SOURCE)]
            result = subprocess.run([*command, "-o", str(staging / plugin.name)], capture_output=True, text=True)
            if result.returncode != 0:
                errors = [line for line in result.stderr.splitlines() if "error" in line][:3]
                raise UserError(f"compiling {PLUGIN_SOURCE.name} failed: {' | '.join(errors) or result.stderr[-300:]}")
            shutil.copy2(header, staging / header.name)  # what it was built against, for the record
            staging.rename(final)
    return plugin


def mark_counts(path: Path) -> dict[int, dict[str, int]]:
    """The plugin's counters at each mark the guest made: {label: {class: count}}."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"the instruction counter wrote no readable {path.name} ({error})") from error
    classes = data["classes"]
    return {mark["label"]: dict(zip(classes, mark["counts"], strict=True)) for mark in data["marks"]}


def exit_counts(path: Path) -> dict[str, int]:
    """The plugin's counters when the program exited: {class: count} over the whole process."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise UserError(f"the instruction counter wrote no readable {path.name} ({error})") from error
    return dict(zip(data["classes"], data["exit"], strict=True))


def per_call(path: Path, calls: int, start: int = 1, end: int = 2) -> dict[str, int]:
    """Instructions of one call, by class: (counts at mark `end` - at mark `start`) / `calls`."""
    marks = mark_counts(path)
    if start not in marks or end not in marks:
        raise UserError(f"the counted program made marks {sorted(marks)}, expected {start} and {end}")
    return {name: round((marks[end][name] - marks[start][name]) / calls) for name in CLASSES}


# -- the userland ----------------------------------------------------------------------------------


ROOTFS_SPEC = {"suite": DEBIAN_SUITE, "debs": DEBIAN_PACKAGES}


@dataclass(frozen=True)
class Userland:
    """An arm64 Debian userland with python3.11 and one lock's aarch64 wheels.

    The Debian root filesystem is shared by every lock (it depends on the suite and packages only);
    each lock gets its own site directory of wheels, so the board's ONNX Runtime (verification), its
    LiteRT and its device client are separate, separately keyed installs on the same root.
    """

    home_dir: Path | None = None  # default: the current workspace's .toolchains/
    lock: Path = LOCK
    python_path: tuple[Path, ...] = ()  # host directories the guest imports from before the wheels

    @property
    def home(self) -> Path:
        return self.home_dir or default_home()

    @property
    def what(self) -> str:
        return f"the arm64 userland ({self.lock.name})"

    def versions(self) -> dict[str, str]:
        """{package: version} of the guest's wheels: what keys and manifests record."""
        return dict(line.split("==", 1) for line in read_pins(self.lock, self.what))

    def digest(self) -> str:
        spec = {**ROOTFS_SPEC, "platforms": WHEEL_PLATFORMS}
        return hashlib.sha256(self.lock.read_bytes() + json.dumps(spec, sort_keys=True).encode()).hexdigest()

    @property
    def rootfs(self) -> Path:
        digest = hashlib.sha256(json.dumps(ROOTFS_SPEC, sort_keys=True).encode()).hexdigest()
        return self.home / f"arm64-rootfs-{digest[:12]}"

    @property
    def site(self) -> Path:
        return self.home / f"arm64-site-{self.lock.stem.removeprefix('arm64-')}-{self.digest()[:12]}"

    def ensure(self) -> Path:
        """The site directory of the lock's wheels, with the shared root filesystem made first
        (about a minute each, on first use only)."""
        self._ensure_rootfs()
        final = self.site
        if final.is_dir():
            return final
        pins = read_pins(self.lock, self.what)
        with FileLock(str(self.home / ".arm64-userland.lock")):
            if final.is_dir():
                return final
            step(f"installing the aarch64 wheels of {self.lock.name} into {final} (first use only)")
            with tempfile.TemporaryDirectory(dir=self.home, prefix=".tmp-arm64-site-") as tmp:
                staging = Path(tmp) / "site"
                install = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--only-binary=:all:"]
                for platform in WHEEL_PLATFORMS:
                    install += ["--platform", platform]
                install += ["--python-version", "3.11", "--implementation", "cp", "--target", str(staging)]
                self._check([*install, *pins], f"install the aarch64 wheels of {self.lock.name}")
                staging.rename(final)
        return final

    def _ensure_rootfs(self) -> Path:
        final = self.rootfs
        if (final / GUEST_PYTHON).is_file():
            return final
        tools = ensure_programs({"mmdebstrap": "mmdebstrap"}, ("mmdebstrap",), "mmdebstrap (arm64 userland)")
        self.home.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.home / ".arm64-userland.lock")):
            if (final / GUEST_PYTHON).is_file():
                return final
            step(f"creating the arm64 Debian {DEBIAN_SUITE} root filesystem in {final} (first use only)")
            with tempfile.TemporaryDirectory(dir=self.home, prefix=".tmp-arm64-rootfs-") as tmp:
                staging = Path(tmp) / "rootfs"
                command = [tools["mmdebstrap"], "--quiet", "--arch=arm64", "--variant=extract"]
                command += [f"--include={','.join(DEBIAN_PACKAGES)}", DEBIAN_SUITE, str(staging)]
                self._check(command, f"mmdebstrap the arm64 Debian {DEBIAN_SUITE} userland")
                if not (staging / GUEST_PYTHON).is_file():
                    raise UserError(f"mmdebstrap left no {GUEST_PYTHON} in {staging}")
                staging.rename(final)
        return final

    @staticmethod
    def _check(command: list[str], what: str) -> None:
        env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        with heartbeat(what):
            result = subprocess.run(command, capture_output=True, text=True, timeout=1800, env=env, check=False)
        if result.returncode != 0:
            lines = [line for line in (result.stderr or result.stdout).strip().splitlines() if "WARNING" not in line]
            tail = " | ".join(lines[-2:]) or f"exit {result.returncode}"
            raise UserError(f"could not {what} ({tail}); check access to deb.debian.org and PyPI, then rerun")

    def run_python(
        self,
        cpu: str,
        script: Path | str,
        arguments: list[str],
        what: str,
        timeout_s: int,
        count_instructions: Path | None = None,
        status: Callable[[], str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run `script` (a file, or a module name as for `python -m`) with the userland's python3.11
        on the emulated `cpu` (host paths are visible)."""
        argv = self._argv(script, arguments)
        return run_guest(cpu, self.rootfs, argv, what, timeout_s, self._env(), count_instructions, self.home, status)

    def python_command(self, cpu: str, script: Path | str, arguments: list[str]) -> list[str]:
        """The host command running `script` in the userland on `cpu` (for a long-lived guest process)."""
        return guest_command(cpu, self.rootfs, self._argv(script, arguments), self._env(), None, self.home)

    def _argv(self, script: Path | str, arguments: list[str]) -> list[str]:
        self.ensure()
        program = [str(script)] if isinstance(script, Path) else ["-m", script]
        return [str(self.rootfs / GUEST_PYTHON), *program, *arguments]

    def _env(self) -> dict[str, str]:
        return {
            "PYTHONPATH": os.pathsep.join(str(path) for path in (*self.python_path, self.site)),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PYTHONHASHSEED": "0",
            "PYTHONUNBUFFERED": "1",
            "ORT_DISABLE_TELEMETRY": "1",
            "OMP_NUM_THREADS": "1",
        }


class BatchProgress:
    """The status of a guest working through `total` batches, for the periodic progress line: the
    guest writes how many it has done to `path` (a decimal number), this turns that into
    "3/16 batches, 41 s each, about 9 min left" (an estimate from the batches done so far)."""

    def __init__(self, path: Path, total: int) -> None:
        self.path, self.total, self.started = path, total, time.monotonic()

    def __call__(self) -> str:
        try:
            done = int(self.path.read_text().strip() or 0)
        except (OSError, ValueError):
            done = 0
        if done == 0:
            return f"0/{self.total} batches (the guest is starting: python and the runtime load under emulation)"
        each = (time.monotonic() - self.started) / done
        return f"{done}/{self.total} batches, {each:.0f} s each, about {elapsed(each * (self.total - done))} left"


def emulation_versions(cpu: str) -> dict[str, str]:
    """What an emulated verification depends on, for cache keys and reports."""
    return {"qemu-user": package_version("qemu-user"), "cpu": cpu}


__all__ = [
    "CLASSES",
    "CPU_MODELS",
    "BatchProgress",
    "INTEGER_MAC",
    "MARK_MAGIC",
    "DEVICE_LOCK",
    "CpuModel",
    "Userland",
    "counting_plugin",
    "cpu_model",
    "emulation_versions",
    "exit_counts",
    "guest_command",
    "guest_failure",
    "mark_counts",
    "per_call",
    "qemu_tools",
    "run_guest",
]
