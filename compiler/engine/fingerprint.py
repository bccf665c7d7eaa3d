"""Code fingerprints from what runs: a stage's key covers every module on its path.

`code_digest("compiler.backends.coreml")` is the sha256 of that module, every first-party module
it imports (at module level or inside a function, transitively; the packages' __init__ files
included) and every shipped file those modules read through `shipped("...")` or
`package_file("...")` with a literal path (templates, lock files, worker scripts). Nobody keeps a
list of files by hand, so a fix to any code a stage runs re-runs that stage; the closure is
static, so it errs on the side of re-running.

Catalogues name their entries as strings ("compiler.backends.tvm:TvmBackend") and import them
on demand: a stage's key then holds the one backend or family that runs, not all of them.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from functools import lru_cache
from pathlib import Path

from compiler.shipped import PACKAGES, builtin_root, package_file, shipped

FIRST_PARTY = ("compiler", "passes")
_RESOURCE_CALLS = {"shipped": shipped, "package_file": package_file}


def module_file(name: str, roots: Sequence[Path] = (PACKAGES,)) -> Path | None:
    """The source file of module `name` under one of `roots` (a package's __init__.py), or None."""
    relative = Path(*name.split("."))
    for root in roots:
        for candidate in (root / relative.with_suffix(".py"), root / relative / "__init__.py"):
            if candidate.is_file():
                return candidate
    return None


@lru_cache(maxsize=4096)
def _scan(path: Path, mtime_ns: int, package: str) -> tuple[tuple[str, ...], tuple[Path, ...]]:
    """Module names imported by `path` (absolute, unfiltered) and shipped files it reads."""
    del mtime_ns  # part of the cache key only: an edited file is parsed again
    tree = ast.parse(path.read_bytes(), filename=str(path))
    names: list[str] = []
    resources: list[Path] = []
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                parent = ".".join(parts[: len(parts) - node.level + 1])
                base = f"{parent}.{base}" if base else parent
            names.append(base)
            names += [f"{base}.{alias.name}" for alias in node.names if alias.name != "*"]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
            if called in _RESOURCE_CALLS and isinstance(node.args[0].value, str):
                resources.append(_RESOURCE_CALLS[called](node.args[0].value))
    return tuple(names), tuple(resources)


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node of `tree` except those under `if TYPE_CHECKING:` (imports for type hints only)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                stack.extend(child.orelse)
                continue
            stack.append(child)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(path: Path, package: str) -> tuple[str, ...]:
    """Absolute names of every module `path` imports at run time (its package given for relative imports)."""
    return _scan(path.resolve(), path.stat().st_mtime_ns, package)[0]


def _locate(name: str, extra_roots: Sequence[Path]) -> Path | None:
    """First-party modules come from edgebuild's packages; any other only from `extra_roots` (a
    workspace's own modules, e.g. a recipe's factory), never from site-packages."""
    if name.split(".")[0] in FIRST_PARTY:
        return module_file(name)
    return module_file(name, extra_roots) if extra_roots else None


def closure(modules: Iterable[str], extra_roots: Sequence[Path] = ()) -> list[Path]:
    """Every file the given modules may run or read, sorted (see the module docstring)."""
    seen: set[str] = set()
    files: set[Path] = set()
    pending = list(modules)
    while pending:
        name = pending.pop()
        if not name or name in seen:
            continue
        seen.add(name)
        path = _locate(name, extra_roots)
        if path is None:
            continue
        files.add(path)
        parts = name.split(".")
        pending += [".".join(parts[:i]) for i in range(1, len(parts))]  # the packages' __init__ files
        package = name if path.name == "__init__.py" else ".".join(parts[:-1])
        imported, resources = _scan(path, path.stat().st_mtime_ns, package)
        pending += imported
        for resource in resources:
            if resource.is_dir():
                files.update(p for p in resource.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
            else:
                files.add(resource)
    return sorted(files)


def _label(path: Path, extra_roots: Sequence[Path]) -> str:
    """A location-independent name: the same code in another clone gives the same digest."""
    for root in (PACKAGES, builtin_root(), *extra_roots):
        if path.is_relative_to(root):
            return path.relative_to(root).as_posix()
    return path.name


def code_digest(modules: Iterable[str], extra_roots: Sequence[Path] = ()) -> str:
    """sha256 over the names and contents of `closure(modules)`."""
    digest = hashlib.sha256()
    for path in closure(modules, extra_roots):
        digest.update(_label(path, extra_roots).encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"missing")
        digest.update(b"\0")
    return digest.hexdigest()


__all__ = ["FIRST_PARTY", "closure", "code_digest", "imports_of", "module_file"]
