"""Device profiles (a small TOML file per device) and choosing the best compatible bundle.

    # device.toml
    id = "kitchen-pi-01"            # stable per device: staged rollouts hash it
    model = "minilm"                # which model this device runs
    channel = "stable"              # stable | beta
    os = "linux"
    arch = "x86_64"
    isa_features = ["avx2", "avx512f"]
    ram_mb = 2048
    accelerator = "none"            # bundles needing another accelerator are skipped
    [runtimes]                      # runtime -> installed version
    onnxruntime = "1.31.1"
    [preferences]
    precision = ["int8", "fp16", "fp32"]   # first = most wanted (optional)

Compatibility is decided from the signed channel index only: same os and arch, every ISA feature
the bundle was built for present on the device, the bundle's runtime installed at its minimum
version or newer, and its memory estimate within the device's RAM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compiler.errors import ConfigError
from compiler.tomlfile import TomlTable, read_toml

CHANNELS = ("stable", "beta")
FIELDS = (
    "id",
    "model",
    "channel",
    "os",
    "arch",
    "isa_features",
    "ram_mb",
    "accelerator",
    "runtimes",
    "preferences",
)


@dataclass(frozen=True)
class DeviceProfile:
    id: str
    model: str
    channel: str
    os: str
    arch: str
    isa_features: tuple[str, ...]
    ram_mb: int
    accelerator: str
    runtimes: dict[str, str]
    precision_preference: tuple[str, ...] = field(default=())


def load_profile(path: Path) -> DeviceProfile:
    """Parse and validate a device profile; ConfigError names the file and field."""
    top = TomlTable(read_toml(path), path)
    top.reject_unknown(FIELDS)
    runtimes = top.table("runtimes", required=True)
    for name, version in runtimes.data.items():
        if not isinstance(version, str) or not _version_tuple(version):
            raise ConfigError(f"{path}: field 'runtimes.{name}' must be a version string such as \"1.31.1\"")
    preferences = top.table("preferences")
    preferences.reject_unknown(("precision",))
    features = top.get("isa_features", list, default=[])
    if not all(isinstance(f, str) for f in features):
        raise ConfigError(f"{path}: field 'isa_features' must be a list of strings")
    return DeviceProfile(
        id=top.get("id", str),
        model=top.get("model", str),
        channel=top.get("channel", str, default="stable", choices=CHANNELS),
        os=top.get("os", str),
        arch=top.get("arch", str),
        isa_features=tuple(features),
        ram_mb=top.get("ram_mb", int),
        accelerator=top.get("accelerator", str, default="none"),
        runtimes=dict(runtimes.data),
        precision_preference=tuple(preferences.get("precision", list, default=[])),
    )


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit()) if piece[:1].isdigit() else ""
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def incompatibility(profile: DeviceProfile, target: dict[str, Any], model: dict[str, Any]) -> str | None:
    """Why a channel-index entry cannot run on this device, or None when it can."""
    if target.get("os") != profile.os or target.get("arch") != profile.arch:
        return f"built for {target.get('os')}/{target.get('arch')}"
    missing = sorted(set(target.get("isa_features", [])) - set(profile.isa_features))
    if missing:
        return f"needs ISA features {', '.join(missing)}"
    runtime = target.get("runtime", "")
    installed = profile.runtimes.get(runtime)
    if installed is None:
        return f"needs runtime {runtime}"
    if _version_tuple(installed) < _version_tuple(target.get("runtime_min_version", "0")):
        return f"needs {runtime} >= {target.get('runtime_min_version')} (device has {installed})"
    accelerator = target.get("accelerator", "none")
    if accelerator not in ("none", profile.accelerator):
        return f"needs accelerator {accelerator}"
    if model.get("memory_bytes", 0) > profile.ram_mb * 1024 * 1024:
        return f"needs {model['memory_bytes'] / 2**20:.0f} MB of RAM (device has {profile.ram_mb} MB)"
    return None


@dataclass(frozen=True)
class Choice:
    target: str
    entry: dict[str, Any]
    rejected: dict[str, str]


def choose_target(profile: DeviceProfile, index: dict[str, Any]) -> Choice | None:
    """The best compatible target in a channel index for the profile's model, or None.

    Best = the profile's most preferred precision, then the lowest host latency ratio the index
    records, then the smallest bundle, then the target name (so the choice is deterministic).
    """
    rejected: dict[str, str] = {}
    candidates = []
    for name, target in sorted(index.get("targets", {}).items()):
        model = target.get("models", {}).get(profile.model)
        if model is None:
            continue
        reason = incompatibility(profile, target, model)
        if reason:
            rejected[name] = reason
            continue
        preference = profile.precision_preference
        rank = preference.index(target["precision"]) if target.get("precision") in preference else len(preference)
        latency = model.get("latency_ratio")
        candidates.append((rank, latency if latency is not None else float("inf"), model.get("size_bytes", 0), name))
    if not candidates:
        return None
    best = min(candidates)[-1]
    return Choice(best, index["targets"][best], rejected)
