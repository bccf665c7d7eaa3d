"""Content-addressed stage cache: <workspace>/artifacts/cache/<stage>/<key>/.

A key is the full sha256 of everything that can change a stage's output: the digests of its input
artifacts, its resolved config, a fingerprint of its own code and the versions of the tools it
calls (see `stage_key`). An entry is a directory of files plus `meta.json`; it is written into a
temporary directory and renamed into place, so a reader never sees half an entry. A per-key lock
makes two concurrent builds of the same stage wait for each other and then share the result.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from compiler.digests import canonical_json, sha256_bytes, sha256_file, sha256_tree, tool_versions


def stage_key(stage: str, *, inputs: dict[str, Any], config: Any, code: str, tools: dict[str, str]) -> str:
    """The full sha256 cache key of one stage run."""
    return sha256_bytes(
        canonical_json({"stage": stage, "inputs": inputs, "config": config, "code": code, "tools": tools}).encode()
    )


@dataclass(frozen=True)
class Entry:
    path: Path
    meta: dict[str, Any]
    hit: bool


class Cache:
    """Stage results by key. With `enabled=False` nothing is read or kept (--no-cache)."""

    def __init__(self, root: Path | None = None, enabled: bool = True) -> None:
        if root is None:
            from compiler import workspace

            root = workspace.current().cache
        self.root = root
        self.enabled = enabled
        self._scratch: Path | None = None

    def get_or_build(self, stage: str, key: str, build: Callable[[Path], dict[str, Any]]) -> Entry:
        """Return the entry for `key`, calling `build(directory) -> meta` only on a miss."""
        if not self.enabled:
            directory = Path(tempfile.mkdtemp(prefix=f"{stage}-", dir=self.scratch()))
            return Entry(directory, self._finish(directory, build(directory)), hit=False)
        final = self.root / stage / key
        lock_dir = self.root / "locks"
        lock_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock_dir / f"{key}.lock")):
            if (final / "meta.json").is_file():
                return Entry(final, json.loads((final / "meta.json").read_text()), hit=True)
            final.parent.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=f".{key[:16]}-", dir=final.parent))
            try:
                meta = self._finish(staging, build(staging))
                if final.exists():  # an entry without meta.json is debris from a killed process
                    shutil.rmtree(final)
                os.rename(staging, final)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        return Entry(final, meta, hit=False)

    def lookup(self, stage: str, key: str) -> Entry | None:
        final = self.root / stage / key
        if self.enabled and (final / "meta.json").is_file():
            return Entry(final, json.loads((final / "meta.json").read_text()), hit=True)
        return None

    @staticmethod
    def _finish(directory: Path, meta: dict[str, Any]) -> dict[str, Any]:
        (directory / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str))
        return meta

    def scratch(self) -> Path:
        """A private temporary directory for this process, removed by `close()`."""
        if self._scratch is None:
            self.root.mkdir(parents=True, exist_ok=True)
            self._scratch = Path(tempfile.mkdtemp(prefix="scratch-", dir=self.root))
        return self._scratch

    def close(self) -> None:
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None

    def info(self) -> dict[str, dict[str, int]]:
        """Entries and bytes per stage."""
        stages: dict[str, dict[str, int]] = {}
        if not self.root.is_dir():
            return stages
        for stage_dir in sorted(p for p in self.root.iterdir() if p.is_dir() and p.name != "locks"):
            if stage_dir.name.startswith("scratch-"):
                continue
            entries = [p for p in stage_dir.iterdir() if (p / "meta.json").is_file()]
            size = sum(f.stat().st_size for e in entries for f in e.rglob("*") if f.is_file())
            stages[stage_dir.name] = {"entries": len(entries), "bytes": size}
        return stages

    def clear(self) -> int:
        """Remove every entry; returns the bytes freed."""
        freed = sum(s["bytes"] for s in self.info().values())
        if self.root.is_dir():
            with FileLock(str(self.root / "clear.lock")):
                for child in self.root.iterdir():
                    if child.name != "clear.lock":
                        shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
        return freed


__all__ = [
    "Cache",
    "Entry",
    "canonical_json",
    "sha256_bytes",
    "sha256_file",
    "sha256_tree",
    "stage_key",
    "tool_versions",
]
