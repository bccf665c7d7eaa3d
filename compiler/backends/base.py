"""The backend seam: what every runtime a target can name provides to the build.

A backend turns a graph's last ONNX (or, for a backend that converts from PyTorch, the recipe's
module) into the artifact a target ships, and knows how that artifact runs: on this host, under
emulation (an artifact for another ISA, under qemu), in an interpreter (Core ML's MIL program) or
in a pinned toolchain process (LiteRT). Nothing outside compiler/backends/ asks which runtime an
artifact is for or looks at its file suffix: it asks its backend.

Contract, for one backend class:
- `key_config(request)`: everything besides the input graph and the code that changes the
  artifact (target, precision, shapes, the toolchain's lock); with `fingerprint()` (the code that
  compiles AND the code that runs the artifact, from compiler/engine/fingerprint.py) and `tools`
  it makes the compile stage's cache key, and the fingerprint is in every key that runs it;
- `compile(request, directory) -> meta`: writes the artifact (meta["artifact"] names it) and any
  files it needs beside it; never reads or writes anything else;
- `execution(artifact)`: where and how the build runs it; `outputs_for(artifact, batches)` runs it
  there; `predictor(artifact)` runs it in this process (host artifacts only: what gets timed);
- `ship(artifact, meta)`: every file the bundle carries for this graph, with its manifest role.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from compiler.engine.fingerprint import code_digest
from compiler.engine.specs import TargetSpec, TensorSpec
from compiler.errors import ConfigError

Feeds = dict[str, np.ndarray]
Outputs = list[list[np.ndarray]]  # per batch, per output
Predict = Callable[[Feeds], list[np.ndarray]]
IO_RECORD = "io.json"  # beside an artifact that is not ONNX: its inputs, outputs, static shapes
Where = Literal["host", "emulated", "interpreter", "toolchain"]


@dataclass(frozen=True)
class CompileRequest:
    """What a backend may use to compile one graph of a model."""

    model: Path  # the graph's last ONNX, after the target's passes
    name: str  # the model's name (for messages)
    graph: str  # which graph of the model ("model", "encoder", "decoder", ...)
    shapes: dict[str, list[int]]  # static input shapes: what fixed-shape runtimes compile for
    cache_root: Path
    calibration: Callable[[], dict[str, np.ndarray]] = dict  # representative inputs, concatenated per input
    inputs: tuple[TensorSpec, ...] = ()  # the recipe's declared inputs (names, dtypes)
    output_names: tuple[str, ...] = ()
    torch_module: Callable[[], Any] | None = None  # the FP32 PyTorch model, for backends converting from it
    passes_applied: tuple[str, ...] = ()


@dataclass(frozen=True)
class Execution:
    """Where the build runs an artifact to verify it, in words for reports ("under qemu-aarch64")."""

    where: Where
    how: str = "on this host"

    @property
    def timed(self) -> bool:
        """Only what runs in this process on this CPU has a build-host latency."""
        return self.where == "host"

    @property
    def slow(self) -> bool:
        """Emulators and interpreters run a spaced subset of the verification batches."""
        return self.where in ("emulated", "interpreter")


@dataclass(frozen=True)
class Shipped:
    """A file the bundle carries: where it is now, and its manifest role ("artifact", "runtime", ...)."""

    path: Path
    role: str = "artifact"


@dataclass
class CompiledGraph:
    """One compiled graph: the artifact, the backend's meta and the ONNX it was compiled from."""

    graph: str
    artifact: Path
    meta: dict[str, Any]
    source: Path  # the last ONNX (memory estimates, signatures of libraries)
    cached: bool
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)


