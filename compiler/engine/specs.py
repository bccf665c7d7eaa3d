"""The build's typed inputs: a hardware target, a model recipe and tensor signatures.

Plain data, loaded and validated by compiler/engine/config.py; kept free of imports so that
backends and families can name these types without depending on how files are read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from passes.spec import PassSpec

DEFAULT_PASS_LIST = "default"
DTYPES = ("float32", "float16", "int64", "int32", "uint8", "int8", "bool")


@dataclass(frozen=True)
class TargetSpec:
    name: str
    description: str
    path: Path
    platform: dict[str, Any]
    runtime: str
    runtime_min_version: str
    graph_optimization: str  # ORT level saved into the artifact: not tied to the build CPU
    precision: str
    preset: str | None
    passes: dict[str, tuple[PassSpec, ...]]  # pass-list key -> pass list; "default" always present
    speed_gate: str
    max_latency_ratio: float
    tune: dict[str, Any]
    channel: str
    emulated_batches: int = 24  # verification batches run under emulation (evenly spaced subset)

    def passes_for(self, keys: tuple[str, ...]) -> tuple[PassSpec, ...]:
        """The first pass list named by `keys` (a family's lookup order for one graph), else default."""
        for key in keys:
            if key in self.passes:
                return self.passes[key]
        return self.passes[DEFAULT_PASS_LIST]


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: tuple[int | str, ...]  # str = a dynamic axis name


@dataclass(frozen=True)
class ModelRecipe:
    name: str
    version: str
    description: str
    path: Path | None  # None for a recipe synthesised from a bare .onnx file
    family: str
    source_kind: str  # one of the family's source kinds ("torch", "huggingface_package", ...)
    source: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    data: dict[str, Any]
    metric: dict[str, Any]
    bench: dict[str, Any]  # values for the dynamic axes when measuring latency, or the family's own
    extra: dict[str, Any] = field(default_factory=dict)

    def declared_axes(self) -> tuple[str, ...]:
        """The axis names that must stay dynamic: those of the inputs, those of the outputs when a
        recipe file declares them, and `--dynamic-axis` names (extra["dynamic_axes"]). Other
        symbolic names on a bare file's outputs are the exporter's inventions, which folding may
        resolve ("LayerNormalizationlast_hidden_state_dim_1" -> 197)."""
        specs = (*self.inputs, *(self.outputs if self.path is not None else ()))
        named = [d for spec in specs for d in spec.shape if isinstance(d, str)]
        return tuple(dict.fromkeys([*named, *self.extra.get("dynamic_axes", ())]))

    @property
    def root(self) -> Path | None:
        """The directory a recipe's `module:function` names are imported from (its models/'s parent)."""
        return self.path.parent.parent if self.path is not None else None


__all__ = ["DEFAULT_PASS_LIST", "DTYPES", "ModelRecipe", "PassSpec", "TargetSpec", "TensorSpec"]
