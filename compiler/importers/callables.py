"""`module:function` names in recipes, resolved from the recipe's own workspace.

A recipe's torch factory and its data functions (`torch = "models.digits_cnn:build"`) are looked
up under the recipe's root (the directory holding its models/), where a team keeps its own code,
then under the current workspace's root and the built-ins' (so a copy of a built-in recipe finds
the built-in factory), and are loaded from that file even when another root has a module of the
same name; failing all of those, an installed module of that name is used. While a workspace
module loads, its root is first on sys.path, so it can import its siblings absolutely.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from compiler.engine.fingerprint import module_file
from compiler.errors import ConfigError


def search_roots(root: Path | None) -> list[Path]:
    """Where a recipe's modules are looked up: its own root, the workspace's, the built-ins'."""
    from compiler import workspace
    from compiler.shipped import builtin_root

    current = workspace.optional()
    roots = [r for r in (root, current.root if current else None, builtin_root()) if r is not None]
    return list(dict.fromkeys(r.resolve() for r in roots))


def _find(module_name: str, root: Path | None) -> tuple[Path, Path] | None:
    for candidate in search_roots(root):
        found = module_file(module_name, [candidate])
        if found is not None:
            return candidate, found
    return None


def module_source(module_name: str, root: Path | None) -> Path | None:
    """The file `module_name` is loaded from: a workspace's (see the module docstring), else the installed one."""
    found = _find(module_name, root)
    if found is not None:
        return found[1]
    try:
        spec = importlib.util.find_spec(module_name)
    except (ImportError, ValueError):
        return None
    return Path(spec.origin) if spec is not None and spec.origin else None


def import_module(module_name: str, root: Path | None) -> ModuleType:
    """`module_name` from the workspace at `root` if it has it, else the installed module."""
    located = _find(module_name, root)
    if located is None:
        return importlib.import_module(module_name)
    root, found = located
    tag = hashlib.sha256(str(found.resolve()).encode()).hexdigest()[:16]
    unique = f"_edgebuild_workspace_{tag}_{module_name.replace('.', '_')}"
    if unique in sys.modules:
        return sys.modules[unique]
    spec = importlib.util.spec_from_file_location(unique, found)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module  # dataclasses and pickling look a class's module up by name
    sys.path.insert(0, str(root))
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[unique]
        raise
    finally:
        sys.path.remove(str(root))
    return module


def load_callable(spec: str, where: str, root: Path | None = None) -> Any:
    """Resolve 'package.module:function' to the function, with an actionable error."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{where}: {spec!r} must look like 'package.module:function'")
    try:
        module = import_module(module_name, root)
    except ImportError as error:
        raise ConfigError(f"{where}: cannot import module '{module_name}' ({error})") from error
    if not hasattr(module, attribute):
        raise ConfigError(f"{where}: module '{module_name}' has no '{attribute}'")
    return getattr(module, attribute)


__all__ = ["import_module", "load_callable", "module_source", "search_roots"]