class Backend(ABC):
    """One runtime a target can name (`runtime = { name = "..." }`)."""

    runtime: ClassVar[str]
    tools: ClassVar[tuple[str, ...]]  # distributions whose versions change the artifact
    converts_from: ClassVar[Literal["onnx", "pytorch"]] = "onnx"
    # What a model family may require of a backend: "stepwise" = each graph can be called once per
    # step from the build (a generation loop), on this host, through `remote_predictor` or `run_program`.
    capabilities: ClassVar[frozenset[str]] = frozenset()
    # The artifact is an ONNX graph packaging can read (memory is estimated from it at packaging).
    graph_artifact: ClassVar[bool] = False

    # A one-line reason shown when the artifact has no build-host latency.
    untimed_summary: ClassVar[str] = "not run on this host"
    tunable: ClassVar[bool] = False  # takes --tune-trials / --rpc-tracker (the TVM backend)
    bench_note: ClassVar[str] = ""  # what `make bench` says of this backend's latency figures
    times_off_host: ClassVar[bool] = False  # `time_against_ort` times artifacts in another process
    counts_instructions: ClassVar[bool] = False  # `instruction_cost` counts emulated artifacts' instructions
    # `predictor` also works for artifacts that run elsewhere (a session kept in an emulated process):
    # a generation loop then runs here, calling it per step, instead of a native program (`run_program`).
    remote_predictor: ClassVar[bool] = False

    def __init__(self, target: TargetSpec) -> None:
        self.target = target

    @classmethod
    def tuned(
        cls, target: TargetSpec, trials: int | None, tracker: str | None = None, key: str | None = None
    ) -> TargetSpec:
        """`target` with the command line's tuning options; refused by backends that do not tune."""
        if trials is None and tracker is None and key is None:
            return target
        raise ConfigError(
            f"tuning options apply to TVM targets (the tunable backend); {target.name} runs on {target.runtime}"
        )

    @classmethod
    def fingerprint(cls) -> str:
        """Digest of the code that compiles and runs this backend's artifacts."""
        return code_digest([cls.__module__])

    def check_target(self) -> None:
        """Refuse a target file this backend cannot honour (ConfigError), before any work."""
        return None

    def check_request(self, request: CompileRequest) -> None:
        """Refuse a compile request this backend cannot honour (ConfigError), before any work."""
        return None

    @abstractmethod
    def key_config(self, request: CompileRequest) -> dict[str, Any]:
        """What the compile key holds beyond the input graph, this backend's code and its tools."""

    @abstractmethod
    def compile(self, request: CompileRequest, directory: Path) -> dict[str, Any]:
        """Write the artifact into `directory`; returns its meta (meta["artifact"] is its file name)."""

    def execution(self, artifact: Path) -> Execution:
        return Execution("host")

    def predictor(self, artifact: Path, threads: int = 1) -> Predict:
        """A function from named inputs to outputs, run in this process (host artifacts only)."""
        from compiler.ort_session import predictor

        return predictor(artifact, threads)

    def outputs_for(self, artifact: Path, batches: list[Feeds]) -> Outputs:
        """Outputs for every batch, run where `execution` says."""
        predict = self.predictor(artifact)
        return [predict(feeds) for feeds in batches]

    def time_against_ort(
        self, onnx_path: Path, artifacts: dict[str, Path], feeds: Feeds, repeats: int
    ) -> dict[str, float] | None:
        """Median seconds per call of ORT on `onnx_path` ("ort") and of each artifact, interleaved in
        the process that runs the artifacts (backends whose artifacts do not run in this one)."""
        return None

    def instruction_cost(self, artifact: Path, reference: Path, feeds: Feeds) -> dict[str, Any] | None:
        """For an artifact that runs under emulation: instructions per inference on the emulated CPU,
        by class, for the artifact and for ONNX Runtime on the FP32 `reference` (None: not counted)."""
        return None

    def run_program(self, artifact: Path, source: Path, arguments: list[str], timeout_s: int) -> None:
        """Build `source` (C++ against this backend's device runtime) and run it where `artifact` runs."""
        raise ConfigError(f"the {self.runtime} backend cannot run a native program next to its artifacts")

    def signature(self, compiled: CompiledGraph) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """The artifact's inputs and outputs (name, dtype, shape, optional layout)."""
        return compiled.meta["inputs"], compiled.meta["outputs"]

    def ship(self, compiled: CompiledGraph, name: str, prefix: str = "") -> dict[str, Shipped]:
        """Every file the bundle carries for this graph, the artifact under `name` first; files of
        the graph's own beside it get `prefix` (a model of several graphs ships several)."""
        files = {name: Shipped(compiled.artifact)}
        for extra, role in sorted(compiled.meta.get("extra_files", {}).items()):  # e.g. ORT Mobile's op config
            files[f"{prefix}{extra}"] = Shipped(compiled.artifact.parent / extra, role)
        return files

    def shipped_name(self, stem: str, artifact: Path) -> str:
        """The artifact's file name in the bundle ("digits-cnn.onnx", "encoder.so")."""
        return f"{stem}{artifact.suffix}"

    def compile_stats(self, meta: dict[str, Any]) -> dict[str, Any]:
        """What the report shows for the compile stage."""
        return reported_meta(meta)

    def not_timed(self, artifact: Path) -> str:
        """Why an artifact that does not run on this host has no latency (report and manifest note)."""
        return f"not measured: {self.runtime} artifacts do not run on this host"

    def recorded_graph_optimization(self) -> str | None:
        """The offline graph optimisation level the artifact was saved at, if the runtime has one."""
        return None


REPORTED = ("converter", "toolchain", "ops", "tensor_dtypes", "target", "tuning", "isa_features", "execution")


def reported_meta(meta: dict[str, Any]) -> dict[str, Any]:
    """The parts of a compile stage's meta that reports show (converter, ops, tuning, ...)."""
    return {key: meta[key] for key in REPORTED if key in meta}


def read_io_record(artifact: Path) -> dict[str, Any]:
    """The io.json a compiled artifact carries beside it (inputs, outputs, static shapes, target)."""
    loaded: dict[str, Any] = json.loads(artifact.with_name(IO_RECORD).read_text())
    return loaded


def write_io_record(directory: Path, io: dict[str, Any]) -> None:
    (directory / IO_RECORD).write_text(json.dumps(io, indent=1, sort_keys=True) + "\n")


__all__ = [
    "IO_RECORD",
    "Backend",
    "CompileRequest",
    "CompiledGraph",
    "Execution",
    "Feeds",
    "Outputs",
    "Predict",
    "Shipped",
    "read_io_record",
    "reported_meta",
    "write_io_record",
]
