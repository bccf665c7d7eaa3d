"""Errors a user can act on.

A `UserError` is printed by the CLI as one line (no traceback) and exits non-zero: it says what
was wrong, where (file, field, node) and what to do. Anything else is a bug in edgebuild and keeps
its traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """Bad input: the message is complete and shown to the user as is."""

    exit_code = 2


class ConfigError(UserError):
    """A recipe or target file is malformed or names something that does not exist."""


class ModelError(UserError):
    """A model file is corrupt, not ONNX, or does not match its recipe."""


class DataError(UserError):
    """Representative, calibration or evaluation data is missing or unusable."""


class PassError(UserError):
    """A graph pass cannot apply to this model (names the pass and the op or node)."""


class BudgetError(UserError):
    """A verification gate failed: fidelity over the recipe's budget, or a failing speed gate."""

    exit_code = 3


def did_you_mean(name: str, valid: Iterable[str]) -> str:
    """A hint naming the closest valid name, plus the full list, for an unknown `name`."""
    valid = sorted(valid)
    close = difflib.get_close_matches(name, valid, n=1, cutoff=0.5) or [v for v in valid if v.startswith(name)][:1]
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"{hint}valid: {', '.join(valid) if valid else '(none)'}"
