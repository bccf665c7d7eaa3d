"""Content digests and canonical JSON: what cache keys, build keys and bundles are made of.

Full sha256 everywhere (never a prefix): a key that collides is a build that lies.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any


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


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def tool_versions(*distributions: str) -> dict[str, str]:
    """{distribution: installed version} ("not installed" when absent): part of every cache key."""
    versions = {}
    for dist in distributions:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions


__all__ = ["canonical_json", "sha256_bytes", "sha256_file", "sha256_tree", "tool_versions"]
