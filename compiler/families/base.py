"""The model-family seam: what a kind of model declares, and what one build of it provides.

A family is one entry in catalogue.py. It declares its graphs ("model"; "encoder", "decoder"; ...),
the recipe [source] kinds it imports, the schema of its [data], [metric] and [bench] tables
(checked when the recipe loads), the target pass-list keys each graph takes its passes from, and
what it requires of a backend. `start()` gives a `FamilyBuild`, which the one driver
(compiler/engine/driver.py) calls for every family alike:

    import_stage -> per graph: passes (with pass_context) -> score_graph each row -> gate
    -> compile_request per graph -> score_compiled -> gate -> latency -> finish

Everything model-specific (data, references, metrics, generation loops, what the record and the
bundle carry) lives behind these calls, in the family's own folder.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from compiler.errors import ConfigError

if TYPE_CHECKING:
    from compiler.backends.base import Backend, CompiledGraph, CompileRequest, Shipped
    from compiler.engine.cache import Cache
    from compiler.engine.record import StageRow
    from compiler.engine.specs import ModelRecipe, TargetSpec
    from compiler.tomlfile import TomlTable
    from passes.base import Fidelity, PassContext, TorchPass


@dataclass
class Imported:
    """The import stage's result: each graph's FP32 ONNX and the report rows it contributes."""

    graphs: dict[str, Path]
    rows: list[StageRow]  # the import row first (PyTorch-level pass rows after it)
    source_digest: str
    meta: dict[str, Any] = field(default_factory=dict)  # exporter, opset, export_check


@dataclass
class Scored:
    """The compiled model's fidelity, whether it came from the cache, and where details are."""

    fidelity: Fidelity
    cached: bool
    details: Path | None = None  # e.g. per-clip transcripts


@dataclass
class Finished:
    """What the record and the bundle carry beyond the rows: signature, files, memory, extras."""

    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    artifact_name: str
    files: dict[str, Shipped]  # in record order
    memory: dict[str, Any] | None  # None: packaging estimates it from a graph artifact
    record_extra: dict[str, Any] = field(default_factory=dict)


class ModelFamily(ABC):
    """One kind of model (see the module docstring)."""

    name: ClassVar[str]
    graphs: ClassVar[tuple[str, ...]] = ("model",)
    source_kinds: ClassVar[tuple[str, ...]]
    requires: ClassVar[frozenset[str]] = frozenset()  # backend capabilities (compiler/backends/base.py)
    bench: ClassVar[str | None] = None  # "module:function" that benchmarks a recipe of this family
    counts_nodes: ClassVar[bool] = True  # report rows show each graph's ONNX node count

    def pass_list_keys(self, graph: str) -> tuple[str, ...]:
        """The target pass-list keys a graph takes its passes from, first found wins ("default" last)."""
        return (self.name,) if len(self.graphs) == 1 else (f"{self.name}-{graph}", self.name)

    def all_pass_list_keys(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(key for graph in self.graphs for key in self.pass_list_keys(graph)))

    @abstractmethod
    def check_recipe(self, recipe: ModelRecipe, top: TomlTable) -> None:
        """Validate [data], [metric] and [bench] (ConfigError naming the field and the nearest name)."""

    @abstractmethod
    def source_files(self, recipe: ModelRecipe) -> list[Path]:
        """Files whose bytes are the model (weights, factory code); read without heavy imports."""

    def data_files(self, recipe: ModelRecipe) -> list[Path]:
        """Files the recipe's data comes from (for the whole-build key)."""
        return []

    def check_backend(self, backend: Backend) -> None:
        missing = self.requires - backend.capabilities
        if missing:
            raise ConfigError(
                f"target '{backend.target.name}' ({backend.runtime}) cannot build {self.name} models: they need "
                f"a backend that is {', '.join(sorted(missing))}; pick a target on "
                f"{', '.join(self.capable_runtimes())}"
            )

    def capable_runtimes(self) -> list[str]:
        from compiler.backends.catalogue import RUNTIMES, backend_class

        return [r for r in RUNTIMES if self.requires <= backend_class(r).capabilities]

    def replay_context(
        self, recipe: ModelRecipe, workdir: Path, architecture: str, transformer_shape: dict[str, int]
    ) -> PassContext:
        """A pass context rebuilt from a recipe alone (`edgebuild replay` of a failed pass)."""
        raise ConfigError(f"family '{self.name}' cannot replay a pass outside a build")

    @abstractmethod
    def start(self, recipe: ModelRecipe, target: TargetSpec, backend: Backend, cache: Cache) -> FamilyBuild:
        """Begin one build: load the data this family scores with (heavy imports happen here)."""


class FamilyBuild(ABC):
    """One build of one recipe for one target, as the driver sees it."""

    def __init__(self, recipe: ModelRecipe, target: TargetSpec, backend: Backend, cache: Cache) -> None:
        self.recipe, self.target, self.backend, self.cache = recipe, target, backend, cache

    @abstractmethod
    def import_stage(self, torch_passes: list[TorchPass]) -> Imported:
        """Import (cached): each graph's FP32 ONNX and the reference every row is scored against."""

    @abstractmethod
    def pass_context(self, graph: str) -> PassContext:
        """What `graph`'s passes may know: calibration data, an evaluator, a fingerprint."""

    @abstractmethod
    def score_graph(self, graph: str, row: StageRow) -> Fidelity:
        """The fidelity of one graph's ONNX (an import or pass row), cached by its bytes."""

    @abstractmethod
    def compile_request(self, graph: str, model: Path, passes_applied: tuple[str, ...]) -> CompileRequest:
        """What the backend compiles `graph` from."""

    @abstractmethod
    def score_compiled(self, compiled: dict[str, CompiledGraph]) -> Scored:
        """The fidelity of the compiled model (every graph together), cached."""

    def failure_advice(self, stage: str, scored: Scored | None) -> str:
        """What to do when a gate fails (appended to the BudgetError)."""
        return (
            "Relax the recipe's [metric] budget, or change that pass's options "
            "(e.g. mixed_precision = true) in the target file"
        )

    def compile_stats(self, compiled: dict[str, CompiledGraph]) -> dict[str, Any]:
        """The compile row's stats: the backend's, per graph when there are several."""
        if len(compiled) == 1:
            return self.backend.compile_stats(next(iter(compiled.values())).meta)
        return {graph: self.backend.compile_stats(c.meta) for graph, c in compiled.items()}

    @abstractmethod
    def latency(self, rows: list[StageRow], compiled: dict[str, CompiledGraph]) -> dict[str, Any]:
        """Measure what runs on this host (filling rows' latency) -> the record's metrics.latency."""

    @abstractmethod
    def finish(self, rows: list[StageRow], compiled: dict[str, CompiledGraph], scored: Scored) -> Finished:
        """The signature, shipped files, memory estimate and the family's record section."""


__all__ = ["FamilyBuild", "Finished", "Imported", "ModelFamily", "Scored"]
