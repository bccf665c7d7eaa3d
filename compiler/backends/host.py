"""The build host's instruction set, by the names target triples use ("x86_64", "aarch64")."""

from __future__ import annotations

import platform

_ARCH_OF_MACHINE = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}


def host_arch() -> str:
    """This machine's ISA as the first field of a target triple: a library for it runs here."""
    machine = platform.machine().lower()
    return _ARCH_OF_MACHINE.get(machine, machine)


__all__ = ["host_arch"]
