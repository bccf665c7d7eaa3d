"""Every folding pass alone over ONNX's operator-test models keeps ONNX Runtime's outputs.

Each model (pytorch-converted/, pytorch-operator/, light/) is normalized as the import does, then
fold-constants and fuse run on it alone; outputs on the model's own test inputs (generated ones
where it has none) must agree within 1e-4 of the output's scale, the passes' documented guarantee
("the same function up to float rounding").
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler.families.single_graph.data import generated_dataset
from compiler.families.single_graph.family import family_for_onnx
from compiler.families.single_graph.index_ranges import index_bounds
from compiler.importers.onnx_file import signature
from compiler.importers.onnx_normalize import normalize
from passes.base import apply_pass
from passes.fold_constants import FoldConstants
from passes.fuse import Fuse
from tests.conformance.zoo import CONVERTED, LIGHT, OPERATORS, name_of, reference_inputs
from tests.onnx_helpers import make_context, run_ort

TOLERANCE = 1e-4
HEAVY = ("light_vgg19", "light_zfnet512", "light_bvlc_alexnet")  # 60-140 M weights each: tens of seconds


def case(path: Path) -> object:
    """Operator files are small (the quick loop); zoo CNNs are slow, the three largest in `make conformance`."""
    if path not in LIGHT:
        return pytest.param(path, id=name_of(path))
    marks = [pytest.mark.slow, *([pytest.mark.conformance] if path.stem in HEAVY else [])]
    return pytest.param(path, marks=marks, id=name_of(path))


MODELS = [case(path) for path in (*CONVERTED, *OPERATORS, *LIGHT)]


def feeds_for(path: Path, model: onnx.ModelProto) -> dict[str, np.ndarray]:
    given = reference_inputs(path)
    if given is not None:
        return given
    return generated_dataset(signature(model, str(path)), {}, batches=1, bounds=index_bounds(model)).verify[0]


@pytest.mark.parametrize("path", MODELS)
@pytest.mark.parametrize("graph_pass", [FoldConstants(), Fuse()], ids=lambda p: p.name)
def test_pass_alone_keeps_outputs(path: Path, graph_pass: object, tmp_path: Path) -> None:
    model, _ = normalize(onnx.load(str(path)), str(path))
    feeds = feeds_for(path, model)
    family = family_for_onnx({node.op_type for node in model.graph.node})
    architecture = "convolution" if family == "cnn" else "other"
    context = make_context(model, [feeds], tmp_path, architecture)
    result = apply_pass(graph_pass, model, context)  # type: ignore[arg-type]
    for expected, actual in zip(run_ort(model, feeds), run_ort(result.model, feeds), strict=True):
        assert expected.shape == actual.shape
        finite = np.isfinite(expected)  # operator tests feed values whose results overflow or are NaN
        assert np.array_equal(expected[~finite], actual[~finite], equal_nan=True)
        expected, actual = expected[finite].astype(np.float64), actual[finite].astype(np.float64)
        scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
        assert np.abs(expected - actual).max(initial=0.0) <= TOLERANCE * scale
