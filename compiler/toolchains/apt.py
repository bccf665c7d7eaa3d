"""Debian packages a backend needs on the build host (cross compilers, qemu, mmdebstrap), installed on demand.

What: `ensure_programs({"qemu": "qemu-aarch64"}, ("qemu-user",))` returns the programs' paths;
when one is missing and edgebuild runs as root on a Debian-like host it runs apt-get (waiting for
another build's dpkg lock, printing a heartbeat), otherwise it fails with the command to run.

Guarantees: every failure is one UserError line with the apt-get command to run by hand.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from compiler.errors import UserError
from compiler.progress import heartbeat, step


def _found(programs: Mapping[str, str], paths: Sequence[Path]) -> dict[str, str | None]:
    found = {key: shutil.which(name) for key, name in programs.items()}
    return found if all(path.exists() for path in paths) else {**found, "": None}


def ensure_programs(
    programs: Mapping[str, str], packages: Sequence[str], what: str, paths: Sequence[Path] = ()
) -> dict[str, str]:
    """{key: path} of every program in `programs` ({key: executable name}), installing `packages`
    with apt-get when one of them (or one of `paths`) is missing."""
    found = _found(programs, paths)
    if all(found.values()):
        return {key: str(path) for key, path in found.items()}
    command = f"apt-get install -y {' '.join(packages)}"
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        missing = ", ".join(programs.get(k, "") or str(p) for k, p in found.items() if not p) or "files"
        raise UserError(f"{what} missing ({missing}): run `sudo {command}` (Debian/Ubuntu)")
    step(f"installing {what}: {command}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    lock = ["-o", "DPkg::Lock::Timeout=600"]  # another build may hold the dpkg lock: wait for it
    for args in (["update", "-qq"], ["install", "-y", "-qq", "--no-install-recommends", *packages]):
        with heartbeat(f"apt-get {args[0]}"):
            result = subprocess.run(["apt-get", *lock, *args], env=env, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = " | ".join(result.stderr.strip().splitlines()[-3:])
            raise UserError(f"`apt-get {' '.join(args)}` failed ({tail}); run `{command}` by hand")
    found = _found(programs, paths)
    if not all(found.values()):
        raise UserError(f"{what} still missing after apt-get: run `{command}`")
    return {key: str(path) for key, path in found.items()}


def first_line(command: list[str]) -> str:
    """The first line `command` prints (a tool's `--version`), or "unknown"."""
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return (result.stdout or result.stderr).strip().splitlines()[0] if result.returncode == 0 else "unknown"


def package_version(package: str) -> str:
    """The installed Debian package's version (`dpkg-query`), "" when it is not installed."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f", "${Version}", package], capture_output=True, text=True, check=False
    )
    return result.stdout.strip() if result.returncode == 0 else ""


def source_version(package: str) -> str:
    """The version of the source package an installed binary package was built from (a binNMU's
    "+b3" suffix dropped): what `apt-get source` must fetch to match it."""
    result = subprocess.run(
        ["dpkg-query", "-W", "-f", "${source:Version}", package], capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or not result.stdout.strip():
        raise UserError(f"Debian package {package} is not installed: run `apt-get install -y {package}`")
    return result.stdout.strip()


__all__ = ["ensure_programs", "first_line", "package_version", "source_version"]
