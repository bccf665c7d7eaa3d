"""Reproducers: a stored pass input + options replays that one pass."""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.engine import reproducer
from compiler.errors import ModelError
from tests.onnx_helpers import tiny_cnn


def test_write_then_replay_runs_the_same_pass(tmp_path: Path) -> None:
    model, _ = tiny_cnn()
    source = tmp_path / "in.onnx"
    source.write_bytes(model.SerializeToString())
    where = reproducer.write(
        tmp_path, "quantize-static-int8", {"per_channel": True}, source, "convolution", {}, ["fold-constants"]
    )
    assert where.parent == tmp_path / "repro" and (where / "input.onnx").read_bytes() == source.read_bytes()
    stats = reproducer.replay(where)
    assert stats["quantized_nodes"]["Conv"] == 2


def test_replay_of_a_non_reproducer_is_a_user_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="not a reproducer"):
        reproducer.replay(tmp_path)
