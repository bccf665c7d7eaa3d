"""Importers: PyTorch factory, Hugging Face directory and installed package, ONNX file.

Each writes model.onnx + reference.npz, records exporter and opset, keeps dynamic axes, and checks
the export against the FP32 PyTorch outputs it computed first.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from compiler.engine import config
from compiler.engine.specs import ModelRecipe, TensorSpec
from compiler.errors import ConfigError, ModelError
from compiler.families.single_graph.data import generated_dataset, load_dataset
from compiler.families.single_graph.importing import import_model
from compiler.importers.huggingface import model_directory
from compiler.importers.torch_export import load_reference
from compiler.ort_session import run_batches, session

TEXT_INPUTS = tuple(TensorSpec(n, "int64", ("batch", "seq")) for n in ("input_ids", "attention_mask", "token_type_ids"))


def _recipe(tmp_path: Path, **fields: object) -> ModelRecipe:
    base = {
        "name": "m",
        "version": "1",
        "description": "",
        "path": tmp_path / "m.toml",
        "family": "generic",
        "source_kind": "torch",
        "source": "",
        "inputs": (),
        "outputs": (),
        "data": {},
        "metric": {"kind": "output_cosine"},
        "bench": {},
    }
    return ModelRecipe(**{**base, **fields})


def _dims(model: onnx.ModelProto, name: str) -> list[str | int]:
    value = next(v for v in model.graph.input if v.name == name)
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]


@pytest.fixture
def factory_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "tiny_factory.py").write_text(
        "import torch\n"
        "def build():\n"
        "    torch.manual_seed(0)\n"
        "    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.BatchNorm2d(4),\n"
        "                              torch.nn.Dropout(0.5), torch.nn.Flatten(), torch.nn.Linear(64, 3))\n"
        "    return net.train()  # the importer must switch it to eval mode\n"
        "def not_a_module():\n"
        "    return 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "tiny_factory"
    sys.modules.pop("tiny_factory", None)


def test_torch_factory_exports_in_eval_mode_with_dynamic_batch(tmp_path: Path, factory_module: str) -> None:
    inputs = (TensorSpec("image", "float32", ("batch", 1, 4, 4)),)
    recipe = _recipe(
        tmp_path,
        source=f"{factory_module}:build",
        inputs=inputs,
        outputs=(TensorSpec("logits", "float32", ("batch", 3)),),
        bench={"batch": 5},
    )
    dataset = generated_dataset(inputs, {"batch": 2})
    meta = import_model(recipe, dataset, [], tmp_path)
    assert meta["opset"] == 17 and "dynamo=False" in meta["exporter"]
    assert meta["export_check"]["min_cosine"] > 0.99999  # dropout off: eval mode before reference
    model = onnx.load(str(tmp_path / "model.onnx"))
    assert _dims(model, "image") == ["batch", 1, 4, 4]
    reference = load_reference(tmp_path / "reference.npz")
    actual = run_batches(session(model), dataset.verify)
    np.testing.assert_allclose(actual[0][0], reference[0][0], atol=1e-5)
    assert session(model).run(None, {"image": np.zeros((7, 1, 4, 4), np.float32)})[0].shape == (7, 3)


def test_torch_factory_errors(tmp_path: Path, factory_module: str) -> None:
    inputs = (TensorSpec("image", "float32", ("batch", 1, 4, 4)),)
    dataset = generated_dataset(inputs, {})
    with pytest.raises(ModelError, match="returned int, not a torch.nn.Module"):
        import_model(_recipe(tmp_path, source=f"{factory_module}:not_a_module", inputs=inputs), dataset, [], tmp_path)
    with pytest.raises(ConfigError, match="has no 'missing'"):
        import_model(_recipe(tmp_path, source=f"{factory_module}:missing", inputs=inputs), dataset, [], tmp_path)
    with pytest.raises(ConfigError, match="must look like 'package.module:function'"):
        import_model(_recipe(tmp_path, source="no_colon", inputs=inputs), dataset, [], tmp_path)


@pytest.fixture(scope="module")
def tiny_hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real transformers BERT directory (random weights, MiniLM's tokenizer files)."""
    import torch
    from transformers import BertConfig, BertModel

    directory = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(
        BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64)
    ).save_pretrained(directory)
    minilm = model_directory(config.load_recipe("minilm"))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(minilm / name, directory / name)
    return directory


def test_huggingface_directory(tmp_path: Path, tiny_hf_dir: Path) -> None:
    sentences = tmp_path / "s.txt"
    sentences.write_text("A first sentence.\nA second, longer sentence about builds.\nThird.\nFourth one!\n")
    recipe = _recipe(
        tmp_path,
        family="transformer",
        source_kind="huggingface_dir",
        source=str(tiny_hf_dir),
        inputs=TEXT_INPUTS,
        outputs=(TensorSpec("last_hidden_state", "float32", ("batch", "seq", 32)),),
        data={"representative": str(sentences), "max_length": 16},
        bench={"batch": 1, "seq": 16},
    )
    dataset = load_dataset(recipe, tokenizer_dir=tiny_hf_dir)
    assert len(dataset.calibration) == 2 and len(dataset.verify) == 2
    assert dataset.bench["input_ids"].shape == (1, 16)
    meta = import_model(recipe, dataset, [], tmp_path)
    assert meta["transformer_shape"] == {"num_heads": 2, "hidden_size": 32}
    assert meta["export_check"]["min_cosine"] > 0.9999
    model = onnx.load(str(tmp_path / "model.onnx"))
    assert _dims(model, "input_ids") == ["batch", "seq"]
    # sentences of different lengths run through the same graph: the sequence axis is dynamic
    assert {b["input_ids"].shape[1] for b in dataset.verify} != {16}


def test_huggingface_directory_without_config(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, source_kind="huggingface_dir", source=str(tmp_path), inputs=TEXT_INPUTS)
    with pytest.raises(ConfigError, match="is not a Hugging Face model directory"):
        import_model(recipe, generated_dataset(TEXT_INPUTS, {}), [], tmp_path)


def test_huggingface_package_not_installed(tmp_path: Path) -> None:
    recipe = _recipe(tmp_path, source_kind="huggingface_package", source="no_such_model_package", inputs=TEXT_INPUTS)
    with pytest.raises(ConfigError, match="package 'no_such_model_package' is not installed"):
        import_model(recipe, generated_dataset(TEXT_INPUTS, {}), [], tmp_path)


def test_installed_minilm_package_resolves_offline() -> None:
    directory = model_directory(config.load_recipe("minilm"))
    assert (directory / "config.json").is_file() and (directory / "model.safetensors").stat().st_size > 80e6


def test_onnx_file_reference_is_ort_fp32(tmp_path: Path) -> None:
    from tests.onnx_helpers import tiny_cnn

    model, _ = tiny_cnn()
    path = tmp_path / "cnn.onnx"
    path.write_bytes(model.SerializeToString())
    inputs = (TensorSpec("image", "float32", ("batch", 1, 8, 8)),)
    recipe = _recipe(tmp_path, source_kind="onnx", source=str(path), inputs=inputs)
    out = tmp_path / "out"
    out.mkdir()
    dataset = generated_dataset(inputs, {})
    meta = import_model(recipe, dataset, [], out)
    assert meta["opset"] == 17 and meta["export_check"] is None
    np.testing.assert_array_equal(
        load_reference(out / "reference.npz")[0][0], run_batches(session(model), dataset.verify)[0][0]
    )
