"""The package's structure, checked: no import cycles, no family or runtime dispatch outside the
families and backends, every package listed for `pip install .`.

The import graph is static (every `import` and `from ... import`, at module level or inside a
function, but not under `if TYPE_CHECKING:`); importing `a.b.c` also imports the packages `a` and
`a.b`, so those count as edges too.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

from compiler.backends.catalogue import RUNTIMES
from compiler.engine.fingerprint import imports_of
from compiler.families.catalogue import FAMILY_NAMES
from compiler.shipped import PACKAGES

ROOTS = ("compiler", "passes")
# Where a model family or runtime may be named: their own folders (and the benches, which compare a
# family's builds with that family's peers: faster-whisper for Whisper, LiteRT's own timing).
SEAM_OWNERS = ("compiler/families/", "compiler/backends/", "compiler/bench/")
# The device client's health check runs a bundle's ONNX Runtime artifact, chosen by the manifest's
# runtime field: the device side never imports the build, so it cannot ask a backend.
DEVICE_SIDE = ("compiler/ota/health.py",)
ARTIFACT_SUFFIXES = (".onnx", ".ort", ".so", ".tflite", ".zip", ".mlpackage", ".xml", ".gguf")


def _modules() -> dict[str, Path]:
    found = {}
    for root in ROOTS:
        for path in (PACKAGES / root).rglob("*.py"):
            if "_builtin" in path.parts:
                continue
            relative = path.relative_to(PACKAGES).with_suffix("")
            parts = relative.parts[:-1] if relative.name == "__init__" else relative.parts
            found[".".join(parts)] = path
    return found


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for imported in imports_of(path, package):
            parts = imported.split(".")
            edges |= {".".join(parts[:i]) for i in range(1, len(parts) + 1)} & set(modules)
        graph[name] = edges - {name}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 100  # the walk saw the whole package
    assert cycles(graph) == []


def _distribution_names(tree: ast.AST) -> set[int]:
    """String constants that name Python distributions (a `tools` tuple, `tool_versions(...)`): the
    `onnxruntime` package is not the `onnxruntime` runtime."""
    ids: set[int] = set()
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets, value = node.targets, node.value
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets, value = [node.target], node.value
        elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) == "tool_versions":
            ids |= {id(c) for arg in node.args for c in ast.walk(arg)}
            continue
        else:
            continue
        if any(isinstance(t, ast.Name) and (t.id == "tools" or t.id.endswith("TOOLS")) for t in targets):
            ids |= {id(c) for c in ast.walk(value)}
    return ids


def _code_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """String constants that are not docstrings or distribution names."""
    docstrings = _distribution_names(tree) | {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def dispatch_violations(path: Path) -> list[str]:
    """Family or runtime names, and artifact-suffix tests, in one module's code."""
    tree = ast.parse(path.read_text(), filename=str(path))
    label = path.relative_to(PACKAGES) if path.is_relative_to(PACKAGES) else path.name
    names = {*FAMILY_NAMES, *RUNTIMES}
    found = []
    for line, value in _code_strings(tree):
        if value in names or "whisper" in value.lower() or "speech" in value.lower():
            found.append(f"{label}:{line}: names {value!r}")
    for node in ast.walk(tree):
        if isinstance(node, ast.Name | ast.Attribute):
            identifier = node.id if isinstance(node, ast.Name) else node.attr
            if "speech" in identifier.lower() or "whisper" in identifier.lower():
                found.append(f"{label}:{node.lineno}: uses {identifier}")
        if isinstance(node, ast.Compare | ast.Call):
            suffix_test = (isinstance(node, ast.Compare) and _mentions_suffix(node.left)) or (
                isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "endswith"
            )
            literals = [c.value for c in ast.walk(node) if isinstance(c, ast.Constant) and isinstance(c.value, str)]
            if suffix_test and any(literal.endswith(ARTIFACT_SUFFIXES) for literal in literals):
                found.append(f"{label}:{node.lineno}: tests an artifact suffix {literals}")
    return found


def _mentions_suffix(node: ast.AST) -> bool:
    return any(isinstance(n, ast.Attribute) and n.attr in ("suffix", "name") for n in ast.walk(node))


def test_the_dispatch_check_catches_a_branch(tmp_path: Path) -> None:
    probe = PACKAGES / "compiler" / "_probe_dispatch.py"
    probe.write_text(
        'def f(r, p):\n    if r.runtime == "tvm":\n        return p.suffix == ".so"\n    return "speech"\n'
    )
    try:
        found = dispatch_violations(probe)
    finally:
        probe.unlink()
    assert len(found) == 3, found


def test_no_family_or_runtime_dispatch_outside_families_and_backends() -> None:
    outside = [
        path
        for path in _modules().values()
        if not path.relative_to(PACKAGES).as_posix().startswith((*SEAM_OWNERS, *DEVICE_SIDE))
    ]
    assert len(outside) > 40
    violations = [line for path in outside for line in dispatch_violations(path)]
    assert violations == []


def test_every_package_is_listed_for_pip_install() -> None:
    pyproject = tomllib.loads((PACKAGES / "pyproject.toml").read_text())
    listed = set(pyproject["tool"]["setuptools"]["packages"])
    on_disk = {name for name, path in _modules().items() if path.name == "__init__.py"}
    assert on_disk <= listed, f"add to pyproject.toml [tool.setuptools] packages: {sorted(on_disk - listed)}"
    mapped = pyproject["tool"]["setuptools"]["package-dir"]
    assert all((PACKAGES / directory).is_dir() for directory in mapped.values())


def test_families_never_name_a_runtime() -> None:
    """A family asks its backend what an artifact is and how it runs; only backends/ name runtimes."""
    families = [p for p in _modules().values() if p.relative_to(PACKAGES).as_posix().startswith("compiler/families/")]
    assert len(families) > 15
    found = [
        f"{path.relative_to(PACKAGES)}:{line}: names {value!r}"
        for path in families
        for line, value in _code_strings(ast.parse(path.read_text()))
        if value in RUNTIMES
    ]
    suffixes = [line for path in families for line in dispatch_violations(path) if "suffix" in line]
    assert found == [] and suffixes == []
