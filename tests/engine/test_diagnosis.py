"""What a failed fidelity check saw: degenerate outputs are named, and not blamed on the exporter."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from click.testing import CliRunner
from onnx import numpy_helper

from compiler.cli.main import main
from compiler.engine.diagnosis import degenerate_outputs, export_mismatch_message


def test_near_zero_outputs_are_called_degenerate() -> None:
    outputs = [np.full((4, 10), 3.2e-10, np.float32), np.zeros((4,), np.int64)]
    assert degenerate_outputs(outputs) == (
        "outputs are all within 1e-09 of zero (largest |value| 3.20e-10): "
        "the weights look degenerate (constant, zeroed or untrained)"
    )
    assert degenerate_outputs([np.zeros((2, 3), np.float32)]).startswith("outputs are all exactly zero")


def test_outputs_that_ignore_the_input_are_called_degenerate() -> None:
    same = np.tile(np.array([[0.3, -1.2, 4.0]], np.float32), (8, 1))
    assert degenerate_outputs([same]) == (
        "outputs are identical for every sample of a 8-sample batch: "
        "the weights look degenerate (constant, zeroed or untrained)"
    )


def test_real_outputs_are_not_degenerate() -> None:
    rng = np.random.default_rng(0)
    assert degenerate_outputs([rng.standard_normal((8, 10)).astype(np.float32)]) is None
    assert degenerate_outputs([np.array([[0.5, 1.5]], np.float32)]) is None  # one sample: nothing to compare
    assert degenerate_outputs([np.arange(6)]) is None  # integer outputs are not judged


def test_export_mismatch_on_degenerate_outputs_blames_the_model_not_the_exporter() -> None:
    tiny = [np.full((4, 10), 1e-9, np.float32)]
    message = export_mismatch_message("m", 0.12345, 0.9999, tiny)
    assert message.startswith("m: exported ONNX disagrees with PyTorch (cosine 0.12345 < 0.9999), but PyTorch's own")
    assert "outputs are all within 1e-09 of zero" in message and "not an export error" in message
    assert "mis-translate" not in message
    real = [np.random.default_rng(1).standard_normal((4, 10))]
    assert "the exporter may mis-translate an op of this model" in export_mismatch_message("m", 0.5, 0.9999, real)


def test_a_build_of_a_degenerate_onnx_file_says_so_at_import(tmp_path: Path) -> None:
    """Weights scaled by 1e-8: outputs ~1e-9, so the imported model's own score is rounding noise.
    The build must say that, at import, and not advise changing a pass's options."""
    from tests.onnx_helpers import tiny_cnn

    model, _ = tiny_cnn()
    for tensor in model.graph.initializer:
        values = numpy_helper.to_array(tensor)
        if values.dtype.kind == "f":
            tensor.CopyFrom(numpy_helper.from_array((values * 1e-8).astype(values.dtype), tensor.name))
    path = tmp_path / "degenerate.onnx"
    onnx.save(model, str(path))
    artifacts = tmp_path / "artifacts"
    result = CliRunner().invoke(
        main, ["build", "--onnx", str(path), "-t", "desktop-fp32", "--artifacts", str(artifacts), "--no-package"]
    )
    assert result.exit_code == 3, result.output
    assert "over budget already at import, before any pass ran" in result.output
    assert "The imported model's outputs are all within 1e-08 of zero" in result.output
    assert "after pass 'import'" not in result.output and "that pass's options" not in result.output
