"""Catalogue entries written as "package.module:name", imported when first used.

Catalogues name their entries this way so that loading one (a backend, a family, a bench) imports
only that module, and so that a stage's fingerprint holds the entry that runs, not every entry
(compiler/engine/fingerprint.py does not follow strings). Recipes' own `module:function` names are
resolved from their workspace instead (compiler/importers/callables.py).
"""

from __future__ import annotations

import importlib
from typing import Any


def resolve(spec: str) -> Any:
    """The object `spec` ("package.module:name") names, importing its module."""
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


__all__ = ["resolve"]
