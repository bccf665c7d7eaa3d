"""The pass contract, checked by the runner: passes that misbehave on purpose, and what they get."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import onnx
import pytest

from compiler.errors import ConfigError, PassError
from passes.base import GraphPass, PassContext, PassContractError, PassResult, apply_pass, check_order
from passes.catalogue import CATALOGUE, validate_pass_list
from passes.spec import PassSpec
from tests.onnx_helpers import make_context, tiny_cnn


@dataclass(frozen=True)
class _NoOptions:
    pass


class MutatesInput(GraphPass):
    """Renames the input graph in place, then returns it."""

    name: ClassVar[str] = "mutates-input"
    Config: ClassVar[type] = _NoOptions

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        model.graph.name = "changed in place"
        return PassResult(model)


class InvalidGraph(GraphPass):
    """Returns a copy whose first node reads a tensor nothing produces."""

    name: ClassVar[str] = "invalid-graph"
    Config: ClassVar[type] = _NoOptions

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        broken = onnx.ModelProto()
        broken.CopyFrom(model)
        broken.graph.node[0].input[0] = "no_such_tensor"
        return PassResult(broken)


class NotAResult(GraphPass):
    """Returns the bare model instead of a PassResult."""

    name: ClassVar[str] = "not-a-result"
    Config: ClassVar[type] = _NoOptions

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> Any:
        return model


class Refuses(GraphPass):
    """Cannot handle the model and says why."""

    name: ClassVar[str] = "refuses"
    Config: ClassVar[type] = _NoOptions

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        raise PassError("node 'conv1' (Conv) has a dynamic weight")


class MustBeFirst(GraphPass):
    """Declares that 'refuses' may only come after it."""

    name: ClassVar[str] = "must-be-first"
    Config: ClassVar[type] = _NoOptions
    must_precede: ClassVar[tuple[str, ...]] = ("refuses",)

    def run(self, model: onnx.ModelProto, ctx: PassContext) -> PassResult:
        return PassResult(model)


@pytest.fixture
def model() -> onnx.ModelProto:
    return tiny_cnn()[0]


def test_a_pass_that_mutates_its_input_breaks_the_contract(model: onnx.ModelProto, tmp_path: Path) -> None:
    with pytest.raises(
        PassContractError, match=r"pass 'mutates-input' \(after \['fold-constants'\]\) mutated its input"
    ):
        apply_pass(MutatesInput(), model, make_context(model, [], tmp_path, "other"), ["fold-constants"])


def test_a_pass_that_returns_an_invalid_graph_is_a_pass_error(model: onnx.ModelProto, tmp_path: Path) -> None:
    with pytest.raises(
        PassError, match=r"error in pass 'invalid-graph' after \['fuse'\]: output is not a valid ONNX model: "
    ):
        apply_pass(InvalidGraph(), model, make_context(model, [], tmp_path, "other"), ["fuse"])


def test_a_pass_that_returns_something_else_breaks_the_contract(model: onnx.ModelProto, tmp_path: Path) -> None:
    with pytest.raises(PassContractError, match=r"returned ModelProto, not a PassResult"):
        apply_pass(NotAResult(), model, make_context(model, [], tmp_path, "other"))


def test_a_refusal_names_the_pass_what_ran_before_and_the_node(model: onnx.ModelProto, tmp_path: Path) -> None:
    with pytest.raises(PassError, match=r"^error in pass 'refuses' after \['a', 'b'\]: node 'conv1' \(Conv\)"):
        apply_pass(Refuses(), model, make_context(model, [], tmp_path, "other"), ["a", "b"])


def test_an_ordering_violation_is_refused_before_anything_runs() -> None:
    catalogue = {p.name: p for p in (MustBeFirst, Refuses)}
    check_order(["must-be-first", "refuses"], catalogue, "t.toml: passes")
    with pytest.raises(
        ConfigError, match=r"^t\.toml: passes: pass 'must-be-first' must come before 'refuses'; reorder"
    ):
        check_order(["refuses", "must-be-first"], catalogue, "t.toml: passes")


def test_the_real_catalogue_checks_order_conflicts_and_duplicates() -> None:
    where = "x.toml: passes"
    with pytest.raises(ConfigError, match=r"pass 'fold-constants' must come before 'quantize-dynamic-int8'"):
        validate_pass_list([PassSpec("quantize-dynamic-int8", {}), PassSpec("fold-constants", {})], where)
    conflicting = next((n, c) for n, p in CATALOGUE.items() for c in p.conflicts_with)
    with pytest.raises(ConfigError, match=r"cannot be combined; keep one"):
        validate_pass_list([PassSpec(conflicting[0], {}), PassSpec(conflicting[1], {})], where)
    with pytest.raises(ConfigError, match=r"pass 'fuse' is listed twice"):
        validate_pass_list([PassSpec("fuse", {}), PassSpec("fuse", {})], where)
