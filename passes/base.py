"""Pass infrastructure: what a pass is, what it may know, and how the runner checks it.

A graph pass turns an ONNX model into an ONNX model. It is a small class with a typed, frozen
`Config` dataclass (its options, as written in a target's `passes = [...]` list) and one method,
`run(model, ctx) -> PassResult`. Contract, checked by `apply_pass`:

- it returns a `PassResult` and never mutates its input (the runner compares the input's digest
  before and after): breaking either is a `PassContractError`, a bug in the pass, not bad input;
- its output passes `onnx.checker`, else a `PassError` ("output is not a valid ONNX model");
- a failure is reported as "error in pass 'X' after [...]", with the node or op it could not handle.

Two passes need the PyTorch model rather than the ONNX graph (structured channel pruning, which
rebuilds layers and fine-tunes); they are `TorchPass`es and run before export.

Ordering constraints are declared (`must_precede`), and checked by `check_order`, not implied by
list position alone.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import inspect
import types
import typing
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import onnx

from compiler.errors import ConfigError, PassError, did_you_mean

Feeds = dict[str, np.ndarray]


@dataclass(frozen=True)
class Fidelity:
    """How close a model's outputs are to the FP32 reference, under the recipe's metric."""

    metric: str  # e.g. "embedding_cosine", "top1_accuracy", "output_cosine"
    value: float  # the headline figure, always higher-is-better (mean cosine, top-1 accuracy, ...)
    within_budget: bool
    summary: str  # one human line: "mean cosine 0.9921 (min 0.9803); budget mean >= 0.99, each >= 0.95"
    detail: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class PassResult:
    """A pass's output model and what it did (JSON-serialisable scalars, lists or dicts)."""

    model: onnx.ModelProto
    stats: dict[str, Any] = field(default_factory=dict)


def nothing_to_do(model: onnx.ModelProto, reason: str) -> PassResult:
    """The result of a pass that finds nothing to change: a copy of `model`, and why (stats
    "nothing_to_do", which the build prints and reports; a target whose promise then goes unmet is
    warned about by the precision check, not refused here)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return PassResult(copy, {"nothing_to_do": reason})


@dataclass
class PassContext:
    """What a pass may know about the build besides the model itself.

    `calibration()` returns representative input batches (raises DataError when the recipe has
    none); `evaluate(model)` scores a candidate against the FP32 reference with the recipe's
    metric and budget (used by sensitivity searches). `fingerprint` digests everything here that
    can change a pass's output, so it is part of every pass's cache key.
    """

    workdir: Path
    # What the graph is built of, for passes whose "auto" choice depends on it: "attention" (a
    # transformer: keep attention intact for ORT's fusions), "convolution", or "other".
    architecture: str
    calibration: Callable[[], list[Feeds]]
    evaluate: Callable[[onnx.ModelProto], Fidelity]
    fingerprint: str
    transformer_shape: Mapping[str, int] = field(default_factory=dict)  # num_heads, hidden_size
    # Axis names that must stay symbolic (ModelRecipe.declared_axes); None: every symbolic name does.
    dynamic_axes: frozenset[str] | None = None


@dataclass
class TorchPassContext:
    """What a PyTorch-level pass may use: example inputs, and training data when the recipe has it."""

    workdir: Path
    example_inputs: tuple[Any, ...]
    train_data: tuple[np.ndarray, np.ndarray] | None  # (x, y) for a short fine-tune, or None
    eval_data: tuple[np.ndarray, np.ndarray] | None
    fingerprint: str


class BasePass(ABC):
    """Shared declarations of graph and PyTorch passes."""

    name: ClassVar[str]
    Config: ClassVar[type]  # a frozen dataclass; its fields are the pass's options
    # Distributions whose versions can change this pass's output (part of its cache key).
    tools: ClassVar[tuple[str, ...]] = ("onnx",)
    # Passes that, when both are in a list, must come after this one.
    must_precede: ClassVar[tuple[str, ...]] = ()
    # Passes that cannot be in the same list as this one.
    conflicts_with: ClassVar[tuple[str, ...]] = ()
    # What the pass needs from the context: "calibration", "evaluate", "train_data".
    needs: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, config: Any | None = None) -> None:
        self.config = config if config is not None else self.Config()

    @classmethod
    def summary(cls) -> str:
        """The first line of the pass's docstring."""
        return (inspect.getdoc(cls) or "").splitlines()[0]

    @classmethod
    def fingerprint(cls) -> str:
        """sha256 of the code this pass runs: its module and every first-party module it imports."""
        from compiler.engine.fingerprint import code_digest

        return code_digest([cls.__module__])

    @classmethod
    def tool_versions(cls) -> dict[str, str]:
        return {tool: _version(tool) for tool in cls.tools}

    def options(self) -> dict[str, Any]:
        """The resolved options (defaults filled in), as stored in reports and cache keys."""
        return dataclasses.asdict(self.config)


class GraphPass(BasePass):
    """ONNX -> ONNX."""

    @abstractmethod
    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        """Return a new model; never mutate `model`."""


