"""The Olive peer's cheap contract: availability is a plain bool, bad input is a one-line UserError.

A real `olive auto-opt` run takes tens of seconds and is a benchmark (`make bench`), not a test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from compiler.bench.olive_peer import auto_opt_int8, olive_available
from compiler.errors import UserError


def test_olive_available_is_a_bool() -> None:
    assert isinstance(olive_available(), bool)


@pytest.mark.parametrize("is_onnx", [True, False])
def test_missing_source_is_a_one_line_user_error(tmp_path: Path, is_onnx: bool) -> None:
    missing = tmp_path / ("missing.onnx" if is_onnx else "missing-model-dir")
    with pytest.raises(UserError) as caught:
        auto_opt_int8(missing, tmp_path / "work", is_onnx=is_onnx)
    message = str(caught.value)
    assert "\n" not in message
    assert str(missing) in message
    assert not (tmp_path / "work").exists(), "nothing runs before the input is checked"
