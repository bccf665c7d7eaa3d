"""Workspaces: where a team's own recipes, targets, release file and build outputs live.

A workspace is a directory with an `edgebuild.toml` marker (made by `edgebuild init`); edgebuild
finds it from the working directory upward, as git finds a repository. In it:

    edgebuild.toml    the marker ([workspace] name = "...")
    models/           the workspace's recipes (<name>.toml), their data and factory modules
    targets/          the workspace's own targets (<name>.toml)
    release.toml      the release matrix (`edgebuild release`)
    artifacts/        builds (<model>/<target>/) and the stage cache (artifacts/cache/)
    .toolchains/      pinned converter environments, created on first use

A model or target name is looked up in the workspace first, then among the built-ins that ship
with edgebuild (compiler/shipped.py). The edgebuild checkout is itself a workspace whose models/
and targets/ are the built-ins.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from compiler.errors import ConfigError, did_you_mean
from compiler.shipped import shipped
from compiler.tomlfile import TomlTable, read_toml

MARKER = "edgebuild.toml"
KINDS = ("models", "targets")
_active: Workspace | None = None


@dataclass(frozen=True)
class Workspace:
    root: Path

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def cache(self) -> Path:
        return self.artifacts / "cache"

    @property
    def toolchains(self) -> Path:
        return self.root / ".toolchains"

    @property
    def release_file(self) -> Path:
        return self.root / "release.toml"

    def git_commit(self) -> str:
        """The commit checked out in the workspace's repository, or "unknown" outside one."""
        try:
            done = subprocess.run(
                ["git", "-C", str(self.root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10
            )
        except (OSError, subprocess.TimeoutExpired):
            return "unknown"
        return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"

    def check_marker(self) -> None:
        """The marker may be empty or hold [workspace] name = "..."; anything else is refused."""
        path = self.root / MARKER
        _check_marker(path, path.stat().st_mtime_ns)


@lru_cache(maxsize=64)
def _check_marker(path: Path, mtime_ns: int) -> None:
    """Validate a marker file once per content version (names resolve through it many times)."""
    del mtime_ns  # part of the cache key: an edited marker is read again
    top = TomlTable(read_toml(path), path)
    top.reject_unknown(("workspace",))
    top.table("workspace").reject_unknown(("name",))
    top.table("workspace").get("name", str, default="")


def find(start: Path | None = None) -> Workspace | None:
    """The nearest workspace at or above `start` (default: the working directory)."""
    here = (start or Path.cwd()).resolve()
    for directory in (here, *here.parents):
        if (directory / MARKER).is_file():
            return Workspace(directory)
    return None


def use(root: Path) -> Workspace:
    """Make `root` (which must hold edgebuild.toml) the workspace of this process."""
    global _active
    root = root.resolve()
    if not (root / MARKER).is_file():
        raise ConfigError(f"{root} is not an edgebuild workspace (no {MARKER}); run `edgebuild init {root}`")
    _active = Workspace(root)
    _active.check_marker()
    return _active


def current() -> Workspace:
    """The workspace this process works in: set by `use`, else found from the working directory."""
    if _active is not None:
        return _active
    found = find()
    if found is None:
        raise ConfigError(
            f"no edgebuild workspace in {Path.cwd()} or any directory above it (no {MARKER}); "
            "run `edgebuild init` to make one here, or pass -C DIR"
        )
    found.check_marker()
    return found


def optional() -> Workspace | None:
    """The current workspace, or None outside any (built-ins still resolve)."""
    if _active is not None:
        return _active
    found = find()
    if found is not None:
        found.check_marker()
    return found


def search_dirs(kind: str) -> list[Path]:
    """Where names of `kind` ("models" or "targets") are looked up, the workspace's first."""
    dirs = []
    workspace = optional()
    if workspace is not None:
        dirs.append(workspace.root / kind)
    builtin = shipped(kind)
    if all(builtin.resolve() != d.resolve() for d in dirs):
        dirs.append(builtin)
    return dirs


def names(kind: str) -> list[str]:
    """Every name of `kind` available here (workspace and built-ins), sorted."""
    return sorted({path.stem for directory in search_dirs(kind) for path in directory.glob("*.toml")})


def resolve(kind: str, name_or_path: str, what: str) -> Path:
    """The TOML file for a model or target name (workspace first, then built-in), or an explicit path."""
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml":
        if not candidate.is_file():
            raise ConfigError(f"{what} file {candidate} does not exist")
        return candidate.resolve()
    for directory in search_dirs(kind):
        path = directory / f"{name_or_path}.toml"
        if path.is_file():
            return path.resolve()
    raise ConfigError(f"unknown {what} '{name_or_path}'; {did_you_mean(name_or_path, names(kind))}")


def init(directory: Path) -> Workspace:
    """Make `directory` a workspace: the marker, models/, targets/ and a .gitignore for outputs."""
    directory = directory.resolve()
    marker = directory / MARKER
    if marker.exists():
        raise ConfigError(f"{marker} exists: {directory} is already an edgebuild workspace")
    directory.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        (directory / kind).mkdir(exist_ok=True)
    ignore = directory / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# edgebuild outputs\nartifacts/\n.toolchains/\n")
    partial = directory / f".{MARKER}.partial"
    partial.write_text(
        "# An edgebuild workspace: models/ and targets/ here are found before the built-in ones;\n"
        "# builds and the stage cache go to artifacts/.\n"
        f"[workspace]\nname = {json.dumps(directory.name)}\n"
    )
    partial.replace(marker)  # the marker appears last, complete
    return Workspace(directory)


__all__ = ["MARKER", "Workspace", "current", "find", "init", "names", "optional", "resolve", "search_dirs", "use"]
