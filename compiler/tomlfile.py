"""TOML files with errors a user can act on: every message names the file, the field, what was
expected and, for an unknown name, the nearest valid one.

`TomlTable` walks a parsed file; `Field` + `Schema` declare a table's fields (type, range, allowed
values) so that a table is checked completely, before any work is done.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from compiler.errors import ConfigError, did_you_mean


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from error
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: malformed TOML: {error}") from error


class TomlTable:
    """A TOML table with the file and dotted path it came from, for error messages."""

    def __init__(self, data: dict[str, Any], path: Path, where: str = "") -> None:
        self.data, self.path, self.where = data, path, where

    def at(self, key: str) -> str:
        return f"{self.path}: field '{self.where + key}'"

    def reject_unknown(self, allowed: tuple[str, ...]) -> None:
        for key in self.data:
            if key not in allowed:
                raise ConfigError(f"{self.at(key)} is not a known field; {did_you_mean(key, allowed)}")

    def get(self, key: str, kind: type | tuple[type, ...], default: Any = ..., choices: tuple | None = None) -> Any:
        if key not in self.data:
            if default is ...:
                raise ConfigError(f"{self.at(key)} is missing; add it (see BUILD.md)")
            return default
        value = self.data[key]
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise ConfigError(f"{self.at(key)} must be {names}, got {value!r}")
        if choices is not None and value not in choices:
            raise ConfigError(f"{self.at(key)} is {value!r}; {did_you_mean(str(value), choices)}")
        return value

    def table(self, key: str, required: bool = False) -> TomlTable:
        value = self.get(key, dict, default=... if required else {})
        return TomlTable(value, self.path, f"{self.where}{key}.")


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list"}


@dataclass(frozen=True)
class Field:
    """One field of a table: its type, whether it is required, its range or allowed values."""

    name: str
    kind: type  # int, float (an integer is accepted too), str, bool or list
    required: bool = False
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[Any, ...] | None = None
    items: type | None = None  # a list's element type
    doc: str = ""

    def describe(self) -> str:
        text = _KIND_NAMES[self.kind]
        if self.kind is list and self.items is not None:
            text = f"a list of {_KIND_NAMES[self.items].removeprefix('an ').removeprefix('a ')}s"
        if self.minimum is not None and self.maximum is not None:
            text += f" from {self.minimum:g} to {self.maximum:g}"
        elif self.minimum is not None:
            text += f" >= {self.minimum:g}"
        elif self.maximum is not None:
            text += f" <= {self.maximum:g}"
        return text

    def check(self, value: Any, where: str) -> None:
        if not _is(value, self.kind) or (
            self.kind is list and self.items is not None and not all(_is(item, self.items) for item in value)
        ):
            raise ConfigError(f"{where} must be {self.describe()}, got {value!r}")
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"{where} is {value!r}; {did_you_mean(str(value), [str(c) for c in self.choices])}")
        below = self.minimum is not None and value < self.minimum
        above = self.maximum is not None and value > self.maximum
        if self.kind in (int, float) and (below or above):
            raise ConfigError(f"{where} must be {self.describe()}, got {value!r}")


def _is(value: Any, kind: type) -> bool:
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, int | float)
    return isinstance(value, kind)


@dataclass(frozen=True)
class Schema:
    """The fields a table may have; `open_keys` admits extra keys of one type (e.g. axis names)."""

    fields: tuple[Field, ...] = ()
    open_keys: Field | None = None

    def names(self) -> tuple[str, ...]:
        return tuple(field.name for field in self.fields)

    def check(self, table: TomlTable) -> dict[str, Any]:
        """Validate every key of `table` (unknown ones included); returns the table's data."""
        known = {field.name: field for field in self.fields}
        for key, value in table.data.items():
            field = known.get(key)
            if field is None:
                if self.open_keys is None:
                    raise ConfigError(f"{table.at(key)} is not a known field; {did_you_mean(key, known)}")
                field = self.open_keys
            field.check(value, table.at(key))
        for field in self.fields:
            if field.required and field.name not in table.data:
                raise ConfigError(f"{table.at(field.name)} is missing; it must be {field.describe()}")
        return table.data


__all__ = ["Field", "Schema", "TomlTable", "read_toml"]
