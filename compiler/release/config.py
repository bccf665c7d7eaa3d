"""`release.toml`: which models, at which versions, go to which targets and channels, under which gates.

Validated like the recipes and targets (compiler/engine/config.py): unknown fields, wrong types, unknown
models or targets and a version that differs from the recipe's are one-line errors naming the file
and the field. Example (the shipped file is the reference):

    name = "2026.11"
    channels = ["beta", "stable"]          # the release publishes to the first; promote moves it on
    rollout = [0.1, 0.5, 1.0]              # staged fractions of devices, applied per channel

    [[models]]
    name = "digits-cnn"
    version = "1.0.0"                      # must equal the recipe's version
    targets = ["desktop-int8", "android-int8"]
    gates = { max_size_ratio = 0.35, max_latency_ratio = 1.0, min_fidelity = 99.0 }
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from compiler import workspace
from compiler.engine import config
from compiler.errors import ConfigError, did_you_mean
from compiler.tomlfile import TomlTable, read_toml

CHANNELS = ("beta", "stable")
GATES = ("max_size_ratio", "max_latency_ratio", "min_fidelity")


@dataclass(frozen=True)
class ReleaseModel:
    name: str
    version: str
    targets: tuple[str, ...]
    gates: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class Release:
    name: str
    path: Path
    channels: tuple[str, ...]
    rollout: tuple[float, ...]
    models: tuple[ReleaseModel, ...]

    def pairs(self) -> list[tuple[ReleaseModel, str]]:
        """Every (model, target) pair, in file order."""
        return [(model, target) for model in self.models for target in model.targets]

    def targets(self) -> list[str]:
        """Every target the release builds, sorted, once each (the CI matrix)."""
        return sorted({target for model in self.models for target in model.targets})


def load_release(path: Path | None = None) -> Release:
    """Read and validate a release definition (default: the workspace's release.toml)."""
    path = path or workspace.current().release_file
    if not path.is_file():
        raise ConfigError(
            f"release file {path} does not exist; write one (the edgebuild repository's release.toml is an example)"
        )
    top = TomlTable(read_toml(path), path)
    top.reject_unknown(("name", "channels", "rollout", "models"))
    channels = tuple(top.get("channels", list, default=list(CHANNELS)))
    for channel in channels:
        if channel not in CHANNELS:
            raise ConfigError(f"{path}: field 'channels' has {channel!r}; {did_you_mean(str(channel), CHANNELS)}")
    if not channels or len(set(channels)) != len(channels):
        raise ConfigError(f"{path}: field 'channels' must list each channel once, in promotion order")
    rollout = tuple(float(x) for x in top.get("rollout", list, default=[1.0]))
    if not rollout or any(not 0 < x <= 1 for x in rollout) or list(rollout) != sorted(rollout) or rollout[-1] != 1.0:
        raise ConfigError(f"{path}: field 'rollout' must rise from above 0 to 1.0, e.g. [0.1, 0.5, 1.0]")
    entries = top.get("models", list)
    if not entries:
        raise ConfigError(f"{path}: field 'models' is empty; add [[models]] tables")
    models = tuple(_model(TomlTable(entry, path, f"models[{i}].")) for i, entry in enumerate(entries))
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: a model is listed twice in [[models]]; list each once with all its targets")
    return Release(top.get("name", str), path, channels, rollout, models)


def _model(table: TomlTable) -> ReleaseModel:
    table.reject_unknown(("name", "version", "targets", "gates"))
    name = table.get("name", str)
    recipe = config.load_recipe(name)
    version = table.get("version", str)
    if version != recipe.version:
        raise ConfigError(
            f"{table.path}: field '{table.where}version' is {version!r} but {recipe.path.name} is at "
            f"{recipe.version!r}; release the recipe's version (bump it in the recipe to release a new one)"
        )
    targets = tuple(table.get("targets", list))
    known = config.available("targets")
    for target in targets:
        if target not in known:
            raise ConfigError(f"{table.path}: model {name}: unknown target {target!r}; {did_you_mean(target, known)}")
    if not targets or len(set(targets)) != len(targets):
        raise ConfigError(f"{table.path}: field '{table.where}targets' must list each target once")
    gates_table = table.table("gates")
    gates_table.reject_unknown(GATES)
    gates = {key: float(gates_table.get(key, (int, float))) for key in GATES if key in gates_table.data}
    return ReleaseModel(name, version, targets, gates)