class TorchPass(BasePass):
    """torch.nn.Module -> torch.nn.Module, before export (for passes that rebuild layers)."""

    tools: ClassVar[tuple[str, ...]] = ("torch",)

    @abstractmethod
    def run(self, module: Any, ctx: TorchPassContext) -> tuple[Any, dict[str, Any]]:
        """Return a new module and stats; never mutate `module`."""


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def model_digest(model: onnx.ModelProto) -> str:
    """sha256 of the model's bytes; over protobuf's 2 GB limit (where it cannot be serialised
    whole), of its parts in order: opsets, then each node, initializer, input, output, value_info."""
    from compiler import onnx_io

    if onnx_io.tensor_bytes(model) < onnx_io.EXTERNAL_ABOVE:
        return hashlib.sha256(model.SerializeToString(deterministic=True)).hexdigest()
    digest = hashlib.sha256()
    graph = model.graph
    for part in (*model.opset_import, *graph.node, *graph.initializer, *graph.input, *graph.output, *graph.value_info):
        digest.update(part.SerializeToString(deterministic=True))
    return digest.hexdigest()


class PassContractError(Exception):
    """A pass broke the pass contract (mutated its input, returned something else than a PassResult
    with a model): a bug in that pass, so it keeps its traceback."""


def apply_pass(graph_pass: GraphPass, model: onnx.ModelProto, ctx: PassContext, done: Sequence[str] = ()) -> PassResult:
    """Run one graph pass with the contract checks; failures name the pass and what ran before."""
    before = model_digest(model)
    try:
        result = graph_pass.run(model, ctx)
    except PassError as error:
        raise PassError(f"error in pass '{graph_pass.name}' after {list(done)}: {error}") from error
    if model_digest(model) != before:
        raise PassContractError(
            f"pass '{graph_pass.name}' (after {list(done)}) mutated its input model; "
            "a pass must copy what it changes (onnx.ModelProto.CopyFrom)"
        )
    if not isinstance(result, PassResult) or not isinstance(result.model, onnx.ModelProto):
        raise PassContractError(
            f"pass '{graph_pass.name}' (after {list(done)}) returned {type(result).__name__}, "
            "not a PassResult holding an onnx.ModelProto"
        )
    from compiler import onnx_io

    if onnx_io.tensor_bytes(result.model) >= onnx_io.EXTERNAL_ABOVE:
        return result  # too large to check in memory: the stage checks the file it writes
    try:
        onnx.checker.check_model(result.model, full_check=False)
    except onnx.checker.ValidationError as error:
        first = str(error).strip().splitlines()[0]
        raise PassError(
            f"error in pass '{graph_pass.name}' after {list(done)}: output is not a valid ONNX model: {first}"
        ) from error
    return result


def check_order(names: Sequence[str], catalogue: Mapping[str, type[BasePass]], where: str) -> None:
    """Enforce declared constraints: torch passes first, `must_precede`, `conflicts_with`."""
    seen_graph_pass = False
    for position, name in enumerate(names):
        pass_class = catalogue[name]
        if issubclass(pass_class, TorchPass):
            if seen_graph_pass:
                raise ConfigError(
                    f"{where}: pass '{name}' works on the PyTorch model and must come "
                    "before every ONNX pass in the list"
                )
        else:
            seen_graph_pass = True
        for later in pass_class.must_precede:
            if later in names[:position]:
                raise ConfigError(f"{where}: pass '{name}' must come before '{later}'; reorder the list")
        for other in pass_class.conflicts_with:
            if other in names:
                raise ConfigError(f"{where}: passes '{name}' and '{other}' cannot be combined; keep one")
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"{where}: pass {duplicates[0]!r} is listed twice")


def config_from_options(config_class: type, options: Mapping[str, Any], where: str) -> Any:
    """Build a pass's Config from TOML options, with errors naming the field and allowed values."""
    hints = typing.get_type_hints(config_class)
    fields = {f.name: f for f in dataclasses.fields(config_class)}
    for key in options:
        if key not in fields:
            raise ConfigError(f"{where}: unknown option '{key}'; {did_you_mean(key, fields)}")
    values = {key: _coerce(value, hints[key], f"{where}: option '{key}'") for key, value in options.items()}
    return config_class(**values)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if origin is Literal:
        allowed = typing.get_args(hint)
        if value not in allowed:
            raise ConfigError(f"{where} is {value!r}; allowed: {', '.join(map(repr, allowed))}")
        return value
    if origin in (types.UnionType, typing.Union):
        arms = typing.get_args(hint)
        if value is None and type(None) in arms:
            return None
        errors = []
        for arm in arms:
            if arm is type(None):
                continue
            try:
                return _coerce(value, arm, where)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if origin in (tuple, list):
        (item_hint, *_) = typing.get_args(hint) or (Any,)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where} must be a list, got {value!r}")
        return tuple(_coerce(item, item_hint, where) for item in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    return value
