"""One entry of a target's pass list, as written: kept free of heavy imports (targets load fast)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PassSpec:
    """One entry of a target's pass list: the pass name and its options as written."""

    name: str
    options: dict[str, Any]


__all__ = ["PassSpec"]
