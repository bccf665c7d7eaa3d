"""Deterministic tar writing and safe tar reading.

Writing: USTAR format, entries sorted by name, mtime = SOURCE_DATE_EPOCH (else 0), uid/gid 0,
empty uname/gname, mode 0644, regular files only; written to a temporary name and renamed.
Reading: every member is checked before any byte is used (no links, devices, directories,
absolute paths, `..`, duplicates); files are read into memory, never extracted by tarfile.
"""

from __future__ import annotations

import io
import os
import tarfile
import tempfile
from pathlib import Path, PurePosixPath


def source_date_epoch() -> int:
    """SOURCE_DATE_EPOCH (reproducible-builds.org) when set, else 0."""
    value = os.environ.get("SOURCE_DATE_EPOCH", "0")
    return int(value) if value.isdigit() else 0


def write_tar(dest: Path, files: dict[str, bytes]) -> None:
    """Write `files` (name -> bytes) to `dest` atomically and byte-for-byte reproducibly."""
    mtime = source_date_epoch()
    handle, temp = tempfile.mkstemp(prefix=f".{dest.name}-", dir=dest.parent)
    try:
        with os.fdopen(handle, "wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name in sorted(files):
                info = tarfile.TarInfo(name)
                info.size = len(files[name])
                info.mtime = mtime
                info.mode = 0o644
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.type = tarfile.REGTYPE
                tar.addfile(info, io.BytesIO(files[name]))
        os.chmod(temp, 0o644)
        os.replace(temp, dest)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def member_problem(member: tarfile.TarInfo, seen: set[str]) -> str | None:
    """Why `member` is unsafe to unpack, or None."""
    name = member.name
    path = PurePosixPath(name)
    if member.issym():
        return f"symlink member '{name}' -> '{member.linkname}'"
    if member.islnk():
        return f"hardlink member '{name}' -> '{member.linkname}'"
    if member.isdev() or member.isfifo():
        return f"device or fifo member '{name}'"
    if not member.isfile():
        return f"member '{name}' is not a regular file (type {member.type!r})"
    if path.is_absolute() or name.startswith("\\") or ":" in path.parts[0]:
        return f"absolute path member '{name}'"
    if ".." in path.parts:
        return f"path traversal member '{name}'"
    if len(path.parts) != 1:
        return f"member '{name}' is in a subdirectory (bundles are flat)"
    if name in seen:
        return f"duplicate member '{name}'"
    return None


def read_tar(path: Path) -> tuple[dict[str, bytes], list[str]]:
    """The bundle's files (name -> bytes) and, if any member is unsafe, the problems (then no files)."""
    try:
        with tarfile.open(path, mode="r:") as tar:
            members = tar.getmembers()
            problems: list[str] = []
            seen: set[str] = set()
            for member in members:
                problem = member_problem(member, seen)
                if problem:
                    problems.append(problem)
                seen.add(member.name)
            if problems:
                return {}, problems
            files = {}
            for member in members:
                extracted = tar.extractfile(member)
                assert extracted is not None  # regular files only, checked above
                files[member.name] = extracted.read()
            return files, []
    except (tarfile.TarError, OSError) as error:
        return {}, [f"not a readable tar file: {error}"]
