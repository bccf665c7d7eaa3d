"""Content-addressed stage cache: artifacts/cache/<stage>/<key>/.

A key is the full sha256 of everything that can change a stage's output: the digests of its input
artifacts, its resolved config, a fingerprint of its own code and the versions of the tools it
calls (see `stage_key`). An entry is a directory of files plus `meta.json`; it is written into a
temporary directory and renamed into place, so a reader never sees half an entry. A per-key lock
makes two concurrent builds of the same stage wait for each other and then share the result.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from compiler.config import ROOT

DEFAULT_ROOT = ROOT / "artifacts" / "cache"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_tree(paths: Iterable[Path]) -> str:
    """Digest of several files, or of every file under directories, by relative name and content."""
    digest = hashlib.sha256()
    for path in sorted(paths):
        if not path.exists():  # a missing input is reported by the stage that needs it
            digest.update(f"missing:{path}".encode())
            continue
        files = (
            sorted(
                p
                for p in path.rglob("*")
                if p.is_file() and "__pycache__" not in p.parts and not p.name.startswith(".")
            )
            if path.is_dir()
            else [path]
        )
        for file in files:
            name = file.relative_to(path).as_posix() if path.is_dir() else file.name
            digest.update(name.encode() + b"\0" + sha256_file(file).encode() + b"\0")
    return digest.hexdigest()


def tool_versions(*distributions: str) -> dict[str, str]:
    versions = {}
    for dist in distributions:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def stage_key(stage: str, *, inputs: dict[str, str], config: Any, code: str, tools: dict[str, str]) -> str:
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

    def __init__(self, root: Path = DEFAULT_ROOT, enabled: bool = True) -> None:
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
