"""What every backend for a board of a foreign ISA shares: the board's CPU model from the target
file, its userland's wheels in the stage key, and counted (not timed) cost."""

from __future__ import annotations

from typing import Any, ClassVar

from compiler.backends.base import CompileRequest
from compiler.toolchains.arm64 import Userland, cpu_model


class EmulatedBoard:
    """A mixin before a runtime's Backend: `class OrtAarch64Backend(EmulatedBoard, OrtBackend)`.
    The subclass says which userland (lock) its board runs (`userland()`)."""

    counts_instructions: ClassVar[bool] = True
    untimed_summary: ClassVar[str] = "verified under emulation of the board's CPU; cost counted in instructions"
    bench_note: ClassVar[str] = "instructions per inference under qemu with the board's CPU model, not a time"
    target: Any  # the Backend's TargetSpec

    def userland(self) -> Userland:
        return Userland()

    @property
    def cpu(self) -> str:
        return cpu_model(self.target.platform.get("cpu"), str(self.target.path)).name

    def check_target(self) -> None:
        cpu_model(self.target.platform.get("cpu"), str(self.target.path))

    def key_config(self, request: CompileRequest) -> dict[str, Any]:
        # The cpu too: the bytes are the same for every board, but the stage's record says which CPU
        # model and which board wheels verified it (an A76 build must not reuse an A72 build's entry).
        return {
            **super().key_config(request),  # type: ignore[misc]
            "arch": "aarch64",
            "cpu": self.cpu,
            "board_wheels": self.userland().versions(),
        }


__all__ = ["EmulatedBoard"]
