"""Data for bare ONNX files: index inputs drawn below their tables, user arrays from an .npz."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from compiler.errors import DataError
from compiler.families.single_graph.data import load_dataset
from compiler.families.single_graph.index_ranges import DEFAULT_BOUND, index_bounds
from compiler.families.single_graph.onnx_recipe import recipe_for_onnx
from tests.cli.test_onnx_files import embedding_model, save


def test_an_index_input_is_bounded_by_the_table_it_gathers_from() -> None:
    assert index_bounds(embedding_model(rows=4)) == {"ids": 4}


def test_generated_ids_stay_below_the_table(tmp_path: Path) -> None:
    recipe = recipe_for_onnx(save(embedding_model(rows=4), tmp_path / "embed.onnx"))
    dataset = load_dataset(recipe)
    assert DEFAULT_BOUND > 4
    assert max(int(feeds["ids"].max()) for feeds in dataset.verify + dataset.calibration) < 4


def test_npz_rows_become_calibration_and_verification_batches(tmp_path: Path) -> None:
    data = tmp_path / "ids.npz"
    np.savez(data, ids=np.arange(6 * 8).reshape(6, 8) % 4)
    recipe = recipe_for_onnx(save(embedding_model(), tmp_path / "embed.onnx"), data=data)
    dataset = load_dataset(recipe)
    assert len(dataset.calibration) == 3 and len(dataset.verify) == 3
    assert dataset.verify[0]["ids"].shape == (1, 8) and dataset.verify[0]["ids"].dtype == np.int64


def test_npz_with_the_wrong_shape_is_a_data_error(tmp_path: Path) -> None:
    data = tmp_path / "ids.npz"
    np.savez(data, ids=np.zeros((6, 9), np.int64))
    recipe = recipe_for_onnx(save(embedding_model(), tmp_path / "embed.onnx"), data=data)
    with pytest.raises(DataError, match=r"array 'ids' has shape \[6, 9\]; the input takes \['batch', 8\]"):
        load_dataset(recipe)
