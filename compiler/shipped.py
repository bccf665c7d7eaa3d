"""Files that ship with edgebuild: the built-in targets, recipes and templates, and data files
inside its Python packages.

In a checkout they are the repository's top-level `targets/`, `models/` and `templates/`; in an
installed edgebuild (`pip install .`) the same files are package data under `compiler/_builtin/`.
Code reads them through `shipped()` and `package_file()` with a literal path, which is also how
stage fingerprints (compiler/engine/fingerprint.py) find the files a module reads.
"""

from __future__ import annotations

from pathlib import Path

PACKAGES = Path(__file__).resolve().parent.parent  # the directory holding compiler/ and passes/
_INSTALLED = PACKAGES / "compiler" / "_builtin"


def builtin_root() -> Path:
    """The directory holding the built-in targets/, models/ and templates/."""
    return _INSTALLED if _INSTALLED.is_dir() else PACKAGES


def shipped(relative: str) -> Path:
    """A built-in file or directory, e.g. shipped("templates/tvm_runner.cc")."""
    return builtin_root() / relative


def package_file(relative: str) -> Path:
    """A file inside edgebuild's Python packages, e.g. package_file("compiler/toolchains/tflite.lock")."""
    return PACKAGES / relative


__all__ = ["PACKAGES", "builtin_root", "package_file", "shipped"]
